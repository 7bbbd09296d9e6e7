//! Counts every error answer in `llm_node_rejections_total{reason,status}`.
//!
//! Handlers, extractors and the default service all answer errors as
//! [`ApiError`], rendered in one place (`error.rs`); this middleware reads the
//! error an answer carries and counts it under that error's stable
//! [`ApiError::label`] and the status it was rendered with (429 queue full,
//! 503 unavailable, 400 bad input, ...). An error inside a stream that has
//! begun is not a rejection and is counted by the generation's own metrics
//! (`llm_node_requests_total{outcome="error"}`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use super::error::ApiError;
use super::state::AppState;

/// The middleware (`App::wrap(from_fn(rejections::middleware))`).
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await?;
    let label = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(ApiError::label);
    if let (Some(reason), Some(state)) = (label, state) {
        let status = response.status();
        state
            .models
            .metrics()
            .rejections
            .with_label_values(&[reason, status.as_str()])
            .inc();
    }
    Ok(response)
}
