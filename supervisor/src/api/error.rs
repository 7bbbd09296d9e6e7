//! Every error the HTTP API returns, mapped to a status and an OpenAI error
//! body in one place.
//!
//! The body is always `{"error":{"message","type","param","code"}}`. Messages
//! are short and about the request; internal details (llama.cpp errors,
//! channel failures) are logged here and replaced by `internal error`.

use actix_web::error::JsonPayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use llm_node_protocol::FailureKind;
use serde::Serialize;

use crate::cloud::CloudError;
use crate::models::{ModelState, ModelsError};
use crate::router::PullRejected;
use crate::store::{StoreError, StoreErrorKind};
use crate::worker::WorkerError;

/// Longest worker-provided message passed on to clients, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something unsupported.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// The model exists but is not ready (starting, failed, stopping).
    #[error("The model `{model}` is {}; retry later", state.label())]
    ModelUnavailable { model: String, state: ModelState },
    /// The model could not be loaded in time (no capacity frees up).
    #[error("The model `{0}` is loading; retry later")]
    NoCapacity(String),
    /// The worker died or its connection broke while serving the request.
    #[error("The model worker is unavailable; retry later")]
    WorkerGone,
    /// The model's queue is full.
    #[error("The model `{0}` has too many requests waiting; retry later")]
    QueueFull(String),
    /// The node is shutting down and admits nothing new.
    #[error("The node is shutting down")]
    ShuttingDown,
    /// /admin without the admin key.
    #[error("Missing or wrong admin key")]
    Unauthorized,
    /// An inference route without a valid API key (`--api-key`).
    #[error("Missing or wrong API key (send it as `Authorization: Bearer KEY`)")]
    InvalidApiKey,
    /// A caller this route does not serve (not loopback, not the router), or a
    /// request it refuses to act on (a `/pull` source outside the allowed ones).
    #[error("{0}")]
    Forbidden(String),
    /// An admin action that does not fit the model's state.
    #[error("{0}")]
    Conflict(String),
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("Invalid URL ({method} {path})")]
    NotFound { method: String, path: String },
    #[error("Method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("Internal error")]
    Internal,
    /// A model store failure (`/api/pull`, `/api/delete`): its message is about
    /// the request (a name, a repo, disk space), so it is passed on.
    #[error("{message}")]
    Store {
        kind: StoreErrorKind,
        message: String,
    },
    /// A router `/pull` body that cannot work. llm-router's contract (§3.4)
    /// wants `{"error": "..."}` here, not the OpenAI shape.
    #[error("{0}")]
    RouterPull(String),
    /// Another error on one of the router's routes: its status and
    /// `Retry-After`, in the router's shape `{"error": "..."}` (contract §3.4).
    #[error("{0}")]
    Router(Box<ApiError>),
    /// An error on one of Ollama's `/api/*` routes: its status and
    /// `Retry-After`, in Ollama's shape `{"error": "..."}`.
    #[error("{0}")]
    Ollama(Box<ApiError>),
    /// The request waited or ran longer than the node allows (`what`: "its
    /// first token" or "the whole request").
    #[error("The request timed out waiting for {what} ({secs} s); retry later")]
    Timeout { what: &'static str, secs: u64 },
    /// The request body stopped arriving (`--body-timeout-secs`).
    #[error("The request body stopped arriving")]
    BodyTimeout,
    /// The answer was not read fast enough: `unread` events waited (see
    /// `--stream-buffer`), so the generation was cancelled. In a stream (the
    /// usual case: a client not reading) this is its last event; 503 only when
    /// the node itself fell behind a non-streaming answer.
    #[error(
        "The response was not read fast enough ({unread} events unread); the request was cancelled"
    )]
    ClientTooSlow { unread: usize },
    /// The client closed its connection before the answer (nginx's 499);
    /// nobody reads this answer, it names the outcome in logs and metrics.
    #[error("Client closed the request")]
    ClientClosed,
    /// A cloud model's request failed (`openai:`, `anthropic:`, `google:`):
    /// the provider's status class, `Retry-After` and message, or the node's
    /// own reason (no key, timeout, unreachable).
    #[error("{0}")]
    Cloud(CloudError),
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// This error in Ollama's shape `{"error": "..."}` (same status), for the
    /// `/api/*` routes. Wrapping twice changes nothing.
    pub fn ollama(self) -> Self {
        match self {
            ApiError::Ollama(_) => self,
            ApiError::Router(inner) => ApiError::Ollama(inner),
            other => ApiError::Ollama(Box::new(other)),
        }
    }

    /// A stable label per variant, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::ContextLengthExceeded(_) => "context_length_exceeded",
            ApiError::ModelUnavailable { .. } => "model_unavailable",
            ApiError::NoCapacity(_) => "no_capacity",
            ApiError::WorkerGone => "worker_gone",
            ApiError::QueueFull(_) => "queue_full",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Internal => "internal",
            ApiError::ClientClosed => "client_closed",
            ApiError::ClientTooSlow { .. } => "client_too_slow",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Store { kind, .. } => match kind {
                StoreErrorKind::NotFound => "store_not_found",
                StoreErrorKind::InUse => "store_in_use",
                StoreErrorKind::ReadOnly => "store_read_only",
                StoreErrorKind::NoSpace => "store_no_space",
                StoreErrorKind::Invalid => "store_invalid",
                StoreErrorKind::Failed => "store_failed",
                StoreErrorKind::Busy => "store_busy",
            },
            ApiError::RouterPull(_) => "router_pull_rejected",
            ApiError::Router(inner) | ApiError::Ollama(inner) => inner.label(),
            ApiError::Cloud(e) => e.label(),
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            ApiError::ModelUnavailable { .. }
            | ApiError::NoCapacity(_)
            | ApiError::WorkerGone
            | ApiError::Internal
            | ApiError::Timeout { .. }
            | ApiError::ClientTooSlow { .. }
            | ApiError::ShuttingDown => "server_error",
            ApiError::QueueFull(_) => "rate_limit_error",
            ApiError::Unauthorized | ApiError::InvalidApiKey => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::Cloud(e) => match e.status() {
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                500.. => "server_error",
                _ => "invalid_request_error",
            },
            ApiError::Store {
                kind: StoreErrorKind::NoSpace | StoreErrorKind::Failed | StoreErrorKind::Busy,
                ..
            } => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotFound(_) | ApiError::Store { .. } => Some("model"),
            ApiError::Cloud(CloudError::BadRequest { param, .. }) => param.as_deref(),
            _ => None,
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::ModelNotFound(_) => Some("model_not_found"),
            ApiError::ContextLengthExceeded(_) => Some("context_length_exceeded"),
            ApiError::ModelUnavailable { .. } | ApiError::NoCapacity(_) => {
                Some("model_unavailable")
            }
            ApiError::WorkerGone => Some("worker_unavailable"),
            ApiError::QueueFull(_) => Some("queue_full"),
            ApiError::ShuttingDown => Some("shutting_down"),
            ApiError::Timeout { .. } => Some("timeout"),
            ApiError::ClientTooSlow { .. } => Some("client_too_slow"),
            ApiError::Unauthorized => Some("invalid_admin_key"),
            ApiError::InvalidApiKey => Some("invalid_api_key"),
            ApiError::Forbidden(_) => Some("forbidden"),
            ApiError::Conflict(_) => Some("conflict"),
            // The label less its `cloud_` (`missing_api_key` reads better).
            ApiError::Cloud(CloudError::MissingKey { .. }) => Some("missing_api_key"),
            ApiError::Cloud(e) => Some(e.label().trim_start_matches("cloud_")),
            ApiError::Store { kind, .. } => Some(match kind {
                StoreErrorKind::NotFound => "model_not_found",
                StoreErrorKind::InUse => "model_in_use",
                StoreErrorKind::ReadOnly => "read_only_store",
                StoreErrorKind::NoSpace => "no_space",
                StoreErrorKind::Invalid => "invalid_model",
                StoreErrorKind::Failed => "pull_failed",
                StoreErrorKind::Busy => "pull_queue_full",
            }),
            _ => None,
        }
    }

    /// The OpenAI error body, also sent as the last event of a failed stream.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.error_type(),
                param: self.param(),
                code: self.code(),
            },
        }
    }
}

