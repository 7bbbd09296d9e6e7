//! Ollama's routes about models other than pulling and listing the store
//! (those are in [`super::ollama`]):
//!
//! - `POST /api/show {"model"}`: `details`, `model_info`, `template`,
//!   `parameters`, `system`, `capabilities`, `modelfile`, `modified_at`, from the GGUF
//!   header ([`crate::store::gguf`]) and the store entry, rendered by
//!   [`super::ollama_info`]. Any served model, stored or configured by path.
//! - `GET /api/ps`: the loaded models (`name, model, size, digest, details,
//!   expires_at, size_vram, context_length`).
//! - `POST /api/copy {"source", "destination"}`: a new name for a stored model,
//!   served at once (200 with no body, as Ollama answers).
//! - `GET /api/version`: [`VERSION`].
//! - `GET /` and `HEAD /`: `Ollama is running`, which clients probe.
//!
//! Names resolve as everywhere ([`crate::models::names`]): `tiny` is `tiny:latest`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::ollama_info::{capabilities, details, model_info, parameters_text, rfc3339};
use super::response::unix_now;
use super::state::{authorize, AppState};
use crate::models::{KeepAlive, ModelEntry, ModelState};
use crate::store::gguf::{self, Header};
use crate::store::{sha256_hex, LocalModel, ModelRef, Service};

/// The version `/api/version` reports: an Ollama version whose API this node
/// serves (clients compare it against the minimum they need), with the node's
/// own version as semver build metadata, which version comparisons ignore.
pub const VERSION: &str = concat!("0.12.6+llm-node.", env!("CARGO_PKG_VERSION"));

/// What `GET /` answers, as Ollama does.
pub const RUNNING: &str = "Ollama is running";

/// `GET /` and `HEAD /`.
pub async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(RUNNING)
}

/// `HEAD /`: the same answer without a body.
pub async fn root_head() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .finish()
}

/// `GET /api/version`.
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "version": VERSION }))
}

#[derive(Debug, Deserialize)]
struct ShowBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `model` (or the older `name`) of a body.
fn model_of(bytes: &[u8]) -> Result<String, ApiError> {
    let body: ShowBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("model", format!("invalid JSON body: {e}")))?;
    body.model
        .or(body.name)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model", "`model` is required"))
}

/// What the node knows of a served model: its entry, header and store entry.
struct Described {
    entry: ModelEntry,
    header: Option<Header>,
    stored: Option<LocalModel>,
}

