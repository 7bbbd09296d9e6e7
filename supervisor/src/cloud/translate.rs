//! The contract between the cloud dispatcher (`cloud/mod.rs`: keys, base URLs,
//! HTTP, SSE framing, error statuses) and each provider's translation
//! (`anthropic.rs`, `google.rs`): pure functions from OpenAI's chat shapes to
//! the provider's and back, with no I/O, so they are tested on the documented
//! wire formats alone.

use serde_json::{Map, Value};

/// One upstream call, less the base URL and the credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// Path and query after the provider's base URL, e.g. `/v1/messages` or
    /// `/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`.
    pub path: String,
    /// The JSON body to POST.
    pub body: Value,
}

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request cannot be expressed for this provider (a 400 in
    /// OpenAI's shape, naming `param` when one field is at fault).
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// The provider's answer cannot be read (a 502, or a final error event
    /// once a stream has begun).
    #[error("{0}")]
    Upstream(String),
}

/// One server-sent event from the provider: its `event:` name, if any, and
/// its `data:` (lines joined with `\n`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SseEvent<'a> {
    pub event: Option<&'a str>,
    pub data: &'a str,
}

/// A provider whose chat API is translated to and from OpenAI's.
pub trait Provider: Send + Sync {
    /// The model-name prefix and metrics label: `anthropic`, `google`.
    fn name(&self) -> &'static str;

    /// The upstream call for an OpenAI `/v1/chat/completions` body; `model`
    /// is the name after the prefix.
    ///
    /// # Errors
    /// [`TranslateError::BadRequest`] for what the provider cannot take.
    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError>;

    /// An OpenAI `chat.completion` object from the provider's whole answer;
    /// `model` is the name the client asked for (with its prefix).
    ///
    /// # Errors
    /// [`TranslateError::Upstream`] when the answer is not the documented shape.
    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError>;

    /// A translator for one streamed answer: each provider event in, OpenAI
    /// `chat.completion.chunk` objects out (the dispatcher frames them as SSE
    /// and adds `data: [DONE]`). `include_usage` is OpenAI's
    /// `stream_options.include_usage`: a last chunk with empty `choices` and
    /// `usage`.
    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn ChatStream>;

    /// The upstream call for an OpenAI `/v1/embeddings` body, or `None` when
    /// the provider has no embeddings API (the dispatcher then answers 400).
    ///
    /// # Errors
    /// [`TranslateError::BadRequest`] for what the provider cannot take.
    fn embeddings_request(
        &self,
        _openai: &Value,
        _model: &str,
    ) -> Option<Result<UpstreamRequest, TranslateError>> {
        None
    }

    /// An OpenAI embeddings `list` from the provider's answer; `openai` is the
    /// client's request (for `encoding_format`), `model` the name it asked for.
    ///
    /// # Errors
    /// [`TranslateError::Upstream`] when the answer is not the documented shape.
    fn embeddings_response(
        &self,
        _upstream: Value,
        _openai: &Value,
        _model: &str,
    ) -> Result<Value, TranslateError> {
        Err(TranslateError::Upstream("no embeddings API".into()))
    }

    /// The human-readable message of an error reply (`status`, raw `body`),
    /// from the provider's documented error shape, else the body itself
    /// (truncated). The dispatcher maps the status.
    fn error_message(&self, status: u16, body: &str) -> String;
}

/// Translates one provider stream into OpenAI chunks.
pub trait ChatStream: Send {
    /// The chunks owed for `event` (often none).
    ///
    /// # Errors
    /// [`TranslateError::Upstream`] for an error event or an unreadable one.
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError>;

    /// The provider's stream has ended: the chunks still owed (finish reason,
    /// usage).
    ///
    /// # Errors
    /// [`TranslateError::Upstream`] when it ended before the provider's own
    /// end of message (a cut stream).
    fn finish(&mut self) -> Result<Vec<Value>, TranslateError>;
}

// Helpers shared by the translations.

/// [`TranslateError::BadRequest`] naming `param`.
pub(crate) fn bad(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::BadRequest {
        message: message.into(),
        param: Some(param.into()),
    }
}

/// [`TranslateError::Upstream`].
pub(crate) fn upstream(message: impl Into<String>) -> TranslateError {
    TranslateError::Upstream(message.into())
}

/// An error body with no documented shape: the body itself, cut at 500 bytes
/// (on a character boundary), or the status when it is empty.
pub(crate) fn truncated(status: u16, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return format!("upstream answered {status}");
    }
    let mut end = body.len().min(500);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

/// The request body as an object whose non-null fields are all in `known`;
/// any other field is refused naming it (`provider` says for whom).
pub(crate) fn known_fields<'a>(
    openai: &'a Value,
    known: &[&str],
    provider: &str,
) -> Result<&'a Map<String, Value>, TranslateError> {
    let req = openai
        .as_object()
        .ok_or_else(|| bad("messages", "the body must be a JSON object"))?;
    match req
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((field, _)) => Err(bad(
            field.clone(),
            format!("`{field}` is not supported for {provider} models"),
        )),
        None => Ok(req),
    }
}
