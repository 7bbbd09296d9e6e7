//! A request body that stops arriving is cut off.
//!
//! actix-web bounds the time to receive a request's head, not its body: a
//! client that announces a large body and then sends it a byte at a time would
//! hold its connection (and up to the 16 MiB JSON limit of buffer) forever.
//! This middleware wraps the body so that a gap of more than the configured
//! time between two of its chunks ends the request with 408 (the JSON
//! extractor's error handler, `api::error::json_error`, maps the timeout).

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use futures_util::StreamExt;

/// The idle time allowed between two body chunks (`App::app_data`; zero
/// turns the limit off).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// The middleware (`App::wrap(from_fn(body_timeout::middleware))`).
///
/// # Errors
/// Whatever the wrapped service returns; a stalled body becomes a 408.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let idle = match req.app_data::<BodyTimeout>() {
        Some(BodyTimeout(idle)) if !idle.is_zero() => *idle,
        _ => return next.call(req).await,
    };
    let body = req.take_payload();
    let guarded = futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(body))),
            Ok(None) => None,
            // Ends the body with an error; the extractor answers 408 below.
            Err(_) => Some((
                Err(PayloadError::Io(std::io::ErrorKind::TimedOut.into())),
                None,
            )),
        }
    });
    req.set_payload(Payload::from(Box::pin(guarded) as std::pin::Pin<Box<_>>));
    next.call(req).await
}
