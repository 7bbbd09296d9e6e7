//! Ollama's model-management routes, so Ollama clients and scripts work:
//!
//! - `POST /api/pull {"model"|"name", "stream"?, "insecure"?}`: NDJSON progress lines
//!   `{status, digest?, total?, completed?}` ending with `{"status":"success"}`,
//!   or `{"error": "..."}` when the pull fails after the stream began; with
//!   `"stream": false` one JSON answer. The model is served at once. With
//!   `"insecure": true` a registry named by host (`host:port/ns/name:tag`) is
//!   reached over plain HTTP, otherwise over HTTPS.
//! - `GET /api/tags`: the stored models, then the served models configured by
//!   path (`--model`, `--models-dir`), with `details` from each GGUF header.
//! - `DELETE /api/delete {"model"|"name"}`: stop serving and remove (409 while in use).
//!
//! Requests that are wrong (a bad name, a repo that cannot give a model) are
//! answered before any streaming, in Ollama's shape (see [`super::shape`]). When the node has
//! an admin key, pull and delete need it (as `/admin` does).

use std::collections::VecDeque;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::{authorize, AppState};
use crate::models::names::canonical;
use crate::store::{ModelRef, PullEvent, PullEvents, PullOrder, Service};

/// The store service, as app data: `web::Data<store::Service>`.
type Store = web::Data<Service>;

#[derive(Debug, Deserialize)]
struct NameBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    insecure: Option<bool>,
}

/// A pull or delete request, checked.
struct Named {
    name: ModelRef,
    stream: bool,
    insecure: bool,
}

impl NameBody {
    fn parse(bytes: &[u8]) -> Result<Named, ApiError> {
        let body: NameBody = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid("model", format!("invalid JSON body: {e}")))?;
        let name = body
            .model
            .or(body.name)
            .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
        let name =
            ModelRef::parse(name.trim()).map_err(|e| ApiError::invalid("model", e.to_string()))?;
        Ok(Named {
            name,
            stream: body.stream.unwrap_or(true),
            insecure: body.insecure.unwrap_or(false),
        })
    }
}

/// `POST /api/pull`.
pub async fn pull(
    req: HttpRequest,
    state: web::Data<AppState>,
    service: Store,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let Named {
        name,
        stream,
        insecure,
    } = NameBody::parse(&body)?;
    let mut events = service
        .submit(PullOrder::refresh(name).insecure(insecure))
        .map_err(|e| ApiError::from(&e))?;
    if !stream {
        return answer_once(events).await;
    }
    // Hold the response while the manifest or file list is fetched, so a request
    // that cannot work (unknown model, bad repo, missing converter packages)
    // still gets a proper status and error body.
    let mut held = VecDeque::new();
    loop {
        match events.recv().await {
            None => return Err(ApiError::Internal),
            Some(PullEvent::Done(Err(e))) => return Err(ApiError::from(&e)),
            Some(PullEvent::Progress(p)) if p.status == "pulling manifest" => {
                held.push_back(PullEvent::Progress(p))
            }
            Some(other) => {
                held.push_back(other);
                break;
            }
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(ndjson(held, events)))
}

/// `"stream": false`: one JSON answer once the pull ends.
async fn answer_once(mut events: PullEvents) -> Result<HttpResponse, ApiError> {
    while let Some(event) = events.recv().await {
        if let PullEvent::Done(result) = event {
            return match result {
                Ok(id) => Ok(HttpResponse::Ok().json(json!({"status": "success", "model": id}))),
                Err(e) => Err(ApiError::from(&e)),
            };
        }
    }
    Err(ApiError::Internal)
}

/// The NDJSON lines of a pull: `held` first, then the rest of `events`, ending
/// after `success` or with `{"error": …}`.
fn ndjson(
    held: VecDeque<PullEvent>,
    events: PullEvents,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures_util::stream::unfold(
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
                PullEvent::Done(Ok(_)) => return Some((Ok(web::Bytes::new()), (held, rx, true))),
                PullEvent::Done(Err(e)) => (json!({"error": e.public_message()}), true),
            };
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            Some((Ok(web::Bytes::from(bytes)), (held, rx, over)))
        },
    )
}

/// `GET /api/tags`: the stored models, then the served models configured by
/// path, each with details from its GGUF header, each followed by its aliases
/// ([`super::aliases`]).
pub async fn tags(state: web::Data<AppState>, service: Store) -> Result<HttpResponse, ApiError> {
    let store = service.store.clone();
    let models = web::block(move || store.list())
        .await
        .map_err(|_| ApiError::Internal)?;
    let mut list = Vec::with_capacity(models.len());
    for m in &models {
        list.push(super::ollama_models::tag(m).await);
    }
    let stored: Vec<String> = models
        .iter()
        .map(|m| canonical(&m.name.to_string()))
        .collect();
    let entries = state.models.entries();
    for entry in &entries {
        if !stored.contains(&canonical(&entry.spec.name)) {
            list.push(super::ollama_models::configured_tag(entry.clone()).await);
        }
    }
    let aliases = super::handlers::alias_table(entries.iter());
    let list = super::aliases::ollama_list(list, &aliases);
    Ok(HttpResponse::Ok().json(json!({ "models": list })))
}

/// `DELETE /api/delete`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    service: Store,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let name = NameBody::parse(&body)?.name;
    service
        .remove(&name)
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok(HttpResponse::Ok().finish())
}
