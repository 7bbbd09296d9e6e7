//! Ollama's model-management routes, so Ollama clients and scripts work:
//!
//! - `POST /api/pull {"model"|"name", "stream"?}`: NDJSON progress lines
//!   `{status, digest?, total?, completed?}` ending with `{"status":"success"}`,
//!   or `{"error": "..."}` when the pull fails after the stream began; with
//!   `"stream": false` one JSON answer. The model is served at once.
//! - `GET /api/tags`: the stored models.
//! - `DELETE /api/delete {"model"|"name"}`: stop serving and remove (409 while in use).
//!
//! Requests that are wrong (a bad name, a repo that cannot give a model) are
//! answered before any streaming, with the OpenAI error body. When the node has
//! an admin key, pull and delete need it (as `/admin` does).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::service::{PullEvent, Service};
use super::{ModelRef, StoreError};
use crate::api::error::ApiError;
use crate::app::AppState;

/// Registers the routes; they need `web::Data<Service>` in the app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/pull").route(web::post().to(pull)))
        .service(web::resource("/api/tags").route(web::get().to(tags)))
        .service(web::resource("/api/delete").route(web::delete().to(delete)));
}

#[derive(Debug, Deserialize)]
struct NameBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

impl NameBody {
    fn parse(bytes: &[u8]) -> Result<(ModelRef, bool), ApiError> {
        let body: NameBody = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid("model", format!("invalid JSON body: {e}")))?;
        let name = body
            .model
            .or(body.name)
            .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
        let name =
            ModelRef::parse(name.trim()).map_err(|e| ApiError::invalid("model", e.to_string()))?;
        Ok((name, body.stream.unwrap_or(true)))
    }
}

/// The OpenAI error body for a store failure.
fn store_error(e: &StoreError) -> HttpResponse {
    let (status, kind, code) = match e {
        StoreError::NotFound(_)
        | StoreError::Registry(super::registry_client::RegistryError::NotFound(_)) => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
        ),
        StoreError::InUse(_) => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            "model_in_use",
        ),
        StoreError::ReadOnly { .. } => (
            StatusCode::CONFLICT,
            "invalid_request_error",
            "read_only_store",
        ),
        StoreError::NoSpace { .. } => {
            (StatusCode::INSUFFICIENT_STORAGE, "server_error", "no_space")
        }
        e if e.is_client_error() => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_model",
        ),
        _ => (StatusCode::BAD_GATEWAY, "server_error", "pull_failed"),
    };
    HttpResponse::build(status).json(json!({"error": {
        "message": e.to_string(), "type": kind, "param": "model", "code": code,
    }}))
}

fn authorize(req: &HttpRequest) -> Result<(), ApiError> {
    match req.app_data::<web::Data<AppState>>() {
        Some(state) => crate::api::admin::authorize(req, state),
        None => Ok(()),
    }
}

fn service(req: &HttpRequest) -> Result<web::Data<Service>, ApiError> {
    req.app_data::<web::Data<Service>>()
        .cloned()
        .ok_or(ApiError::Internal)
}

async fn pull(req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    authorize(&req)?;
    let (name, stream) = NameBody::parse(&body)?;
    let mut events = service(&req)?.submit(name);
    if !stream {
        while let Some(event) = events.recv().await {
            if let PullEvent::Done(result) = event {
                return Ok(match result {
                    Ok(id) => HttpResponse::Ok().json(json!({"status": "success", "model": id})),
                    Err(e) => store_error(&e),
                });
            }
        }
        return Err(ApiError::Internal);
    }
    // Hold the response while the manifest or file list is fetched, so a request
    // that cannot work (unknown model, bad repo, missing converter packages)
    // still gets a proper status and error body.
    let mut held = std::collections::VecDeque::new();
    loop {
        match events.recv().await {
            None => return Err(ApiError::Internal),
            Some(PullEvent::Done(Err(e))) => return Ok(store_error(&e)),
            Some(PullEvent::Progress(p)) if p.status == "pulling manifest" => {
                held.push_back(PullEvent::Progress(p))
            }
            Some(other) => {
                held.push_back(other);
                break;
            }
        }
    }
    let lines = futures_util::stream::unfold(
        (held, events, false),
        |(mut held, mut rx, over)| async move {
            if over {
                return None;
            }
            let event = match held.pop_front() {
                Some(e) => e,
                None => rx.recv().await?,
            };
            let (line, over) = match event {
                PullEvent::Progress(p) => (serde_json::to_value(p).unwrap_or(Value::Null), false),
                PullEvent::Done(Ok(_)) => {
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::new()),
                        (held, rx, true),
                    ))
                }
                PullEvent::Done(Err(e)) => (json!({"error": e.to_string()}), true),
            };
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            Some((Ok(web::Bytes::from(bytes)), (held, rx, over)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines))
}

async fn tags(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let store = service(&req)?.store.clone();
    let models = web::block(move || store.list())
        .await
        .map_err(|_| ApiError::Internal)?;
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            let manifest = serde_json::to_vec(&m.manifest).unwrap_or_default();
            let modified = time::OffsetDateTime::from_unix_timestamp(m.modified as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            json!({
                "name": m.name.to_string(),
                "model": m.name.to_string(),
                "modified_at": modified,
                "size": m.manifest.size(),
                "digest": super::download::sha256_hex(&manifest),
                "details": {"format": "gguf", "parameters": m.params},
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

async fn delete(req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    authorize(&req)?;
    let (name, _) = NameBody::parse(&body)?;
    match service(&req)?.remove(&name).await {
        Ok(()) => Ok(HttpResponse::Ok().finish()),
        Err(e) => Ok(store_error(&e)),
    }
}
