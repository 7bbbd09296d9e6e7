//! What every handler can reach ([`AppState`]) and who may call the admin and
//! store routes ([`authorize`]). Below the handlers, above nothing in `api/`.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpRequest};

use super::error::ApiError;
use super::response::unix_now;
use crate::models::{Lease, Models};

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every handler can reach.
pub struct AppState {
    pub models: Models,
    /// Unix seconds when the node started; the `created` of every model.
    pub created: u64,
    /// Set at shutdown: readiness and new requests answer 503.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(models: Models) -> Self {
        Self {
            models,
            created: unix_now(),
            draining: AtomicBool::new(false),
        }
    }

    /// Stop admitting new requests.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn into_data(self) -> web::Data<Self> {
        web::Data::new(self)
    }

    /// The configured id of `model` and a lease on it: the request counts as
    /// in flight until the lease and the streams it starts are dropped.
    ///
    /// # Errors
    /// [`ApiError::ModelNotFound`] for an unknown model,
    /// [`ApiError::ModelUnavailable`] when it is not ready.
    pub async fn client(&self, model: &str) -> Result<(String, Lease), ApiError> {
        if self.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        let lease = self.models.acquire(model).await?;
        Ok((lease.model().to_string(), lease))
    }
}

/// Checks the admin key in constant time (`/admin`, and the store's pull and delete).
///
/// It needs the [`AppState`] itself, so a route registered without one cannot
/// skip the check: such a handler fails to extract its state (fails closed).
///
/// # Errors
/// [`ApiError::Unauthorized`] when a key is configured and not given.
pub fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(key) = &state.models.supervision().admin_key else {
        return Ok(());
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let given = header("x-admin-key")
        .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")))
        .unwrap_or("");
    let same = given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
