//! Anthropic's whole answer → OpenAI `chat.completion`.

use serde_json::{json, Value};

use super::*;

pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic's (cached input counts as prompt).
pub(super) fn usage(input: u64, output: u64) -> Value {
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input + output,
    })
}

pub(super) fn input_tokens(u: &Value) -> u64 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| u.get(*k).and_then(Value::as_u64))
    .sum()
}

pub(super) fn response(up: &Value, model: &str, created: u64) -> Result<Value, TranslateError> {
    let blocks = up
        .get("content")
        .and_then(Value::as_array)
        .filter(|_| up.get("type").and_then(Value::as_str) == Some("message"))
        .ok_or_else(|| upstream("Anthropic's answer is not a message"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            _ => {} // thinking, redacted_thinking, server tool blocks: not OpenAI's
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = tool_calls.into();
    }
    let u = up.get("usage").unwrap_or(&Value::Null);
    let output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
    let id = up.get("id").and_then(Value::as_str).unwrap_or("msg");
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(up.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage(input_tokens(u), output),
    }))
}
