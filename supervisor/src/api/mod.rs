//! The OpenAI-compatible HTTP API.
//!
//! - [`types`]: request bodies and their validation into protocol types.
//! - [`chat`]: tools, `tool_choice`, `response_format`: constraints and parser options.
//! - [`output`]: generated text → OpenAI message, deltas, tool calls, logprobs.
//! - [`response`]: response bodies.
//! - [`sse`]: streaming responses.
//! - [`handlers`]: the endpoints.
//! - [`error`]: every error answer, rendered in one place.

pub mod admin;
pub mod chat;
pub mod error;
pub mod handlers;
pub mod output;
pub mod response;
pub mod sse;
pub mod types;

pub use error::ApiError;
