//! Google's stream → OpenAI `chat.completion.chunk`s.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;

/// One Gemini SSE stream turned into OpenAI chunks.
///
/// Every event is a whole `GenerateContentResponse`. The first candidate
/// seen at each index gets a role chunk; text parts → content deltas;
/// each `functionCall` part → one tool-call delta with id, name and all its
/// arguments; a `finishReason` → that choice's final chunk. The last
/// `usageMetadata` seen becomes the usage chunk at [`ChatStream::finish`].
pub struct GoogleStream {
    model: String,
    include_usage: bool,
    ids: Ids,
    /// Per candidate index: tool calls so far (for the next delta's index).
    calls: HashMap<u64, usize>,
    /// Candidate indexes with a role chunk sent / with a finish reason seen.
    started: Vec<u64>,
    finished: Vec<u64>,
    /// Generated tool-call ids so far (unique across candidates).
    call_ids: usize,
    usage: Option<Value>,
}

impl GoogleStream {
    pub(super) fn new(model: &str, include_usage: bool, ids: Ids) -> Self {
        Self {
            model: model.into(),
            include_usage,
            ids,
            calls: HashMap::new(),
            started: Vec::new(),
            finished: Vec::new(),
            call_ids: 0,
            usage: None,
        }
    }

    fn chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.ids.completion,
            "object": "chat.completion.chunk",
            "created": self.ids.created,
            "model": self.model,
            "choices": [{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn candidate(&mut self, pos: usize, c: &Value, out: &mut Vec<Value>) {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
        if self.finished.contains(&index) {
            return;
        }
        if !self.started.contains(&index) {
            self.started.push(index);
            out.push(self.chunk(
                index,
                json!({ "role": "assistant", "content": "", "refusal": null }),
                None,
            ));
        }
        let (text, calls) = candidate_parts(c);
        if !text.is_empty() {
            out.push(self.chunk(index, json!({ "content": text }), None));
        }
        for Call { id, name, args } in calls {
            let at = *self.calls.entry(index).and_modify(|n| *n += 1).or_insert(0);
            let id = id.unwrap_or_else(|| self.ids.call(self.call_ids));
            self.call_ids += 1;
            out.push(self.chunk(
                index,
                json!({ "tool_calls": [{ "index": at, "id": id, "type": "function",
                                         "function": { "name": name, "arguments": args } }] }),
                None,
            ));
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            self.finished.push(index);
            let called = self.calls.contains_key(&index);
            out.push(self.chunk(index, json!({}), Some(finish_reason(reason, called))));
        }
    }
}

impl ChatStream for GoogleStream {
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError> {
        let up: Value = serde_json::from_str(event.data)
            .map_err(|_| upstream("Google sent an event that is not JSON"))?;
        let cands = candidates(&up)?.to_vec();
        if let Some(meta) = up.get("usageMetadata") {
            self.usage = Some(meta.clone());
        }
        let mut out = Vec::new();
        if cands.is_empty() && up.pointer("/promptFeedback/blockReason").is_some() {
            let blocked = json!({ "index": 0, "finishReason": "SAFETY" });
            self.candidate(0, &blocked, &mut out);
        }
        for (pos, c) in cands.iter().enumerate() {
            self.candidate(pos, c, &mut out);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if self.finished.is_empty() || self.started.iter().any(|i| !self.finished.contains(i)) {
            return Err(upstream("Google's stream ended before a finishReason"));
        }
        if !self.include_usage {
            return Ok(vec![]);
        }
        Ok(vec![json!({
            "id": self.ids.completion,
            "object": "chat.completion.chunk",
            "created": self.ids.created,
            "model": self.model,
            "choices": [],
            "usage": usage(self.usage.as_ref().unwrap_or(&Value::Null)),
        })])
    }
}
