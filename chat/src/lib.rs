//! Everything llm-node knows about chat formats, in pure Rust so that both the
//! worker (which renders prompts) and the supervisor (which parses output)
//! link it without linking llama.cpp.
//!
//! # Layout
//! - [`template`]: Hugging Face chat templates rendered with minijinja, with
//!   the functions and Python methods real templates use, tools and tool calls.
//! - [`format`]: [`format::ChatFormat`], the family of a model's output syntax,
//!   detected from its template.
//! - [`parse`]: the streaming output parser: raw generated text (special
//!   tokens included) → content, reasoning and tool-call deltas in OpenAI's shape.
//! - [`tools`]: JSON schemas and triggers that constrain tool calls
//!   (`tool_choice` required / named / auto).

pub mod format;
pub mod parse;
pub mod template;
pub mod tools;
