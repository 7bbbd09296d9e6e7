//! A stand-in for llm-router written from `shared/router-contract.md`, on
//! loopback: registration with the synchronous `/v1/models` probe and token
//! rotation (§1), `X-Agent-Token` heartbeats with 401/404 (§2.1), disconnect
//! (§2.2), task progress with an integer `speed` (§4.3), the API-keyed
//! `/v1/models` (§4.1), and the auto-distribution `/pull`s after registration
//! (§1.2 step 6). It also serves model files (`/files/NAME`, with `Range`,
//! optional slowness and one dropped connection) and can misbehave: answer
//! 5xx, answer slowly, answer garbage, or drop every connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};

/// How the HTTP router answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Normal,
    /// Every request gets 503.
    Error5xx,
    /// Every request waits this long before a normal answer.
    Slow(Duration),
    /// Every request gets 200 with a body that is not JSON.
    Garbage,
}

/// What was received at registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub body: Value,
    /// The node's `/v1/models` as probed before replying; `Err` if the probe failed.
    pub probe: Result<Value, String>,
    pub node_id: String,
    pub token: String,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub token: Option<String>,
    pub body: Value,
    pub status: u16,
}

/// A file served under `/files/{name}`.
#[derive(Debug, Clone, Default)]
pub struct ServedFile {
    pub data: Vec<u8>,
    /// Bytes per chunk and pause between chunks (slow downloads).
    pub chunk: usize,
    pub chunk_delay: Duration,
    /// Break the connection after this many bytes, once.
    pub drop_once_after: Option<usize>,
}

#[derive(Default)]
pub struct State {
    pub mode: Option<Mode>,
    pub registrations: Vec<Registration>,
    pub heartbeats: Vec<Heartbeat>,
    /// (task id, body)
    pub progress: Vec<(String, Value)>,
    pub disconnects: Vec<String>,
    /// (model, status of the node's answer)
    pub auto_pulls: Vec<(String, u16)>,
    /// Auto-distribute `gpt-oss:20b` with null sources after each registration, as the router does.
    pub auto_distribute: bool,
    /// machine_name:runtime_port → node id
    nodes: HashMap<String, String>,
    /// current token → node id
    tokens: HashMap<String, String>,
    pub files: HashMap<String, ServedFile>,
    /// `Range` headers seen on `/files/*`.
    pub ranges: Vec<String>,
    /// `/v1/models` entries and the API key it requires.
    pub models: Vec<Value>,
    pub api_key: Option<String>,
}

impl State {
    /// Forgets every node and token, as a router with a fresh database does.
    pub fn forget_nodes(&mut self) {
        self.nodes.clear();
        self.tokens.clear();
    }

    /// Invalidates every token (as re-registration by another process would).
    pub fn revoke_tokens(&mut self) {
        self.tokens.clear();
    }

    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.values().cloned().collect()
    }
}

type Shared = Arc<Mutex<State>>;

enum Running {
    Http(ServerHandle),
    Raw(tokio::task::JoinHandle<()>),
}

/// The fake router. Must be used inside an actix `System`.
pub struct FakeRouter {
    pub port: u16,
    pub state: Shared,
    running: Option<Running>,
}

impl FakeRouter {
    /// Serves on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Shared = Arc::new(Mutex::new(State {
            auto_distribute: true,
            ..State::default()
        }));
        let mut router = Self {
            port,
            state,
            running: None,
        };
        router.serve_http(listener);
        router
    }

    /// A router that will listen on `port`, not started yet.
    pub fn stopped_on(port: u16) -> Self {
        Self {
            port,
            state: Arc::new(Mutex::new(State {
                auto_distribute: true,
                ..State::default()
            })),
            running: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = Some(mode);
    }

    /// (Re)starts the HTTP router on its port.
    pub fn start_http(&mut self) {
        let listener = bind_retrying(self.port);
        self.serve_http(listener);
    }

    fn serve_http(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/api/nodes", web::post().to(register))
                .route("/api/health", web::post().to(health))
                .route("/api/nodes/{id}/disconnect", web::post().to(disconnect))
                .route("/api/tasks/{id}/progress", web::post().to(progress))
                .route("/v1/models", web::get().to(models))
                .route("/files/{name}", web::get().to(file))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .unwrap()
        .run();
        self.running = Some(Running::Http(server.handle()));
        actix_rt::spawn(server);
    }

    /// Replaces the router with a TCP listener that accepts and then, per `garbage`,
    /// writes junk that is not HTTP or just closes the connection.
    pub fn start_raw(&mut self, garbage: bool) {
        let listener = bind_retrying(self.port);
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let task = actix_rt::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                if garbage {
                    use tokio::io::AsyncWriteExt;
                    let _ = socket
                        .write_all(b"\x00\x01 not http at all \xff\r\n\r\n")
                        .await;
                }
                drop(socket);
            }
        });
        self.running = Some(Running::Raw(task));
    }

    /// Stops listening (the port is closed afterwards).
    pub async fn stop(&mut self) {
        match self.running.take() {
            Some(Running::Http(handle)) => handle.stop(false).await,
            Some(Running::Raw(task)) => {
                task.abort();
                let _ = task.await;
            }
            None => {}
        }
    }

    pub fn registrations(&self) -> Vec<Registration> {
        self.state().registrations.clone()
    }

    /// Heartbeats the router accepted (200).
    pub fn accepted_heartbeats(&self) -> Vec<Heartbeat> {
        self.state()
            .heartbeats
            .iter()
            .filter(|h| h.status == 200)
            .cloned()
            .collect()
    }

    pub fn progress_of(&self, task: &str) -> Vec<Value> {
        self.state()
            .progress
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// Binds `port` on loopback, retrying briefly while the previous server lets go of it.
fn bind_retrying(port: u16) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot bind 127.0.0.1:{port}");
}

