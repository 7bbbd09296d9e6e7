//! Anthropic's Messages API (`POST /v1/messages`) translated to and from
//! OpenAI's chat completions, as pure functions over JSON.
//!
//! # Request (OpenAI → Anthropic)
//! - `system`/`developer` messages, wherever they stand, join (blank line
//!   between) into the top-level `system`; `response_format` adds a JSON
//!   instruction there (Anthropic has no JSON mode, so JSON is asked for, not
//!   enforced).
//! - `user`/`assistant` turns become content blocks; consecutive turns of one
//!   role merge (Anthropic wants alternation); `tool` messages become
//!   `tool_result` blocks in a user turn; assistant `tool_calls` become
//!   `tool_use` blocks (arguments parsed from their JSON string).
//! - `image_url` parts: `data:` URLs → base64 image blocks, `http(s)` URLs →
//!   URL image blocks.
//! - `max_completion_tokens`/`max_tokens` → `max_tokens`, which Anthropic
//!   requires: [`DEFAULT_MAX_TOKENS`] when the client gives none.
//! - `temperature` (0–1 only), `top_p`, `top_k`, `stop` → `stop_sequences`,
//!   `tools`, `tool_choice` (none/auto/required→any/named→tool),
//!   `parallel_tool_calls: false` → `disable_parallel_tool_use`, `user` →
//!   `metadata.user_id`.
//! - `n` > 1 and every other field Anthropic cannot honour are a
//!   [`TranslateError::BadRequest`] naming the field; `stream_options` and
//!   `store` are ignored, and so is any field whose value is `null`.
//!
//! # Response and stream (Anthropic → OpenAI)
//! `text` blocks → `content`, `tool_use` blocks → `tool_calls` (Anthropic's
//! ids), `thinking` blocks dropped; `stop_reason` end_turn/stop_sequence/
//! pause_turn → `stop`, max_tokens → `length`, tool_use → `tool_calls`,
//! refusal → `content_filter`; usage counts cached input as prompt tokens.
//! A stream must end with `message_stop`, else [`ChatStream::finish`] fails.
//!
//! # Layout
//! - `request.rs`: the OpenAI request → the Anthropic request;
//! - `response.rs`: the whole answer → `chat.completion`;
//! - `stream.rs`: the stream → `chat.completion.chunk`s;
//! - `tests.rs`: all of the above on the documented wire shapes.

use serde_json::Value;

use super::translate::{
    bad, known_fields, truncated, upstream, ChatStream, Provider, SseEvent, TranslateError,
    UpstreamRequest,
};

/// `max_tokens` sent when the client sets neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires one; 4096 is the smallest
/// output limit among current Claude models).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Appended to `system` for `response_format: json_object`.
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single JSON object and nothing else: no prose, no code fences.";

/// Anthropic's Messages API.
pub struct Anthropic;

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        Ok(UpstreamRequest {
            path: "/v1/messages".into(),
            body: request_body(openai, model, stream)?,
        })
    }

    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError> {
        response(&upstream, model, now())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn ChatStream> {
        Box::new(AnthropicStream::new(model, include_usage, now()))
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        match parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
        {
            Some(message) => message.to_owned(),
            None => truncated(status, body),
        }
    }
}

/// Seconds since the epoch, for `created`.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

mod request;
mod response;
mod stream;

use request::*;
use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;
