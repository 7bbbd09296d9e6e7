//! The router's HTTP API as seen from a node: one method per call the node
//! makes (contract §1, §2, §4), each with its own timeout, and the JSON bodies.
//!
//! Nothing here retries or decides; callers ([`super::session`],
//! [`super::pull`], [`super::sync`]) own the policy. Response bodies are read
//! with a size cap, so a router answering garbage or an endless body costs a
//! bounded amount of memory and time.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// Largest router response body we read (the biggest, `/v1/models`, is a few KiB).
const MAX_BODY: usize = 4 << 20;

/// The router is being asked for a registration and probes us synchronously
/// before answering (contract §1.2), so give it time.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Progress reports, disconnects and model lists.
const SHORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `POST /api/nodes` body (contract §1.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisterRequest {
    pub machine_name: String,
    pub ip_address: String,
    pub runtime_version: String,
    pub runtime_port: u16,
    pub gpu_available: bool,
    pub gpu_devices: Vec<GpuDeviceInfo>,
    pub gpu_count: u32,
    pub gpu_model: Option<String>,
}

/// One entry of `gpu_devices` (`common/src/types.rs::GpuDeviceInfo`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuDeviceInfo {
    pub model: String,
    pub count: u32,
    pub memory: Option<u64>,
}

/// What we keep from the registration reply (contract §1.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub agent_token: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// `POST /api/health` body (contract §2.1). Optional figures are sent as `null` when unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthRequest {
    pub node_id: String,
    pub cpu_usage: f32,
    pub memory_usage: f32,
    pub active_requests: u32,
    pub gpu_usage: Option<f32>,
    pub gpu_memory_usage: Option<f32>,
    pub gpu_memory_total_mb: Option<u64>,
    pub gpu_memory_used_mb: Option<u64>,
    pub gpu_temperature: Option<f32>,
    pub gpu_model_name: Option<String>,
    pub gpu_compute_capability: Option<String>,
    pub average_response_time_ms: Option<f32>,
    pub loaded_models: Vec<String>,
    pub initializing: bool,
    pub ready_models: [u8; 2],
}

/// `POST /api/tasks/{id}/progress` body (contract §4.3): `speed` must be an integer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProgressRequest {
    pub progress: f32,
    pub speed: Option<u64>,
}

/// One entry of the router's `GET /v1/models` (contract §4.1). `size` and `sha256`
/// are never sent by the router at HEAD but are honoured when present.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RouterModel {
    pub id: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub download_url: Option<String>,
    #[serde(default)]
    pub chat_template: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<RouterModel>,
}

/// Why a router call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused, reset, timed out, unresolvable.
    #[error("router unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// An answer with a non-2xx status; `body` is its (truncated) text.
    #[error("router answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// A 2xx answer we cannot use.
    #[error("router answered an unusable body: {0}")]
    Body(String),
}

impl CallError {
    /// Our token or node id is no longer known (401, 404): register again.
    pub fn needs_registration(&self) -> bool {
        matches!(
            self,
            CallError::Status {
                status: 401 | 404,
                ..
            }
        )
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        CallError::Transport(e)
    }
}

/// A client of one router.
#[derive(Clone)]
pub struct RouterClient {
    base: Url,
    http: reqwest::Client,
    api_key: Option<String>,
}

impl RouterClient {
    /// `base` is the router's URL; `http` a shared client (it owns the connection pool).
    pub fn new(base: Url, http: reqwest::Client, api_key: Option<String>) -> Self {
        Self {
            base,
            http,
            api_key,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        // `base` may carry a path prefix (`http://h/router/`): keep it.
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        url
    }

    /// `POST /api/nodes`.
    ///
    /// # Errors
    /// [`CallError`]; a 2xx reply without `node_id`/`agent_token` is [`CallError::Body`].
    pub async fn register(&self, body: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        let resp = self
            .http
            .post(self.url("/api/nodes"))
            .json(body)
            .timeout(REGISTER_TIMEOUT)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        let bytes = checked_body(resp).await?;
        let reply: RegisterResponse = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Body(format!("registration reply: {e}")))?;
        if reply.node_id.trim().is_empty() || reply.agent_token.trim().is_empty() {
            return Err(CallError::Body("empty node_id or agent_token".into()));
        }
        Ok(reply)
    }

