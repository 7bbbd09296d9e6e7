//! Errors in the shape of the API a route belongs to.
//!
//! Handlers return [`ApiError`] whatever their route; this middleware renders
//! an error answer on Ollama's routes (`/api/*` but `/api/logs`, which is
//! llm-router's) as Ollama does, `{"error": "..."}` with the same status and
//! `Retry-After`. It covers extractor failures (a bad JSON body), 404 and 405
//! on those paths too, so no `/api` handler has to remember it. Errors inside
//! a stream that has begun are the stream's own business (NDJSON lines).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::ResponseError;

use super::error::ApiError;

/// The middleware (`App::wrap(from_fn(shape::middleware))`).
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let ollama = is_ollama(req.path());
    let response = next.call(req).await?.map_into_boxed_body();
    if !ollama {
        return Ok(response);
    }
    let reshaped = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .filter(|e| !matches!(e, ApiError::Ollama(_)))
        .map(|e| e.clone().ollama().error_response());
    Ok(match reshaped {
        Some(answer) => response.into_response(answer),
        None => response,
    })
}

/// Whether `path` is one of Ollama's routes.
pub fn is_ollama(path: &str) -> bool {
    path.starts_with("/api/") && path != "/api/logs"
}
