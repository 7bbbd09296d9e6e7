//! llm-router's routes on the node (contract §3.4, §3.5): `POST /pull` queues
//! a model acquisition, `GET /api/logs` returns recent log lines. Both are
//! served standalone too. `/pull` needs `web::Data<router::Member>` in the app.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::access::Access;
use super::error::ApiError;
use crate::router::{Member, PullJob, PullRequest};

/// `POST /pull`: 200 `{"status":"accepted"}` at once, acquisition in the background
/// (contract §3.4). A body without `model` (or not JSON) gets 400
/// `{"error": "..."}` ([`ApiError::RouterPull`]); a full pull queue 503
/// `{"error": "..."}` with `Retry-After` (the router only logs a non-2xx).
/// A `path` outside `--pull-path-allow` or a refused `download_url` gets 403
/// `{"error": "..."}` and nothing is queued ([`Access::check_pull`]).
pub async fn pull(
    member: web::Data<Member>,
    access: web::Data<Access>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: PullRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::RouterPull(format!("invalid body: {e}")))?;
    let job = PullJob::try_from(request)?;
    access.check_pull(&job).map_err(|e| {
        tracing::warn!(model = %job.model, "refused /pull: {e}");
        ApiError::Router(Box::new(e))
    })?;
    member
        .submit(job)
        .map_err(|e| ApiError::Router(Box::new(ApiError::from(&e))))?;
    Ok(HttpResponse::Ok().json(json!({"status": "accepted"})))
}

#[derive(serde::Deserialize)]
pub struct LogsQuery {
    tail: Option<String>,
    limit: Option<String>,
}

/// `GET /api/logs?tail=N` → `{"entries": [LogEntry…]}` (contract §3.5), oldest first.
pub async fn logs(query: web::Query<LogsQuery>) -> HttpResponse {
    let n = crate::logbuf::tail_count(query.tail.as_deref().or(query.limit.as_deref()));
    let entries = crate::logbuf::global()
        .map(|b| b.tail(n))
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({ "entries": entries }))
}
