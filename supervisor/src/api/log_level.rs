//! `GET|PUT /admin/log-level`: the node's log filter, read and changed at run
//! time (an admin route: see [`super::access`]).
//!
//! `PUT {"level": "debug,llm_node=trace"}` (`RUST_LOG` syntax) swaps the filter
//! of the supervisor's subscriber ([`crate::logging::set_level`]) and answers
//! `{"level": …}`; an invalid filter is a 400 naming `level`. The same filter
//! goes to every worker (protocol `SetLogLevel`), running or started later, so
//! a worker's own lines (`trace=…` at debug) follow it; the lines the
//! supervisor re-emits pass its new filter too.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::state::{authorize, AppState};
use crate::logging::{self, LogError};

#[derive(Debug, Deserialize)]
pub struct LevelBody {
    level: String,
}

/// `GET /admin/log-level` → `{"level": "info"}`.
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    Ok(HttpResponse::Ok().json(json!({"level": logging::level()})))
}

/// `PUT /admin/log-level {"level": "…"}`.
pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LevelBody>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    match logging::set_level(&body.level) {
        Ok(()) => {
            state.models.set_worker_log_level(body.level.trim()).await;
            Ok(HttpResponse::Ok().json(json!({"level": logging::level()})))
        }
        Err(e @ LogError::BadLevel { .. }) => Err(ApiError::invalid("level", e.to_string())),
        Err(e) => {
            tracing::error!("cannot change the log level: {e}");
            Err(ApiError::Conflict(e.to_string()))
        }
    }
}
