//! The streaming output parser: generated text (special tokens included) in,
//! OpenAI-shaped deltas out.
//!
//! # Contract
//! - Pure: text in, [`Delta`]s out, no I/O. One [`OutputParser`] per request.
//! - Split-invariant: however the text is cut into [`OutputParser::push`]
//!   calls, the merged deltas equal [`parse_complete`] of the whole text.
//!   Only text that could still be the start of a marker is held back.
//! - Markers and control tokens never reach content or reasoning; the
//!   end-of-generation tokens (`<|return|>`, `<|call|>`, `<|im_end|>`, …)
//!   may be present at the end or not.
//! - Tool calls are parsed only when [`ParseOptions::tools`] is set (their
//!   syntax is content otherwise); reasoning always is. A tool-call block is
//!   emitted whole when it completes, as one [`Delta::ToolCall`] per call
//!   (name and the arguments' complete JSON object text). A block that is
//!   malformed, or unterminated and unparseable at the end, is content.
//! - Reasoning is trimmed of surrounding whitespace, and content of leading
//!   whitespace at the start and after reasoning or a tool call.
//!
//! # Layout
//! - `scan`: split-invariant marker search, trimmed emission.
//! - `engine`: the marker-driven parser of most families.
//! - `harmony`: the message-header parsers (gpt-oss harmony, Functionary v3.2).
//! - `calls`: tool-call block bodies → calls, per syntax.

mod calls;
mod engine;
mod harmony;
mod scan;

use std::collections::BTreeMap;

use crate::format::{ChatFormat, ToolSyntax};

/// What the parser knows about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The prompt ended inside a reasoning block: output starts as reasoning.
    pub reasoning_open: bool,
    /// Tools were offered: tool-call syntax is parsed (otherwise it is content).
    pub tools: bool,
    /// The output was constrained to a tool call (`tool_choice` required or named).
    pub forced: Option<Forced>,
    /// The JSON schema of each offered function's parameters, by name: XML
    /// syntaxes (Qwen3-Coder, GLM, MiniMax) type their values by it (a value
    /// of an unknown parameter is a string).
    pub tool_schemas: BTreeMap<String, serde_json::Value>,
}

/// A tool call forced by a grammar, whatever the model's own syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// The output is a JSON array of `{"name": .., "arguments": {..}}` (required).
    Calls,
    /// The output is the arguments object of this function (named).
    Function(String),
}

/// A piece of the parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Content(String),
    Reasoning(String),
    /// Part of tool call `index` (0, 1, … in order): its name comes first (in
    /// the first delta of that index), then argument text fragments whose
    /// concatenation is the arguments' JSON text.
    ToolCall {
        index: u32,
        name: Option<String>,
        arguments: String,
    },
}

/// Parses one request's output as it streams.
#[derive(Debug)]
pub struct OutputParser {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Markers(engine::Engine),
    Messages(harmony::Messages),
}

impl OutputParser {
    pub fn new(format: ChatFormat, options: ParseOptions) -> Self {
        let dialect = match format.tools {
            // A forced call is raw JSON under a grammar, whatever the family.
            _ if options.forced.is_some() => None,
            ToolSyntax::Harmony => Some(harmony::Dialect::Harmony),
            ToolSyntax::FunctionaryV32 => Some(harmony::Dialect::FunctionaryV32),
            _ => None,
        };
        let inner = match dialect {
            Some(d) => Inner::Messages(harmony::Messages::new(d, options.tools)),
            None => Inner::Markers(engine::Engine::new(format, options)),
        };
        Self { inner }
    }

    /// Feeds the next piece of generated text; appends what it completes to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Delta>) {
        match &mut self.inner {
            Inner::Markers(e) => e.push(text, out),
            Inner::Messages(m) => m.push(text, out),
        }
    }

    /// The output ended: flushes whatever is held back.
    pub fn finish(&mut self, out: &mut Vec<Delta>) {
        match &mut self.inner {
            Inner::Markers(e) => e.finish(out),
            Inner::Messages(m) => m.finish(out),
        }
    }
}

/// One tool call of a whole parsed output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedToolCall {
    pub name: String,
    pub arguments: String,
}

/// A whole output, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOutput {
    pub content: String,
    pub reasoning: String,
    pub tool_calls: Vec<ParsedToolCall>,
}

impl ParsedOutput {
    /// Merges deltas (in order) into a whole output.
    pub fn apply(&mut self, delta: Delta) {
        match delta {
            Delta::Content(t) => self.content.push_str(&t),
            Delta::Reasoning(t) => self.reasoning.push_str(&t),
            Delta::ToolCall {
                index,
                name,
                arguments,
            } => {
                let i = index as usize;
                if self.tool_calls.len() <= i {
                    self.tool_calls.resize_with(i + 1, ParsedToolCall::default);
                }
                if let Some(n) = name {
                    self.tool_calls[i].name = n;
                }
                self.tool_calls[i].arguments.push_str(&arguments);
            }
        }
    }
}

/// Parses a whole output at once (the same as streaming it in one piece).
pub fn parse_complete(format: ChatFormat, options: ParseOptions, text: &str) -> ParsedOutput {
    let mut parser = OutputParser::new(format, options);
    let mut deltas = Vec::new();
    parser.push(text, &mut deltas);
    parser.finish(&mut deltas);
    let mut out = ParsedOutput::default();
    for d in deltas {
        out.apply(d);
    }
    out
}
