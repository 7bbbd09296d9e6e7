//! A fake Ollama-style registry and a fake Hugging Face Hub on loopback, written
//! from their public protocols, serving real bytes:
//!
//! - registry (Docker registry v2 subset Ollama uses):
//!   `GET /v2/<ns>/<name>/manifests/<tag>` (needs the manifest v2 `Accept`),
//!   `GET /v2/<ns>/<name>/blobs/<digest>` with `Range: bytes=a-b` → 206 + `Content-Range`;
//! - Hub: `GET /api/models/<owner>/<repo>/tree/main` (`[{type, path, size, lfs:{oid,size}}]`)
//!   and `GET /<owner>/<repo>/resolve/main/<path>` (ranged too), with an optional
//!   required bearer token.
//!
//! Faults: drop the connection after N bytes (for the next K responses), answer
//! 200 to ranged requests, corrupt the next K bodies, send slowly. Every body byte
//! handed to the server is counted (`served`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::Digest;

pub const MANIFEST_MEDIA: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[derive(Default)]
pub struct Faults {
    /// Drop the connection after this many body bytes, for the next `drop_count` responses.
    pub drop_after: Option<u64>,
    pub drop_count: u32,
    /// Answer 200 with the whole file to ranged requests.
    pub ignore_range: bool,
    /// Flip a byte in the next this-many bodies.
    pub corrupt_count: u32,
    /// Pause between 64 KiB chunks.
    pub chunk_delay: Duration,
}

#[derive(Default)]
pub struct State {
    pub blobs: HashMap<String, Bytes>,
    /// `ns/name/tag` → manifest.
    pub manifests: HashMap<String, Value>,
    /// `owner/repo` → files.
    pub repos: HashMap<String, Vec<(String, Bytes)>>,
    /// Bearer token the Hub requires, if any.
    pub hf_token: Option<String>,
    pub faults: Faults,
    pub ranges: Vec<String>,
}

#[derive(Clone)]
pub struct FakeHub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub served: Arc<AtomicU64>,
}