/// Applies the misbehaviour mode; `Some(response)` replaces the normal answer.
async fn misbehave(state: &Shared) -> Option<HttpResponse> {
    let mode = state.lock().unwrap().mode.unwrap_or(Mode::Normal);
    match mode {
        Mode::Normal => None,
        Mode::Error5xx => Some(HttpResponse::ServiceUnavailable().body("upstream sad")),
        Mode::Garbage => Some(
            HttpResponse::Ok()
                .content_type("application/json")
                .body("<html>{{{ definitely not json"),
        ),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

fn error(status: actix_web::http::StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

/// §1: validation, 403 GPU gate, synchronous probe, token rotation, 201/200.
async fn register(state: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return HttpResponse::UnprocessableEntity().body(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            ))
        }
    };
    for field in [
        "machine_name",
        "ip_address",
        "runtime_version",
        "runtime_port",
        "gpu_available",
    ] {
        if body.get(field).is_none() {
            return HttpResponse::UnprocessableEntity().body(format!(
                "Failed to deserialize the JSON body into the target type: missing field `{field}`"
            ));
        }
    }
    let Ok(ip) = body["ip_address"]
        .as_str()
        .unwrap_or("")
        .parse::<std::net::IpAddr>()
    else {
        return HttpResponse::UnprocessableEntity().body("invalid IP address syntax");
    };
    let forbidden = actix_web::http::StatusCode::FORBIDDEN;
    if body["gpu_available"] != json!(true) {
        return error(forbidden, "Validation error: GPU hardware is required for agent registration. gpu_available must be true.".into());
    }
    let devices = body["gpu_devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        return error(forbidden, "Validation error: GPU hardware is required for agent registration. No GPU devices detected in gpu_devices array.".into());
    }
    if devices.iter().any(|d| {
        d["model"].as_str().is_none_or(|m| m.trim().is_empty())
            || d["count"].as_u64().unwrap_or(0) == 0
    }) {
        return error(forbidden, "Validation error: GPU hardware is required for agent registration. Invalid GPU device information (empty model or zero count).".into());
    }
    let runtime_port = body["runtime_port"].as_u64().unwrap_or(0) as u16;
    let api_port = runtime_port as u32 + 1;
    // The synchronous probe, no auth, before replying.
    let probe_url = format!("http://{ip}:{api_port}/v1/models");
    let probe = match reqwest::get(&probe_url).await {
        Ok(resp) if resp.status().is_success() => resp
            .json::<Value>()
            .await
            .map_err(|e| format!("not JSON: {e}")),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(e) => Err(e.to_string()),
    };
    let key = format!(
        "{}:{runtime_port}",
        body["machine_name"].as_str().unwrap_or("")
    );
    let token = format!("agt_{}", uuid::Uuid::new_v4());
    let (node_id, status) = {
        let mut s = state.lock().unwrap();
        let existing = s.nodes.get(&key).cloned();
        let node_id = existing
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if probe.is_ok() {
            s.nodes.insert(key, node_id.clone());
            s.tokens.retain(|_, id| *id != node_id);
            s.tokens.insert(token.clone(), node_id.clone());
        }
        let status = if existing.is_some() { 200 } else { 201 };
        s.registrations.push(Registration {
            body: body.clone(),
            probe: probe.clone(),
            node_id: node_id.clone(),
            token: token.clone(),
            status: if probe.is_ok() { status } else { 500 },
        });
        (node_id, status)
    };
    if let Err(e) = probe {
        return error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal error: Node API not reachable at {probe_url}: {e}"),
        );
    }
    if state.lock().unwrap().auto_distribute {
        let state = state.get_ref().clone();
        let pull_url = format!("http://{ip}:{api_port}/pull");
        actix_rt::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let body = json!({"model": "gpt-oss:20b", "task_id": uuid::Uuid::new_v4().to_string(),
                              "path": null, "download_url": null});
            let status = match reqwest::Client::new()
                .post(&pull_url)
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            state
                .lock()
                .unwrap()
                .auto_pulls
                .push(("gpt-oss:20b".into(), status));
        });
    }
    let reply = json!({"node_id": node_id, "status": if status == 201 {"registered"} else {"updated"},
        "agent_api_port": api_port, "auto_distributed_model": "gpt-oss:20b",
        "download_task_id": uuid::Uuid::new_v4().to_string(), "agent_token": token});
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(reply)
}

