//! Gives every HTTP request an id, so one request is one trace.
//!
//! The id is the client's `x-request-id` header when it sends a sane one (1 to
//! 128 visible ASCII characters), else a fresh one; the response echoes it in
//! `x-request-id`. The handler runs inside a `request` span carrying the id and
//! inside [`crate::request_id::scope`], from which `WorkerClient` copies the id
//! into the `trace` field of `Generate` and `Embed`, so the worker's log lines
//! name the request too. (A streamed body is polled after the handler returns,
//! outside the span; the command that carries the id is sent before.)

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The header read and echoed.
pub const HEADER: &str = "x-request-id";

/// The client's id when it is usable as one.
fn given(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(HEADER)?.to_str().ok()?.trim();
    let sane =
        !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_string())
}

/// The middleware (`App::wrap(from_fn(request_id::middleware))`).
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = given(&req).unwrap_or_else(crate::request_id::generate);
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.path());
    let mut response = crate::request_id::scope(id.clone(), next.call(req))
        .instrument(span)
        .await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(response)
}