impl FakeHub {
    /// Starts on 127.0.0.1:0 on the current actix system.
    pub fn start() -> FakeHub {
        let state = Arc::new(Mutex::new(State::default()));
        let served = Arc::new(AtomicU64::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, n) = (state.clone(), served.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new((s.clone(), n.clone())))
                .route("/v2/{ns}/{name}/manifests/{tag}", web::get().to(manifest))
                .route("/v2/{ns}/{name}/blobs/{digest}", web::get().to(blob))
                .route("/api/models/{owner}/{repo}/tree/main", web::get().to(tree))
                .route(
                    "/{owner}/{repo}/resolve/main/{path:.*}",
                    web::get().to(resolve),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        actix_rt::spawn(server);
        FakeHub {
            addr,
            state,
            served,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults);
    }

    /// Publishes `ns/name:tag` with a model layer of `gguf` and optional template/params;
    /// returns the model layer's digest.
    pub fn publish(
        &self,
        ns: &str,
        name: &str,
        tag: &str,
        gguf: &[u8],
        template: Option<&str>,
    ) -> String {
        let mut s = self.state.lock().unwrap();
        let mut layers = Vec::new();
        let mut add = |media: &str, data: &[u8]| {
            let digest = sha256(data);
            s.blobs.insert(digest.clone(), Bytes::copy_from_slice(data));
            json!({"mediaType": media, "digest": digest, "size": data.len()})
        };
        let model = add("application/vnd.ollama.image.model", gguf);
        let digest = model["digest"].as_str().unwrap().to_string();
        layers.push(model);
        if let Some(t) = template {
            layers.push(add("application/vnd.ollama.image.template", t.as_bytes()));
        }
        layers.push(add(
            "application/vnd.ollama.image.params",
            br#"{"stop":["<|im_end|>"]}"#,
        ));
        let config = add(
            "application/vnd.docker.container.image.v1+json",
            br#"{"model_format":"gguf"}"#,
        );
        s.manifests.insert(
            format!("{ns}/{name}/{tag}"),
            json!({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA, "config": config, "layers": layers}),
        );
        digest
    }

    pub fn add_repo(&self, repo: &str, files: Vec<(&str, Vec<u8>)>) {
        self.state.lock().unwrap().repos.insert(
            repo.to_string(),
            files
                .into_iter()
                .map(|(p, d)| (p.to_string(), Bytes::from(d)))
                .collect(),
        );
    }
}

type Data = web::Data<(Arc<Mutex<State>>, Arc<AtomicU64>)>;

async fn manifest(
    req: HttpRequest,
    data: Data,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (ns, name, tag) = path.into_inner();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains(MANIFEST_MEDIA) {
        return HttpResponse::NotAcceptable().finish();
    }
    match data
        .0
        .lock()
        .unwrap()
        .manifests
        .get(&format!("{ns}/{name}/{tag}"))
    {
        Some(m) => HttpResponse::Ok().content_type(MANIFEST_MEDIA).json(m),
        None => HttpResponse::NotFound().json(json!({"errors": [{"code": "MANIFEST_UNKNOWN"}]})),
    }
}

async fn blob(
    req: HttpRequest,
    data: Data,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let digest = path.into_inner().2;
    let bytes = data.0.lock().unwrap().blobs.get(&digest).cloned();
    match bytes {
        Some(b) => serve(&req, &data, b),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn tree(req: HttpRequest, data: Data, path: web::Path<(String, String)>) -> HttpResponse {
    let (owner, repo) = path.into_inner();
    let s = data.0.lock().unwrap();
    if !authorized(&req, &s) {
        return HttpResponse::Unauthorized().finish();
    }
    let Some(files) = s.repos.get(&format!("{owner}/{repo}")) else {
        return HttpResponse::NotFound().finish();
    };
    let list: Vec<Value> = files
        .iter()
        .map(|(p, d)| {
            let hex = sha256(d).trim_start_matches("sha256:").to_string();
            json!({"type": "file", "path": p, "size": d.len(), "oid": "0000", "lfs": {"oid": hex, "size": d.len(), "pointerSize": 134}})
        })
        .collect();
    HttpResponse::Ok().json(list)
}

fn authorized(req: &HttpRequest, s: &State) -> bool {
    let Some(token) = &s.hf_token else {
        return true;
    };
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

async fn resolve(
    req: HttpRequest,
    data: Data,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (owner, repo, file) = path.into_inner();
    let bytes = {
        let s = data.0.lock().unwrap();
        if !authorized(&req, &s) {
            return HttpResponse::Unauthorized().finish();
        }
        s.repos
            .get(&format!("{owner}/{repo}"))
            .and_then(|fs| fs.iter().find(|(p, _)| *p == file).map(|(_, d)| d.clone()))
    };
    match bytes {
        Some(b) => serve(&req, &data, b),
        None => HttpResponse::NotFound().finish(),
    }
}

/// `bytes=a-b` / `bytes=a-` → [a, b].
fn range(req: &HttpRequest, len: u64) -> Option<(u64, u64)> {
    let r = req
        .headers()
        .get("range")?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse().ok()?
    };
    Some((a, b.min(len - 1)))
}

fn serve(req: &HttpRequest, data: &Data, bytes: Bytes) -> HttpResponse {
    let len = bytes.len() as u64;
    let (drop_after, corrupt, delay, ignore) = {
        let mut s = data.0.lock().unwrap();
        if let Some(r) = req.headers().get("range").and_then(|v| v.to_str().ok()) {
            s.ranges.push(r.to_string());
        }
        let f = &mut s.faults;
        let drop = (f.drop_count > 0).then(|| {
            f.drop_count -= 1;
            f.drop_after
        });
        // Only model-sized bodies (not the small config and params blobs).
        let corrupt = f.corrupt_count > 0 && bytes.len() > 4096;
        if corrupt {
            f.corrupt_count -= 1;
        }
        (drop.flatten(), corrupt, f.chunk_delay, f.ignore_range)
    };
    let ranged = if ignore { None } else { range(req, len) };
    let (start, end) = ranged.unwrap_or((0, len - 1));
    let mut body = bytes.slice(start as usize..=end as usize).to_vec();
    if corrupt && !body.is_empty() {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let mut resp = match ranged {
        Some(_) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header(("content-range", format!("bytes {start}-{end}/{len}")));
            r
        }
        None => HttpResponse::Ok(),
    };
    let served = data.1.clone();
    let body = Bytes::from(body);
    let total = body.len() as u64;
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let (body, served) = (body.clone(), served.clone());
        async move {
            if sent >= body.len() as u64 {
                return None;
            }
            if drop_after.is_some_and(|n| sent >= n) {
                return Some((Err(std::io::Error::other("dropped on purpose")), u64::MAX));
            }
            if sent > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut end = (sent + (64 << 10)).min(body.len() as u64);
            if let Some(n) = drop_after.filter(|n| *n > sent) {
                end = end.min(n);
            }
            served.fetch_add(end - sent, Ordering::SeqCst);
            Some((
                Ok::<_, std::io::Error>(body.slice(sent as usize..end as usize)),
                end,
            ))
        }
    });
    resp.no_chunking(total)
        .content_type("application/octet-stream")
        .streaming(stream)
}