/// `{"error":{"message","type","param","code"}}`, in OpenAI's field order.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::ContextLengthExceeded(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ModelNotFound(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ModelUnavailable { .. }
            | ApiError::NoCapacity(_)
            | ApiError::WorkerGone
            | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized | ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Timeout { .. } | ApiError::ClientTooSlow { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::Store { kind, .. } => match kind {
                StoreErrorKind::NotFound => StatusCode::NOT_FOUND,
                StoreErrorKind::InUse | StoreErrorKind::ReadOnly => StatusCode::CONFLICT,
                StoreErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
                StoreErrorKind::Invalid => StatusCode::BAD_REQUEST,
                StoreErrorKind::Failed => StatusCode::BAD_GATEWAY,
                StoreErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::RouterPull(_) => StatusCode::BAD_REQUEST,
            ApiError::Router(inner) | ApiError::Ollama(inner) => inner.status_code(),
            ApiError::Cloud(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        // The provider's own Retry-After, as it sent it (seconds or a date).
        if let ApiError::Cloud(CloudError::Upstream {
            retry_after: Some(value),
            ..
        }) = self
        {
            if let Ok(value) = header::HeaderValue::from_str(value) {
                response.insert_header((header::RETRY_AFTER, value));
            }
        }
        match self {
            ApiError::RouterPull(message) => response.json(serde_json::json!({ "error": message })),
            ApiError::Router(inner) | ApiError::Ollama(inner) => {
                response.json(serde_json::json!({ "error": inner.to_string() }))
            }
            _ => response.json(self.body()),
        }
    }
}

impl ApiError {
    /// Seconds a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::ModelUnavailable { state, .. } if state.is_transient() => Some(5),
            ApiError::NoCapacity(_) => Some(5),
            ApiError::ModelUnavailable { .. } => Some(30),
            ApiError::WorkerGone => Some(5),
            ApiError::QueueFull(_) | ApiError::ClientTooSlow { .. } => Some(1),
            ApiError::ShuttingDown => Some(10),
            // A pull slot frees when a pull ends: not soon, but a retry is cheap.
            ApiError::Store {
                kind: StoreErrorKind::Busy,
                ..
            } => Some(10),
            ApiError::Router(inner) | ApiError::Ollama(inner) => inner.retry_after(),
            _ => None,
        }
    }
}