    /// `POST /api/health` with `X-Agent-Token`.
    ///
    /// # Errors
    /// [`CallError`]; see [`CallError::needs_registration`].
    pub async fn heartbeat(
        &self,
        token: &str,
        body: &HealthRequest,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let resp = self
            .http
            .post(self.url("/api/health"))
            .header("X-Agent-Token", token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        checked_body(resp).await.map(drop)
    }

    /// `POST /api/tasks/{task_id}/progress`.
    ///
    /// # Errors
    /// [`CallError`]; an unknown task is a 500 (contract §4.3).
    pub async fn progress(&self, task_id: &str, body: ProgressRequest) -> Result<(), CallError> {
        let mut url = self.url("/api/tasks");
        url.path_segments_mut()
            .map_err(|()| CallError::Body("router URL cannot have paths".into()))?
            .push(task_id)
            .push("progress");
        let resp = self
            .http
            .post(url)
            .json(&body)
            .timeout(SHORT_TIMEOUT)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        checked_body(resp).await.map(drop)
    }

    /// `POST /api/nodes/{node_id}/disconnect` (202).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn disconnect(&self, node_id: &str) -> Result<(), CallError> {
        let mut url = self.url("/api/nodes");
        url.path_segments_mut()
            .map_err(|()| CallError::Body("router URL cannot have paths".into()))?
            .push(node_id)
            .push("disconnect");
        let resp = self
            .http
            .post(url)
            .timeout(SHORT_TIMEOUT)
            .send()
            .await
            .map_err(CallError::from_reqwest)?;
        checked_body(resp).await.map(drop)
    }

    /// `GET /v1/models` with the API key when one is configured (contract §4.1, §5).
    ///
    /// # Errors
    /// [`CallError`]; without a key the router answers 401.
    pub async fn models(&self) -> Result<Vec<RouterModel>, CallError> {
        let mut req = self.http.get(self.url("/v1/models")).timeout(SHORT_TIMEOUT);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(CallError::from_reqwest)?;
        let bytes = checked_body(resp).await?;
        let list: ModelList = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Body(format!("model list: {e}")))?;
        Ok(list.data)
    }
}

/// Reads the body (at most [`MAX_BODY`] bytes) and turns a non-2xx status into [`CallError::Status`].
async fn checked_body(resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let status = resp.status();
    let body = read_capped(resp, MAX_BODY).await?;
    if !status.is_success() {
        return Err(CallError::Status {
            status: status.as_u16(),
            body: snippet(&body),
        });
    }
    Ok(body)
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, CallError> {
    let mut stream = resp.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(CallError::from_reqwest)?;
        if body.len() + chunk.len() > cap {
            return Err(CallError::Body(format!("body larger than {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first 300 characters of a body, for logs.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Parses and checks the router URL: `http` or `https`, with a host.
///
/// # Errors
/// A message for startup.
pub fn parse_router_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| format!("router URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "router URL {url:?}: expected http(s)://HOST[:PORT]"
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_a_base_path_and_escape_segments() {
        let client = RouterClient::new(
            parse_router_url("http://r:8080/prefix/").unwrap(),
            reqwest::Client::new(),
            None,
        );
        assert_eq!(
            client.url("/api/nodes").as_str(),
            "http://r:8080/prefix/api/nodes"
        );
        let plain = RouterClient::new(
            parse_router_url("http://r:8080").unwrap(),
            reqwest::Client::new(),
            None,
        );
        assert_eq!(
            plain.url("/api/health").as_str(),
            "http://r:8080/api/health"
        );
        assert!(parse_router_url("ftp://r").is_err());
        assert!(parse_router_url("r:8080").is_err());
    }

    #[test]
    fn only_401_and_404_ask_for_registration() {
        let status = |status| CallError::Status {
            status,
            body: String::new(),
        };
        assert!(status(401).needs_registration());
        assert!(status(404).needs_registration());
        assert!(!status(500).needs_registration());
        assert!(!status(422).needs_registration());
        assert!(!CallError::Body("x".into()).needs_registration());
    }

    #[test]
    fn snippets_are_short() {
        assert_eq!(snippet(b"  hi \n"), "hi");
        assert_eq!(snippet("é".repeat(400).as_bytes()).chars().count(), 301);
    }

    #[test]
    fn router_model_entries_accept_missing_and_null_fields() {
        let list: ModelList = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"gpt-oss:20b","object":"model","created":0,"owned_by":"coordinator"},
            {"id":"hf/a/b/c.gguf","path":null,"download_url":"https://x/c.gguf","chat_template":"{{x}}"}]}"#,
        )
        .unwrap();
        assert_eq!(list.data[0].download_url, None);
        assert_eq!(
            list.data[1].download_url.as_deref(),
            Some("https://x/c.gguf")
        );
    }
}
