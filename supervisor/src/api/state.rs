//! What every handler can reach ([`AppState`]) and whether the access
//! middleware admitted a request to the admin and store routes ([`authorize`]). Below the handlers, above nothing in `api/`.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpMessage, HttpRequest};
use tracing::Instrument;

use super::access::{Admitted, Class};
use super::error::ApiError;
use super::response::unix_now;
use crate::cloud::Cloud;
use crate::models::{Lease, ModelProfile, Models};

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Per-request limits the operator sets (`--max-tokens-limit`, `--allow-ignore-eos`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLimits {
    /// Most tokens one request may generate; 0 = only the slot's context.
    pub max_tokens: u32,
    /// Whether clients may send `ignore_eos` (generate past the end of the answer).
    pub allow_ignore_eos: bool,
    /// Longest wait for the first token (load, slot, prefill).
    pub queue_timeout: Option<std::time::Duration>,
    /// Longest a whole non-streaming request may take.
    pub request_timeout: Option<std::time::Duration>,
}

/// What every handler can reach.
pub struct AppState {
    pub models: Models,
    pub limits: RequestLimits,
    /// Unix seconds when the node started; the `created` of every model.
    pub created: u64,
    /// Cloud models by prefix; `None` serves local models only.
    pub cloud: Option<Cloud>,
    /// The backends the worker binary was built with (`llm-node-worker
    /// --version`), `None` when it could not be asked.
    pub worker_backends: Option<Vec<String>>,
    /// Set at shutdown: readiness and new requests answer 503.
    draining: AtomicBool,
    /// Set once every preloaded model was ready: `/startup` answers 200 from then on.
    started: AtomicBool,
}

impl AppState {
    pub fn new(models: Models) -> Self {
        Self::with_limits(models, RequestLimits::default())
    }

    pub fn with_limits(models: Models, limits: RequestLimits) -> Self {
        Self {
            models,
            limits,
            created: unix_now(),
            cloud: None,
            worker_backends: None,
            draining: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }
    }

    /// Records the worker binary's backends (for `/admin/gpus`).
    pub fn with_worker_backends(mut self, backends: Option<Vec<String>>) -> Self {
        self.worker_backends = backends;
        self
    }

    /// Serves cloud models through `cloud`.
    pub fn with_cloud(mut self, cloud: Cloud) -> Self {
        self.cloud = Some(cloud);
        self
    }

    /// Stop admitting new requests.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records that the initial preload finished (for good: `/startup` stays 200).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub fn into_data(self) -> web::Data<Self> {
        web::Data::new(self)
    }

    /// The configured settings of `model` (the default profile for a model
    /// this node does not serve: the request fails later with a 404).
    pub fn profile(&self, model: &str) -> std::sync::Arc<ModelProfile> {
        self.models
            .get(model)
            .map(|e| e.profile)
            .unwrap_or_default()
    }

    /// Applies the operator's limits to a request for `model`: `ignore_eos`,
    /// the node-wide `--max-tokens-limit` (a larger `max_tokens` is a 400),
    /// then the model's `max_tokens` policy ([`crate::models::profile::MaxTokens::cap`]:
    /// its default when the request has none, a larger request clamped to its
    /// maximum). Every request leaves with a `max_tokens`.
    ///
    /// # Errors
    /// A 400 naming the parameter that exceeds them.
    pub fn check_limits(
        &self,
        model: &str,
        params: &mut llm_node_protocol::SamplingParams,
    ) -> Result<(), ApiError> {
        if params.ignore_eos && !self.limits.allow_ignore_eos {
            return Err(ApiError::invalid(
                "ignore_eos",
                "ignore_eos is disabled on this node (the operator can allow it with --allow-ignore-eos)",
            ));
        }
        let limit = self.limits.max_tokens;
        if let Some(n) = params.max_tokens.filter(|n| limit > 0 && *n > limit) {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens is at most {limit} on this node, got {n}"),
            ));
        }
        let cap = self.profile(model).max_tokens.cap(params.max_tokens);
        params.max_tokens = Some(match limit {
            0 => cap,
            _ => cap.min(limit),
        });
        Ok(())
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
        // Admission and a cold load, as a span of its own when spans are exported.
        let span = match crate::otel::enabled() {
            true => tracing::info_span!("model_acquire", model),
            false => tracing::Span::none(),
        };
        let lease = self.models.acquire(model).instrument(span).await?;
        Ok((lease.model().to_string(), lease))
    }
}

/// Whether the access middleware ([`super::access`]) admitted this request to
/// an admin route (`/admin`, the store's pull and delete): it checked the admin
/// key, or the loopback client of a node without one.
///
/// It checks the middleware's mark, so a route reached without the middleware
/// (or its policy) refuses: fails closed.
///
/// # Errors
/// [`ApiError::Unauthorized`] when the request was not admitted as admin.
pub fn authorize(req: &HttpRequest, _state: &AppState) -> Result<(), ApiError> {
    match req.extensions().get::<Admitted>() {
        Some(Admitted {
            class: Class::Admin,
        }) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}