fn short(message: &str) -> String {
    message.chars().take(MAX_MESSAGE_CHARS).collect()
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Gone(why) => {
                tracing::warn!("request failed, worker gone: {why}");
                ApiError::WorkerGone
            }
            WorkerError::Failed {
                kind: FailureKind::PromptTooLong,
                message,
            } => ApiError::ContextLengthExceeded(short(&message)),
            WorkerError::Failed {
                kind: FailureKind::InvalidRequest,
                message,
            } => ApiError::InvalidRequest {
                message: short(&message),
                param: None,
            },
            WorkerError::Failed {
                kind: FailureKind::Internal,
                message,
            } => {
                tracing::error!("worker failed a request: {message}");
                ApiError::Internal
            }
            WorkerError::TooSlow { unread } => ApiError::ClientTooSlow { unread },
            WorkerError::Protocol(message) => {
                tracing::error!("worker protocol error: {message}");
                ApiError::Internal
            }
        }
    }
}

impl From<ModelsError> for ApiError {
    fn from(e: ModelsError) -> Self {
        match e {
            ModelsError::NotFound(model) => ApiError::ModelNotFound(model),
            ModelsError::Unavailable { model, state } => {
                if let ModelState::Failed { reason } = &state {
                    tracing::debug!(model = %model, "refused: model failed: {reason}");
                }
                ApiError::ModelUnavailable { model, state }
            }
            ModelsError::NoCapacity(model) => ApiError::NoCapacity(model),
            ModelsError::QueueFull(model) => ApiError::QueueFull(model),
            ModelsError::Conflict(message) => ApiError::Conflict(message),
            ModelsError::InUse(model) => ApiError::Conflict(format!("model {model} is in use")),
            // Admin only (`POST /admin/reload`): the operator's own file and line.
            ModelsError::Config(why) => ApiError::InvalidRequest {
                message: format!("configuration not reloaded: {why}"),
                param: None,
            },
            ModelsError::ActorGone(why) => {
                tracing::error!("model actor unreachable: {why}");
                ApiError::Internal
            }
        }
    }
}