impl Described {
    async fn of(entry: ModelEntry, store: Option<&Service>) -> Self {
        let path = entry.spec.path.clone();
        let stored = store.and_then(|s| {
            let name = ModelRef::parse(&entry.spec.name).ok()?;
            s.store.find(&name).ok().flatten()
        });
        let header = match web::block(move || gguf::read(&path)).await {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::warn!(model = %entry.spec.name, "cannot read the GGUF header: {e}");
                None
            }
            Err(_) => None,
        };
        Self {
            entry,
            header,
            stored,
        }
    }

    /// The manifest's digest (hex), as Ollama reports it; empty for a model
    /// configured by path (it has no manifest).
    fn digest(&self) -> String {
        self.stored
            .as_ref()
            .map(|m| sha256_hex(&serde_json::to_vec(&m.manifest).unwrap_or_default()))
            .unwrap_or_default()
    }

    fn size(&self) -> u64 {
        match &self.stored {
            Some(m) => m.manifest.size(),
            None => std::fs::metadata(&self.entry.spec.path).map_or(0, |m| m.len()),
        }
    }

    fn modified(&self) -> Option<String> {
        let secs = match &self.stored {
            Some(m) => m.modified,
            None => std::fs::metadata(&self.entry.spec.path)
                .and_then(|m| m.modified())
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs(),
        };
        rfc3339(secs)
    }

    /// The template: the store's template layer (Ollama's own syntax), else the GGUF's.
    fn template(&self) -> String {
        self.stored
            .as_ref()
            .and_then(|m| m.template.clone())
            .or_else(|| {
                self.header
                    .as_ref()
                    .and_then(Header::chat_template)
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }
}

/// `POST /api/show`.
pub async fn show(
    state: web::Data<AppState>,
    store: Option<web::Data<Service>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = model_of(&body)?;
    let entry = state.models.entry(&name)?;
    let d = Described::of(entry, store.as_ref().map(|s| s.get_ref())).await;
    let template = d.template();
    let parameters = parameters_text(d.stored.as_ref().and_then(|m| m.params.as_ref()));
    let mut modelfile = format!(
        "# Modelfile generated by llm-node\nFROM {}\n",
        d.entry.spec.path.display()
    );
    for line in parameters.lines() {
        modelfile.push_str(&format!(
            "PARAMETER {}\n",
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    let mut body = json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": details(d.header.as_ref()),
        "model_info": d.header.as_ref().map_or(json!({}), model_info),
        "capabilities": capabilities(d.header.as_ref(), &template),
        "modified_at": d.modified(),
    });
    // Ollama sends `system` only when the model has one.
    if let Some(system) = d.stored.as_ref().and_then(|m| m.system.as_ref()) {
        body["system"] = json!(system);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/ps`: models with a ready worker.
pub async fn ps(
    state: web::Data<AppState>,
    store: Option<web::Data<Service>>,
) -> Result<HttpResponse, ApiError> {
    let mut models = Vec::new();
    for (entry, status) in state.models.statuses().await {
        let Some(info) = status.info.filter(|_| status.state == ModelState::Ready) else {
            continue;
        };
        // A client's `keep_alive` replaces the configured idle TTL.
        let ttl = match status.keep_alive {
            Some(KeepAlive::Forever) => std::time::Duration::ZERO,
            Some(KeepAlive::For(d)) => d,
            None => state.models.supervision().ttl(&entry.spec.key()),
        };
        let expires_at = match ttl.is_zero() {
            true => None,
            false => {
                let left = match status.in_flight {
                    0 => ttl.saturating_sub(status.idle_for),
                    _ => ttl,
                };
                rfc3339(unix_now() + left.as_secs())
            }
        };
        let d = Described::of(entry, store.as_ref().map(|s| s.get_ref())).await;
        let size = match info.model_size_bytes {
            0 => d.size(),
            n => n,
        };
        let size_vram = if status.gpus.is_empty() { 0 } else { size };
        models.push(json!({
            "name": d.entry.spec.name,
            "model": d.entry.spec.name,
            "size": size,
            "digest": d.digest(),
            "details": details(d.header.as_ref()),
            "expires_at": expires_at,
            "size_vram": size_vram,
            "context_length": info.ctx_per_slot,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "models": models })))
}

#[derive(Debug, Deserialize)]
struct CopyBody {
    source: Option<String>,
    destination: Option<String>,
}

/// `POST /api/copy`.
pub async fn copy(
    req: HttpRequest,
    state: web::Data<AppState>,
    store: web::Data<Service>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body: CopyBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("source", format!("invalid JSON body: {e}")))?;
    let name = |value: Option<String>, field: &str| -> Result<ModelRef, ApiError> {
        let value = value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ApiError::invalid(field, format!("`{field}` is required")))?;
        ModelRef::parse(value.trim()).map_err(|e| ApiError::invalid(field, e.to_string()))
    };
    let source = name(body.source, "source")?;
    let destination = name(body.destination, "destination")?;
    store
        .copy(&source, &destination)
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok(HttpResponse::Ok().finish())
}

/// `Value` of a model for `/api/tags`: name, times, size, digest, details.
pub async fn tag(model: &LocalModel) -> Value {
    let path = model.gguf.clone();
    let header = web::block(move || gguf::read(&path))
        .await
        .ok()
        .and_then(Result::ok);
    let manifest = serde_json::to_vec(&model.manifest).unwrap_or_default();
    json!({
        "name": model.name.to_string(),
        "model": model.name.to_string(),
        "modified_at": rfc3339(model.modified),
        "size": model.manifest.size(),
        "digest": sha256_hex(&manifest),
        "details": details(header.as_ref()),
    })
}

/// `Value` of a served model that is not in the store (configured by path)
/// for `/api/tags`: the file's size and time; no digest (it has no manifest).
pub async fn configured_tag(entry: ModelEntry) -> Value {
    let d = Described::of(entry, None).await;
    json!({
        "name": d.entry.spec.name,
        "model": d.entry.spec.name,
        "modified_at": d.modified(),
        "size": d.size(),
        "digest": d.digest(),
        "details": details(d.header.as_ref()),
    })
}
