//! Generated text → what the client reads: the chat output parser run over
//! the stream (content, `reasoning_content`, `tool_calls` with their ids),
//! the finish reason, and logprobs in OpenAI's chat and legacy shapes.
//!
//! One [`Assembler`] per choice serves both the streamed and the whole
//! answer, so the two cannot disagree.

use llm_node_chat::format::ChatFormat;
use llm_node_chat::parse::{Delta, OutputParser, ParseOptions};
use llm_node_protocol::TokenLogprob;
use serde_json::{json, Value};

/// What one piece of output becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Content(String),
    Reasoning(String),
    /// A tool call's opening (`id`, `name`) or an argument fragment.
    ToolCall {
        index: u32,
        /// Present in the first part of each call.
        head: Option<(String, String)>,
        arguments: String,
    },
}

/// Turns one choice's generated text into [`Part`]s.
pub struct Assembler {
    /// `None` for text completions: everything is content.
    parser: Option<OutputParser>,
    format: ChatFormat,
    options: ParseOptions,
    /// A tool call was produced (`finish_reason: "tool_calls"`).
    called_tools: bool,
    /// Calls past this many are dropped (`parallel_tool_calls: false` → 1).
    max_calls: u32,
    deltas: Vec<Delta>,
}

impl Assembler {
    /// An assembler for a chat whose model writes `format`.
    pub fn chat(format: ChatFormat, options: ParseOptions) -> Self {
        Self {
            parser: None,
            format,
            options,
            called_tools: false,
            max_calls: u32::MAX,
            deltas: Vec::new(),
        }
        .with_parser()
    }

    /// An assembler for a text completion.
    pub fn text() -> Self {
        Self {
            parser: None,
            format: ChatFormat::GENERIC,
            options: ParseOptions::default(),
            called_tools: false,
            max_calls: u32::MAX,
            deltas: Vec::new(),
        }
    }

    /// Keeps at most `n` tool calls (`parallel_tool_calls: false` → 1).
    pub fn max_calls(mut self, n: u32) -> Self {
        self.max_calls = n;
        self
    }

    fn with_parser(mut self) -> Self {
        self.parser = Some(OutputParser::new(self.format, self.options.clone()));
        self
    }

    /// The prompt ended inside a reasoning block (known at `Started`). A
    /// grammar-forced output (`tool_choice` required / named) is JSON from its
    /// first token, so it never starts as reasoning.
    pub fn started(&mut self, reasoning_open: bool) {
        let reasoning_open = reasoning_open && self.options.forced.is_none();
        if self.parser.is_some() && reasoning_open != self.options.reasoning_open {
            self.options.reasoning_open = reasoning_open;
            self.parser = Some(OutputParser::new(self.format, self.options.clone()));
        }
    }

    /// Whether any tool call was produced.
    pub fn called_tools(&self) -> bool {
        self.called_tools
    }

    /// The parts of the next generated piece (taken by value: without a
    /// parser the piece becomes the part as it is, no copy per token).
    pub fn push(&mut self, text: String, out: &mut Vec<Part>) {
        match &mut self.parser {
            None if text.is_empty() => {}
            None => out.push(Part::Content(text)),
            Some(parser) => {
                parser.push(&text, &mut self.deltas);
                self.drain(out);
            }
        }
    }

    /// The parts held back until the end.
    pub fn finish(&mut self, out: &mut Vec<Part>) {
        if let Some(parser) = &mut self.parser {
            parser.finish(&mut self.deltas);
            self.drain(out);
        }
    }

    fn drain(&mut self, out: &mut Vec<Part>) {
        let max_calls = self.max_calls;
        // Taken out while the ids are recorded, put back to keep its allocation.
        let mut deltas = std::mem::take(&mut self.deltas);
        let kept = deltas
            .drain(..)
            .filter(|d| !matches!(d, Delta::ToolCall { index, .. } if *index >= max_calls));
        for delta in kept {
            out.push(match delta {
                Delta::Content(t) => Part::Content(t),
                Delta::Reasoning(t) => Part::Reasoning(t),
                Delta::ToolCall {
                    index,
                    name,
                    arguments,
                } => {
                    let head = name.map(|name| {
                        self.called_tools = true;
                        let id =
                            format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
                        (id, name)
                    });
                    Part::ToolCall {
                        index,
                        head,
                        arguments,
                    }
                }
            });
        }
        self.deltas = deltas;
    }
}

