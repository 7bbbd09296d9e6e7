//! Anthropic's stream → OpenAI `chat.completion.chunk`s.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;

/// One Anthropic stream turned into OpenAI chunks.
///
/// Events: `message_start` → the role chunk; `content_block_start` of a
/// `tool_use` → a tool-call chunk with id and name; `text_delta` → content;
/// `input_json_delta` → argument fragments; `message_delta` → the chunk with
/// `finish_reason`; `message_stop` → the end (the usage chunk comes from
/// [`ChatStream::finish`]); `ping` and unknown events are skipped; `error`
/// fails.
pub struct AnthropicStream {
    model: String,
    include_usage: bool,
    created: u64,
    id: String,
    /// Anthropic content-block index → OpenAI tool-call index.
    tools: HashMap<u64, usize>,
    input_tokens: u64,
    output_tokens: u64,
    started: bool,
    stopped: bool,
}

impl AnthropicStream {
    pub(super) fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            model: model.into(),
            include_usage,
            created,
            id: "chatcmpl-anthropic".into(),
            tools: HashMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            started: false,
            stopped: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn on_event(&mut self, ev: &Value) -> Result<Vec<Value>, TranslateError> {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        if kind != "message_start" && kind != "ping" && kind != "error" && !self.started {
            return Err(upstream(format!(
                "Anthropic sent `{kind}` before message_start"
            )));
        }
        Ok(match kind {
            "message_start" => {
                let msg = ev.get("message").unwrap_or(&Value::Null);
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                let u = msg.get("usage").unwrap_or(&Value::Null);
                self.input_tokens = input_tokens(u);
                self.output_tokens = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                self.started = true;
                vec![self.chunk(
                    json!({ "role": "assistant", "content": "", "refusal": null }),
                    None,
                )]
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let at = self.tools.len();
                        self.tools.insert(index, at);
                        vec![self.chunk(
                            json!({ "tool_calls": [{
                                "index": at,
                                "id": block.get("id"),
                                "type": "function",
                                "function": { "name": block.get("name"), "arguments": "" },
                            }] }),
                            None,
                        )]
                    }
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => vec![self.chunk(json!({ "content": t }), None)],
                        _ => vec![],
                    },
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let delta = ev.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        vec![self.chunk(json!({ "content": t }), None)]
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match self.tools.get(&index) {
                            Some(at) if !part.is_empty() => vec![self.chunk(
                                json!({ "tool_calls": [{ "index": at, "function": { "arguments": part } }] }),
                                None,
                            )],
                            _ => vec![],
                        }
                    }
                    _ => vec![], // thinking_delta, signature_delta
                }
            }
            "message_delta" => {
                if let Some(out) = ev.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output_tokens = out;
                }
                match ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => vec![self.chunk(json!({}), Some(finish_reason(Some(reason))))],
                    None => vec![],
                }
            }
            "message_stop" => {
                self.stopped = true;
                vec![]
            }
            "error" => {
                let message = ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("Anthropic reported an error mid-stream");
                return Err(upstream(message));
            }
            _ => vec![], // ping, content_block_stop, and event types added later
        })
    }
}

impl ChatStream for AnthropicStream {
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError> {
        if self.stopped {
            return Ok(vec![]);
        }
        let ev: Value = serde_json::from_str(event.data)
            .map_err(|_| upstream("Anthropic sent an event that is not JSON"))?;
        self.on_event(&ev)
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if !self.stopped {
            return Err(upstream("Anthropic's stream ended before message_stop"));
        }
        if !self.include_usage {
            return Ok(vec![]);
        }
        Ok(vec![json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(self.input_tokens, self.output_tokens),
        })])
    }
}