impl From<CloudError> for ApiError {
    fn from(e: CloudError) -> Self {
        ApiError::Cloud(e)
    }
}

impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> Self {
        ApiError::Store {
            kind: e.kind(),
            message: e.public_message(),
        }
    }
}

impl From<PullRejected> for ApiError {
    fn from(e: PullRejected) -> Self {
        ApiError::RouterPull(e.to_string())
    }
}

/// Turns body extraction failures into OpenAI errors (`JsonConfig::error_handler`).
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::InvalidRequest {
            message: "Content-Type must be application/json".into(),
            param: None,
        },
        JsonPayloadError::Payload(actix_web::error::PayloadError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::BodyTimeout
        }
        JsonPayloadError::Deserialize(e) => invalid_body(e),
        _ => ApiError::InvalidRequest {
            message: "Could not read the request body".into(),
            param: None,
        },
    };
    api.into()
}

/// A body that is JSON but not the request's shape (a 400 naming the field).
pub fn invalid_body(e: &serde_json::Error) -> ApiError {
    ApiError::InvalidRequest {
        message: short(&format!("Invalid JSON body: {e}")),
        param: field_of(&e.to_string()),
    }
}

/// The field a serde error names (``missing field `model` ``), for `param`.
fn field_of(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn missing_fields_are_named_in_param() {
        assert_eq!(
            field_of("missing field `model` at line 1 column 4"),
            Some("model".into())
        );
        assert_eq!(field_of("expected value at line 1 column 1"), None);
    }

    async fn render(e: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = e.error_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = to_bytes(response.into_body()).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[actix_rt::test]
    async fn errors_render_as_openai_bodies() {
        let (status, retry, body) = render(ApiError::ModelNotFound("x".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            json!({"error": {"message": "The model `x` does not exist",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
        );
        let (status, retry, body) = render(ApiError::WorkerGone).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("5"));
        assert_eq!(body["error"]["type"], "server_error");
    }

    #[actix_rt::test]
    async fn internal_worker_messages_are_not_leaked() {
        let e = ApiError::from(WorkerError::Failed {
            kind: FailureKind::Internal,
            message: "llama_decode returned -3 at /src/llama.cpp:1234".into(),
        });
        let (status, _, body) = render(e).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "Internal error");
    }

    #[actix_rt::test]
    async fn a_slow_reader_is_told_so_with_a_stable_code() {
        let e = ApiError::from(WorkerError::TooSlow { unread: 4096 });
        assert_eq!(e.label(), "client_too_slow");
        let (status, retry, body) = render(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "client_too_slow");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096 events unread"));
    }

    #[actix_rt::test]
    async fn a_full_pull_queue_is_a_503_with_retry_after_in_each_routes_shape() {
        let busy = StoreError::Busy { queued: 64 };
        let (status, retry, body) = render(ApiError::from(&busy)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("10"));
        assert_eq!(body["error"]["code"], "pull_queue_full");
        let router = ApiError::Router(Box::new(ApiError::from(&busy)));
        assert_eq!(router.label(), "store_busy");
        let (status, retry, body) = render(router).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("10"));
        assert_eq!(
            body,
            json!({"error": "64 pulls are waiting already; retry when one has ended"})
        );
    }

    #[actix_rt::test]
    async fn prompt_too_long_is_a_400_with_its_code() {
        let e = ApiError::from(WorkerError::Failed {
            kind: FailureKind::PromptTooLong,
            message: "prompt has 5000 tokens, the context holds 4096".into(),
        });
        let (status, _, body) = render(e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "context_length_exceeded");
    }
}