/// The finish reason of a choice: `tool_calls` when it ended by calling tools.
pub fn finish_reason(base: &'static str, called_tools: bool) -> &'static str {
    match (base, called_tools) {
        ("stop", true) => "tool_calls",
        (base, _) => base,
    }
}

/// A whole chat answer, merged from its parts.
#[derive(Debug, Default)]
pub struct Message {
    pub content: String,
    pub reasoning: String,
    /// `(id, name, arguments)` in order.
    pub tool_calls: Vec<(String, String, String)>,
}

impl Message {
    pub fn apply(&mut self, part: Part) {
        match part {
            Part::Content(t) => self.content.push_str(&t),
            Part::Reasoning(t) => self.reasoning.push_str(&t),
            Part::ToolCall {
                index,
                head,
                arguments,
            } => {
                let i = index as usize;
                if self.tool_calls.len() <= i {
                    self.tool_calls.resize(i + 1, Default::default());
                }
                if let Some((id, name)) = head {
                    self.tool_calls[i].0 = id;
                    self.tool_calls[i].1 = name;
                }
                self.tool_calls[i].2.push_str(&arguments);
            }
        }
    }

    /// The `message` object of a chat completion.
    pub fn to_json(&self) -> Value {
        let mut m = json!({
            "role": "assistant",
            "content": if self.content.is_empty() && !self.tool_calls.is_empty() {
                Value::Null
            } else {
                Value::String(self.content.clone())
            },
        });
        if !self.reasoning.is_empty() {
            m["reasoning_content"] = Value::String(self.reasoning.clone());
        }
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|(id, name, args)| {
                    json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": args}})
                })
                .collect();
        }
        m
    }
}

/// A streamed delta carrying `part`.
pub fn delta_json(part: &Part) -> Value {
    match part {
        Part::Content(t) => json!({"content": t}),
        Part::Reasoning(t) => json!({"reasoning_content": t}),
        Part::ToolCall {
            index,
            head: Some((id, name)),
            arguments,
        } => json!({"tool_calls": [{"index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": arguments}}]}),
        Part::ToolCall {
            index, arguments, ..
        } => json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
    }
}

fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chat logprobs: `{"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}`.
pub fn chat_logprobs(tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(b, lp)| json!({"token": token_text(b), "logprob": lp, "bytes": b}))
                .collect();
            json!({"token": token_text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes,
                "top_logprobs": top})
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Legacy completions logprobs: parallel arrays, `text_offset` from `offset`.
pub fn text_logprobs(tokens: &[TokenLogprob], mut offset: usize) -> Value {
    let mut texts = Vec::with_capacity(tokens.len());
    let mut lps = Vec::with_capacity(tokens.len());
    let mut tops = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        let text = token_text(&t.bytes);
        offsets.push(offset);
        offset += text.len();
        texts.push(text);
        lps.push(t.logprob);
        let top: serde_json::Map<String, Value> = t
            .top
            .iter()
            .map(|(b, lp)| (token_text(b), json!(lp)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

#[cfg(test)]
mod tests {
    use llm_node_chat::format::ToolSyntax;

    use super::*;

    fn hermes() -> ChatFormat {
        ChatFormat::detect(
            "{% for m in messages %}<tool_call>{{ tools }}</tool_call><think>{% endfor %}",
        )
    }

    #[test]
    fn tool_calls_get_ids_and_end_with_tool_calls() {
        let format = hermes();
        assert_eq!(format.tools, ToolSyntax::Hermes, "{format:?}");
        let options = ParseOptions {
            tools: true,
            ..ParseOptions::default()
        };
        let mut a = Assembler::chat(format, options);
        let mut parts = Vec::new();
        a.push(
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>".into(),
            &mut parts,
        );
        a.finish(&mut parts);
        assert!(a.called_tools());
        let mut m = Message::default();
        for p in parts {
            m.apply(p);
        }
        let v = m.to_json();
        assert_eq!(v["content"], Value::Null);
        assert_eq!(v["tool_calls"][0]["function"]["name"], "f");
        let args: Value = serde_json::from_str(
            v["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"x": 1}));
        assert!(v["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_"));
        assert_eq!(finish_reason("stop", a.called_tools()), "tool_calls");
        assert_eq!(finish_reason("length", true), "length");
    }

    #[test]
    fn text_completions_pass_text_through() {
        let mut a = Assembler::text();
        let mut parts = Vec::new();
        a.push("<tool_call>x".into(), &mut parts);
        a.finish(&mut parts);
        assert_eq!(parts, vec![Part::Content("<tool_call>x".into())]);
    }

    #[test]
    fn logprobs_take_openai_shapes() {
        let t = [TokenLogprob {
            bytes: b"Hi".to_vec(),
            logprob: -0.25,
            top: vec![(b"Hi".to_vec(), -0.25), (b"Yo".to_vec(), -2.0)],
        }];
        let c = chat_logprobs(&t);
        assert_eq!(c["content"][0]["token"], "Hi");
        assert_eq!(c["content"][0]["top_logprobs"][1]["token"], "Yo");
        assert_eq!(c["content"][0]["bytes"], json!([72, 105]));
        let l = text_logprobs(&t, 5);
        assert_eq!(l["tokens"], json!(["Hi"]));
        assert_eq!(l["text_offset"], json!([5]));
        assert_eq!(l["top_logprobs"][0]["Yo"], json!(-2.0));
    }
}
