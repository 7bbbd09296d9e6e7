//! The contract between the cloud dispatcher (`cloud/mod.rs`: keys, base URLs,
//! HTTP, SSE framing, error statuses) and each provider's translation
//! (`anthropic.rs`, `google.rs`): pure functions from OpenAI's chat shapes to
//! the provider's and back, with no I/O, so they are tested on the documented
//! wire formats alone.

use serde_json::Value;

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