/// §2.1: token check, node check, literal `null` on success.
async fn health(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let token = req
        .headers()
        .get("x-agent-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    let (status, response) = match &token {
        None => (
            401,
            HttpResponse::Unauthorized()
                .content_type("text/plain")
                .body("Missing X-Agent-Token header"),
        ),
        Some(t) if !s.tokens.contains_key(t) => (
            401,
            HttpResponse::Unauthorized()
                .content_type("text/plain")
                .body("Invalid agent token"),
        ),
        Some(_) => {
            let id = body["node_id"].as_str().unwrap_or("").to_string();
            let missing = ["cpu_usage", "memory_usage", "active_requests"]
                .into_iter()
                .find(|f| !body[*f].is_number());
            if let Some(f) = missing {
                (
                    422,
                    HttpResponse::UnprocessableEntity().body(format!("missing field `{f}`")),
                )
            } else if body["active_requests"].as_u64().is_none()
                || body["ready_models"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v.as_u64().is_none_or(|n| n > 255)))
            {
                (
                    422,
                    HttpResponse::UnprocessableEntity().body("invalid type"),
                )
            } else if !s.nodes.values().any(|n| *n == id) {
                (
                    404,
                    error(
                        actix_web::http::StatusCode::NOT_FOUND,
                        format!("Node not found: {id}"),
                    ),
                )
            } else {
                (
                    200,
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("null"),
                )
            }
        }
    };
    s.heartbeats.push(Heartbeat {
        token,
        body,
        status,
    });
    response
}

async fn disconnect(state: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    state.lock().unwrap().disconnects.push(id.into_inner());
    HttpResponse::Accepted().finish()
}

/// §4.3: `progress` f32, `speed` an integer or the request is a 422.
async fn progress(
    state: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let speed_ok = body.get("speed").is_none_or(|s| s.is_null() || s.is_u64());
    if !body["progress"].is_number() || !speed_ok {
        return HttpResponse::UnprocessableEntity().body("invalid progress body");
    }
    state.lock().unwrap().progress.push((id.into_inner(), body));
    HttpResponse::Ok().finish()
}

/// §4.1: API key required.
async fn models(state: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Some(r) = misbehave(&state).await {
        return r;
    }
    let s = state.lock().unwrap();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
    if s.api_key.is_none() || auth != s.api_key.as_deref() {
        return HttpResponse::Unauthorized()
            .content_type("text/plain")
            .body("Missing X-API-Key header or Authorization header");
    }
    HttpResponse::Ok().json(json!({"object": "list", "data": s.models}))
}

/// Model files with `Range: bytes=N-`, slow chunks and one broken connection.
async fn file(state: web::Data<Shared>, name: web::Path<String>, req: HttpRequest) -> HttpResponse {
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let served = {
        let mut s = state.lock().unwrap();
        if let Some(r) = &range {
            s.ranges.push(r.clone());
        }
        let Some(file) = s.files.get_mut(name.as_str()) else {
            return HttpResponse::NotFound().finish();
        };
        let served = file.clone();
        file.drop_once_after = None;
        served
    };
    let len = served.data.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if start >= len && len > 0 {
        return HttpResponse::RangeNotSatisfiable()
            .insert_header(("content-range", format!("bytes */{len}")))
            .finish();
    }
    let mut resp = if range.is_some() {
        let mut r = HttpResponse::PartialContent();
        r.insert_header(("content-range", format!("bytes {start}-{}/{len}", len - 1)));
        r
    } else {
        HttpResponse::Ok()
    };
    let data = Bytes::from(served.data[start..].to_vec());
    let chunk = served.chunk.max(1);
    let delay = served.chunk_delay;
    let drop_after = served.drop_once_after;
    let body = async_stream(data, chunk, delay, drop_after);
    resp.no_chunking(len as u64 - start as u64)
        .content_type("application/octet-stream")
        .streaming(body)
}

fn async_stream(
    data: Bytes,
    chunk: usize,
    delay: Duration,
    drop_after: Option<usize>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |sent| {
        let data = data.clone();
        async move {
            if sent >= data.len() {
                return None;
            }
            if drop_after.is_some_and(|n| sent >= n) {
                return Some((Err(std::io::Error::other("dropped on purpose")), usize::MAX));
            }
            if sent > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let end = (sent + chunk).min(data.len());
            Some((Ok(data.slice(sent..end)), end))
        }
    })
}
