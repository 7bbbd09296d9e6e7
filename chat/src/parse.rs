//! The streaming output parser: generated text (special tokens included) in,
//! OpenAI-shaped deltas out.

use crate::format::ChatFormat;

/// What the parser knows about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// The prompt ended inside a reasoning block: output starts as reasoning.
    pub reasoning_open: bool,
    /// Tools were offered: tool-call syntax is parsed (otherwise it is content).
    pub tools: bool,
    /// The output was constrained to a tool call (`tool_choice` required or named).
    pub forced: Option<Forced>,
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
pub struct OutputParser {
    format: ChatFormat,
    options: ParseOptions,
}

impl OutputParser {
    pub fn new(format: ChatFormat, options: ParseOptions) -> Self {
        Self { format, options }
    }

    /// Feeds the next piece of generated text; appends what it completes to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<Delta>) {
        let _ = (&self.format, &self.options);
        if !text.is_empty() {
            out.push(Delta::Content(text.to_owned()));
        }
    }

    /// The output ended: flushes whatever is held back.
    pub fn finish(&mut self, out: &mut Vec<Delta>) {
        let _ = out;
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
