//! Google's whole answer → OpenAI `chat.completion`.

use serde_json::{json, Value};

use super::*;

pub(super) fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

pub(super) fn usage(meta: &Value) -> Value {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount") + n("thoughtsTokenCount");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount").and_then(Value::as_u64)
            .unwrap_or(prompt + completion),
    })
}

/// One `functionCall` part: Gemini's own id when it sends one, name, and
/// arguments serialized.
pub(super) struct Call {
    pub id: Option<String>,
    pub name: String,
    pub args: String,
}

/// `(text, function calls)` of one candidate; thought parts are skipped.
pub(super) fn candidate_parts(c: &Value) -> (String, Vec<Call>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in c
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let args = f.get("args").cloned().unwrap_or_else(|| json!({}));
            let id = f.get("id").and_then(Value::as_str).map(str::to_owned);
            calls.push(Call {
                id,
                name,
                args: args.to_string(),
            });
        }
    }
    (text, calls)
}

/// The candidates of an answer, or the error that it carries.
pub(super) fn candidates(up: &Value) -> Result<&[Value], TranslateError> {
    if let Some(message) = up.pointer("/error/message").and_then(Value::as_str) {
        return Err(upstream(message));
    }
    if !up.is_object() {
        return Err(upstream("Google's answer is not a GenerateContentResponse"));
    }
    Ok(up
        .get("candidates")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice))
}

pub(super) fn response(up: &Value, model: &str, ids: &Ids) -> Result<Value, TranslateError> {
    let cands = candidates(up)?;
    let mut choices = Vec::new();
    let mut n = 0;
    for (pos, c) in cands.iter().enumerate() {
        let (text, calls) = candidate_parts(c);
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
            "refusal": null,
        });
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|Call { id, name, args }| {
                    n += 1;
                    let id = id.unwrap_or_else(|| ids.call(n - 1));
                    json!({ "id": id, "type": "function",
                            "function": { "name": name, "arguments": args } })
                })
                .collect();
            message["tool_calls"] = calls.into();
        }
        let called = message.get("tool_calls").is_some();
        let reason = c
            .get("finishReason")
            .and_then(Value::as_str)
            .unwrap_or("STOP");
        choices.push(json!({
            "index": c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64),
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(reason, called),
        }));
    }
    if choices.is_empty() {
        // A prompt blocked before generation: no candidates, a blockReason.
        if up.pointer("/promptFeedback/blockReason").is_none() {
            return Err(upstream("Google's answer has no candidates"));
        }
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    Ok(json!({
        "id": ids.completion,
        "object": "chat.completion",
        "created": ids.created,
        "model": model,
        "choices": choices,
        "usage": usage(up.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
}
