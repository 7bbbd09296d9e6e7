//! The admin API under `/admin`, plus `/metrics` and readiness.
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/models` | every model: state, pid, GPUs, uptime, restarts, last exit, in flight, queued, memory, offload (backend, layers, device bytes, llama.cpp's allocations) |
//! | `POST /admin/models/{id}/load` | load (body `{"gpus":[0]}` optional), waits until ready |
//! | `POST /admin/models/{id}/unload[?force=true]` | drain, then stop (force: kill now) |
//! | `POST /admin/models/{id}/restart[?force=true]` | drain, stop, start; waits until ready |
//! | `PUT /admin/models/{id}/gpus` | pin to `{"gpus":[..]}` from the next start on |
//! | `GET /admin/gpus` | detected (or simulated) GPUs, the worker's backends, and a warning when GPUs are seen but the worker is CPU-only |
//! | `POST /admin/reload` | read the models configuration again and apply it (400 with `file:line: field: …` for a bad file; nothing changes then) |
//!
//! With an admin key configured, every `/admin` call needs it as
//! `Authorization: Bearer KEY` or `X-Admin-Key: KEY` (401 otherwise).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::{authorize, AppState};
use crate::models::{ModelEntry, ModelState, ModelStatus};

fn state_detail(state: &ModelState) -> Option<&str> {
    match state {
        ModelState::Failed { reason } | ModelState::Backoff { reason, .. } => Some(reason),
        _ => None,
    }
}

/// One model as `/admin/models` shows it.
pub fn status_json(entry: &ModelEntry, s: &ModelStatus) -> Value {
    json!({
        "id": entry.spec.name,
        "path": entry.spec.path,
        "state": s.state.label(),
        "detail": state_detail(&s.state),
        "pid": s.pid,
        "gpus": s.gpus,
        "preload": entry.preload,
        "aliases": entry.profile.aliases,
        "uptime_secs": s.uptime.map(|u| u.as_secs()),
        "idle_secs": s.idle_for.as_secs(),
        "restarts": s.restarts,
        "last_exit": s.last_exit,
        "in_flight": s.in_flight,
        "queued": s.queued(),
        "rss_bytes": s.rss_bytes,
        "context": s.info.as_ref().map(|i| i.ctx_per_slot),
        "parallel": s.info.as_ref().map(|i| i.parallel),
        "offload": s.info.as_ref().map(|i| offload_json(&i.offload)),
    })
}

/// The memory estimate placement uses (from the GGUF header and the node's
/// settings), by place and kind; `null` when the header cannot be read.
fn estimate_json(e: Option<crate::policy::memory::Estimate>) -> Value {
    let Some(e) = e else { return Value::Null };
    json!({
        "device_bytes": e.device(),
        "host_bytes": e.host(),
        "weights_bytes": e.weights_device + e.weights_host,
        "kv_bytes": e.kv_device + e.kv_host,
        "compute_bytes": e.compute_device + e.compute_host + e.output_host,
    })
}

/// Where a loaded model runs, as its worker reported it.
fn offload_json(o: &llm_node_protocol::Offload) -> Value {
    json!({
        "backend": o.backend,
        "backends": o.backends,
        "devices": o.devices,
        "layers_offloaded": o.layers_offloaded,
        "layers_total": o.layers_total,
        "device_bytes": o.device_bytes,
        "allocated": {
            "weights": o.allocated.weights,
            "kv": o.allocated.kv,
            "compute": o.allocated.compute,
            "output": o.allocated.output,
        },
    })
}

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let models: Vec<Value> = state
        .models
        .statuses()
        .await
        .iter()
        .map(|(e, s)| {
            let mut m = status_json(e, s);
            m["estimate"] = estimate_json(state.models.estimate(e));
            if let Some(w) = state.models.worker_config(e) {
                m["kv_cache"] = json!({
                    "type_k": w.cache_type_k.name(),
                    "type_v": w.cache_type_v.name(),
                });
                m["split_mode"] = json!(w.split_mode.name());
            }
            m
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"models": models})))
}

/// `POST /admin/reload`: what the reload added, restarted, updated and removed.
pub async fn reload(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let report = state.models.reload().await?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn gpus(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let probe = state.models.gpu_probe();
    let devices = probe.devices();
    let backends = &state.worker_backends;
    Ok(HttpResponse::Ok().json(json!({
        "probe": probe.kind(),
        "gpus": devices,
        "worker_backends": backends,
        "warning": crate::gpu::worker_mismatch(&devices, backends.as_deref()),
    })))
}

fn entry(state: &AppState, id: &str) -> Result<ModelEntry, ApiError> {
    Ok(state.models.entry(id)?)
}

async fn current(state: &AppState, entry: &ModelEntry) -> Result<HttpResponse, ApiError> {
    let status = state.models.status(entry).await?;
    Ok(HttpResponse::Ok().json(status_json(entry, &status)))
}

/// Waits for a start to settle; 503 with the reason when it did not become ready.
async fn settled(state: &AppState, entry: &ModelEntry) -> Result<HttpResponse, ApiError> {
    state.models.wait_settled(entry).await?;
    current(state, entry).await
}

#[derive(Debug, Default, Deserialize)]
pub struct GpusBody {
    pub gpus: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
pub struct ForceQuery {
    #[serde(default)]
    pub force: bool,
}

pub async fn load(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Option<web::Json<GpusBody>>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let entry = entry(&state, &id)?;
    if let Some(gpus) = body.and_then(|b| b.into_inner().gpus) {
        state.models.set_gpus(&entry, gpus).await?;
    }
    state.models.load(&entry).await?;
    settled(&state, &entry).await
}

pub async fn unload(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ForceQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let entry = entry(&state, &id)?;
    state.models.unload(&entry, query.force).await?;
    current(&state, &entry).await
}

pub async fn restart(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ForceQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let entry = entry(&state, &id)?;
    state.models.restart(&entry, query.force).await?;
    settled(&state, &entry).await
}

pub async fn pin(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<GpusBody>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let entry = entry(&state, &id)?;
    let gpus = body.into_inner().gpus.unwrap_or_default();
    let known: Vec<u32> = state
        .models
        .gpu_probe()
        .devices()
        .iter()
        .map(|d| d.index)
        .collect();
    if let Some(bad) = gpus.iter().find(|g| !known.contains(g)) {
        return Err(ApiError::invalid(
            "gpus",
            format!("no GPU with index {bad}"),
        ));
    }
    state.models.set_gpus(&entry, gpus).await?;
    current(&state, &entry).await
}

/// Prometheus text format; live gauges are refreshed first: in flight and
/// queue depth from the actors, GPU memory from the probe (no GPU, no
/// series), the store's disk space from `statvfs`.
pub async fn metrics(
    state: web::Data<AppState>,
    store: Option<web::Data<crate::store::Service>>,
) -> HttpResponse {
    let m = state.models.metrics();
    m.set_gpus(&state.models.gpu_probe().devices());
    if let Some(store) = store {
        let root = store.store.layout().root.clone();
        match crate::store::download::disk_bytes(&root) {
            Ok((free, total)) => m.set_store_space(&root.to_string_lossy(), free, total),
            Err(e) => tracing::warn!("cannot measure the store's disk ({}): {e}", root.display()),
        }
    }
    for (entry, s) in state.models.statuses().await {
        let name = entry.spec.name.as_str();
        m.in_flight
            .with_label_values(&[name])
            .set(s.in_flight as i64);
        m.queue_depth
            .with_label_values(&[name])
            .set(s.queued() as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render())
}

/// Readiness: 200 once every preloaded model is ready and the node admits
/// requests; 503 while starting or draining.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    preload(&state).await
}

/// Startup probe: 503 until every preloaded model has been ready once, then
/// 200 for good (also while draining, so an orchestrator never restarts a
/// node that is finishing its requests).
pub async fn startup(state: web::Data<AppState>) -> HttpResponse {
    if state.has_started() {
        return HttpResponse::Ok().json(json!({"status": "started"}));
    }
    preload(&state).await
}

/// 200 when every preloaded model is ready (and marks the node started), else
/// 503 naming those still waiting.
async fn preload(state: &AppState) -> HttpResponse {
    let statuses = state.models.statuses().await;
    let waiting: Vec<&str> = statuses
        .iter()
        .filter(|(e, s)| e.preload && s.state != ModelState::Ready)
        .map(|(e, _)| e.spec.name.as_str())
        .collect();
    if waiting.is_empty() {
        state.mark_started();
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "starting", "waiting": waiting}))
    }
}
