//! Google's Gemini API (`models/{m}:generateContent`, and
//! `:streamGenerateContent?alt=sse` whose events are each a whole
//! `GenerateContentResponse`) translated to and from OpenAI's chat
//! completions, as pure functions over JSON.
//!
//! # Request (OpenAI → Gemini)
//! - `system`/`developer` messages → `systemInstruction.parts`.
//! - `user` → role `user`, `assistant` → role `model`; consecutive turns of
//!   one role merge. Assistant `tool_calls` → `functionCall` parts (arguments
//!   parsed); `tool` messages → `functionResponse` parts in a user turn, named
//!   by looking up their `tool_call_id` among earlier tool calls; the result
//!   is `response: <JSON object>` when the content is one, else
//!   `{"result": <content>}`.
//! - `image_url` parts with `data:` URLs → `inlineData`; other URLs are
//!   refused (Gemini's `fileData` wants uploaded-file URIs).
//! - `generationConfig`: temperature, topP, topK, maxOutputTokens (from
//!   `max_completion_tokens`/`max_tokens`), stopSequences, candidateCount
//!   (`n`), presencePenalty, frequencyPenalty, seed, and `response_format` →
//!   `responseMimeType: application/json` (+ `responseSchema`).
//! - `tools` → one `functionDeclarations` tool; `tool_choice` none/auto/
//!   required/named → `functionCallingConfig` NONE/AUTO/ANY/ANY with
//!   `allowedFunctionNames`.
//! - Schemas (tool parameters, `responseSchema`) keep only the keywords of
//!   Gemini's OpenAPI-subset `Schema` ([`SCHEMA_KEYWORDS`]); the rest
//!   (`additionalProperties`, `$schema`, `strict`, `const`, …) is dropped,
//!   `type: [T, "null"]` becomes `type: T, nullable: true`, and `$ref` is
//!   refused (it cannot be dropped without changing the schema).
//! - Other fields → [`TranslateError::BadRequest`] naming them; `user`,
//!   `store`, `stream_options`, `parallel_tool_calls` and `null`s are ignored.
//!
//! # Embeddings
//! `/v1/embeddings` ↔ `batchEmbedContents` (see `embed`).
//!
//! # Response and stream (Gemini → OpenAI)
//! One choice per candidate; `text` parts → content (thought parts dropped);
//! `functionCall` parts → `tool_calls` with Gemini's `id`, else generated
//! ids (`call_…`), their whole arguments in one delta when streamed. finishReason STOP → `stop`
//! (`tool_calls` when the candidate called a function), MAX_TOKENS →
//! `length`, SAFETY/RECITATION/BLOCKLIST/PROHIBITED_CONTENT/SPII/
//! IMAGE_SAFETY/LANGUAGE → `content_filter`, anything else → `stop`. A
//! stream must show a finishReason for every candidate, else
//! [`ChatStream::finish`] fails.
//!
//! # Layout
//! - `request.rs`: the OpenAI request → the Google request;
//! - `response.rs`: the whole answer → `chat.completion`;
//! - `stream.rs`: the stream → `chat.completion.chunk`s;
//! - `tests.rs`: all of the above on the documented wire shapes.

use serde_json::Value;

use super::translate::{
    bad, known_fields, truncated, upstream, ChatStream, Provider, SseEvent, TranslateError,
    UpstreamRequest,
};

/// Keywords of Gemini's `Schema` object; every other keyword is stripped.
pub const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Google's Gemini API.
pub struct Google;

impl Provider for Google {
    fn name(&self) -> &'static str {
        "google"
    }

    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        let path = if stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        };
        Ok(UpstreamRequest {
            path,
            body: request_body(openai)?,
        })
    }

    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError> {
        response(&upstream, model, &Ids::fresh())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn ChatStream> {
        Box::new(GoogleStream::new(model, include_usage, Ids::fresh()))
    }

    fn embeddings_request(
        &self,
        openai: &Value,
        model: &str,
    ) -> Option<Result<UpstreamRequest, TranslateError>> {
        Some(embed::request(openai, model))
    }

    fn embeddings_response(
        &self,
        upstream: Value,
        openai: &Value,
        model: &str,
    ) -> Result<Value, TranslateError> {
        embed::response(&upstream, openai, model)
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        // Some gateways wrap the error in a one-element array.
        let error = parsed
            .as_ref()
            .map(|v| v.get(0).unwrap_or(v))
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str);
        match error {
            Some(message) => message.to_owned(),
            None => truncated(status, body),
        }
    }
}

/// The completion id, `created`, and the seed of generated tool-call ids.
#[derive(Debug, Clone)]
struct Ids {
    completion: String,
    created: u64,
    calls: String,
}

impl Ids {
    fn fresh() -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Self {
            completion: format!("chatcmpl-{}", &nonce[..24]),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            calls: nonce[..16].to_owned(),
        }
    }

    fn call(&self, n: usize) -> String {
        format!("call_{}{n}", self.calls)
    }
}

mod embed;
mod request;
mod response;
mod stream;

use request::*;
use response::*;
pub use stream::*;

#[cfg(test)]
mod tests;
