//! `GET|PUT /admin/log-level`: the node's log filter, read and changed at run
//! time (an admin route: see [`super::access`]).
//!
//! `PUT {"level": "debug,llm_node=trace"}` (`RUST_LOG` syntax) swaps the filter
//! of the supervisor's subscriber ([`crate::logging::set_level`]) and answers
//! `{"level": …}`; an invalid filter is a 400 naming `level`. Worker processes
//! keep the level they started with (see `docs/operations.md`); their lines,
//! re-emitted by the supervisor, pass the new filter.

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
        Ok(()) => Ok(HttpResponse::Ok().json(json!({"level": logging::level()}))),
        Err(e @ LogError::BadLevel { .. }) => Err(ApiError::invalid("level", e.to_string())),
        Err(e) => {
            tracing::error!("cannot change the log level: {e}");
            Err(ApiError::Conflict(e.to_string()))
        }
    }
}
