//! Access control on a whole node with fake workers: API keys, admin routes
//! closed to non-loopback clients, llm-router's `/pull` sources, CORS, the
//! startup probe, and the request id / `traceparent` coming back.
//!
//! A "remote" client is one that connects from `127.0.0.2`: Linux routes all
//! of 127/8 to `lo`, and the node trusts only `127.0.0.1` and `::1` as loopback.

mod common;
use common::fake_worker;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use llm_node::{Args, Node};
use serde_json::{json, Value};

const REMOTE_SOURCE: &str = "127.0.0.2";

async fn start(dir: &Path, host: &str, models: &[(&str, &str)], extra: &[&str]) -> Node {
    let mut argv: Vec<String> = vec![
        "llm-node".into(),
        format!("--host={host}"),
        "--port=0".into(),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=5".into(),
        "--registry-url=http://127.0.0.1:9".into(),
        "--hf-endpoint=http://127.0.0.1:9".into(),
        "--no-ollama-models".into(),
        format!("--store-dir={}", dir.join("store").display()),
        format!("--models-dir={}", dir.join("models").display()),
    ];
    std::fs::create_dir_all(dir.join("models")).unwrap();
    for (name, flags) in models {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, flags).unwrap();
        argv.push(format!("--model={name}={}", path.display()));
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Node::start(Args::try_parse_from(argv).unwrap())
        .await
        .unwrap()
}

fn local() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A client whose connections come from 127.0.0.2, not a loopback client to the node.
fn remote() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(REMOTE_SOURCE.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn answer(resp: reqwest::RequestBuilder) -> (u16, Value) {
    let r = resp.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn chat_body() -> Value {
    json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[actix_rt::test]
async fn inference_needs_an_api_key_in_each_apis_shape_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "127.0.0.1", &[("m", "")], &["--api-key=k1,k2"]).await;
    node.wait_ready().await.unwrap();
    let (addr, http) = (node.addr(), local());
    let chat = || {
        http.post(url(addr, "/v1/chat/completions"))
            .json(&chat_body())
    };

    let (status, body) = answer(chat()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(answer(chat().bearer_auth("wrong")).await.0, 401);
    let (status, body) = answer(chat().bearer_auth("k2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer(chat().header("x-api-key", "k1")).await.0, 200);

    // Ollama's routes: the same key, Ollama's error shape.
    let (status, body) = answer(http.get(url(addr, "/api/tags"))).await;
    assert_eq!(status, 401);
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let (status, _) = answer(http.get(url(addr, "/api/tags")).bearer_auth("k1")).await;
    assert_eq!(status, 200);

    for open in ["/health", "/health/ready", "/startup", "/metrics"] {
        let r = http.get(url(addr, open)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{open}");
    }
    node.stop().await;
}

#[actix_rt::test]
async fn admin_routes_refuse_a_non_loopback_client_without_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    // Bound on a second loopback address, as a node on 0.0.0.0 is reached from afar.
    let node = start(dir.path(), REMOTE_SOURCE, &[("m", "")], &[]).await;
    node.wait_ready().await.unwrap();
    let (addr, far) = (node.addr(), remote());

    let (status, body) = answer(far.get(url(addr, "/admin/models"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = answer(
        far.put(url(addr, "/admin/log-level"))
            .json(&json!({"level": "trace"})),
    )
    .await;
    assert_eq!(status, 403);
    for (method, path) in [
        (reqwest::Method::POST, "/api/pull"),
        (reqwest::Method::DELETE, "/api/delete"),
    ] {
        let (status, body) = answer(
            far.request(method, url(addr, path))
                .json(&json!({"model": "m"})),
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body["error"].is_string(),
            "Ollama's shape on {path}: {body}"
        );
    }
    let (status, body) = answer(far.post(url(addr, "/admin/models/m/unload"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(node.models().statuses().await[0].1.state.label(), "ready");

    // Inference is open without --api-key, from anywhere.
    assert_eq!(answer(far.get(url(addr, "/v1/models"))).await.0, 200);
    // The same route answers a loopback client (127.0.0.1 → 127.0.0.2).
    let (status, body) = answer(local().get(url(addr, "/admin/models"))).await;
    assert_eq!(status, 200, "{body}");
    node.stop().await;
}

#[actix_rt::test]
async fn an_admin_key_opens_admin_routes_to_remote_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        REMOTE_SOURCE,
        &[("m", "")],
        &["--admin-key=adm"],
    )
    .await;
    let (addr, far) = (node.addr(), remote());
    let (status, body) = answer(far.get(url(addr, "/admin/models"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );
    let (status, _) = answer(far.get(url(addr, "/admin/models")).bearer_auth("adm")).await;
    assert_eq!(status, 200);
    let (status, _) = answer(local().get(url(addr, "/admin/models"))).await;
    assert_eq!(status, 401, "with a key, loopback needs it too");
    node.stop().await;
}

#[actix_rt::test]
async fn router_pull_refuses_local_files_metadata_and_file_urls_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("shared");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("ok.gguf"), b"GGUF").unwrap();
    let outside = dir.path().join("secret.gguf");
    std::fs::write(&outside, b"GGUF secret").unwrap();
    let allow = format!("--pull-path-allow={}", allowed.display());
    let node = start(
        dir.path(),
        "127.0.0.1",
        &[("m", "")],
        &[&allow, "--pull-secret=s3cret"],
    )
    .await;
    let (addr, http) = (node.addr(), local());
    let pull = |body: Value| http.post(url(addr, "/pull")).json(&body);
    let before = files(&dir.path().join("models")).len() + files(&dir.path().join("store")).len();

    let refused = [
        json!({"model": "passwd:1", "path": "/etc/passwd"}),
        json!({"model": "secret:1", "path": outside}),
        json!({"model": "escape:1", "path": format!("{}/../secret.gguf", allowed.display())}),
        json!({"model": "meta:1", "download_url": "http://169.254.169.254/latest/meta-data/"}),
        json!({"model": "meta6:1", "download_url": "http://[fd00:ec2::254]/latest/meta-data/"}),
        json!({"model": "gce:1", "download_url": "http://metadata.google.internal/computeMetadata/v1/"}),
        json!({"model": "self:1", "download_url": format!("http://{addr}/admin/models")}),
        json!({"model": "file:1", "download_url": "file:///etc/passwd"}),
    ];
    for body in refused {
        let (status, answer) = answer(pull(body.clone())).await;
        assert_eq!(status, 403, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("path") || message.contains("download_url"),
            "a clear reason for {body}: {answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = files(&dir.path().join("models")).len() + files(&dir.path().join("store")).len();
    assert_eq!(before, after, "nothing written: {:?}", files(dir.path()));
    assert!(node.models().entry("passwd:1").is_err());

    // Only the router, loopback or the secret may call /pull at all.
    let far = remote();
    let body = json!({"model": "ok:1", "path": allowed.join("ok.gguf")});
    let (status, answer_body) = answer(far.post(url(addr, "/pull")).json(&body)).await;
    assert_eq!(status, 403, "{answer_body}");
    let (status, answer_body) = answer(
        far.post(url(addr, "/pull"))
            .header("x-pull-secret", "s3cret")
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{answer_body}");
    let copied = dir.path().join("models/ok_1/model.gguf");
    for _ in 0..100 {
        if copied.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        b"GGUF",
        "an allowed path is copied"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        "127.0.0.1",
        &[("m", "")],
        &["--cors-origin=https://app.example.com", "--api-key=k1"],
    )
    .await;
    node.wait_ready().await.unwrap();
    let (addr, http) = (node.addr(), local());
    let preflight = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, url(addr, "/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let r = preflight("https://app.example.com").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers();
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");

    let r = preflight("https://evil.example.net").send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // The real request: the key still applies, the answer carries CORS headers.
    let r = http
        .post(url(addr, "/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .bearer_auth("k1")
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("traceparent"),
        "{exposed}"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn startup_turns_200_once_preloaded_and_stays_200_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        "127.0.0.1",
        &[("m", "load_ms=800&token_ms=20")],
        &[],
    )
    .await;
    let (addr, http) = (node.addr(), local());
    let (status, body) = answer(http.get(url(addr, "/startup"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "starting");
    node.wait_ready().await.unwrap();
    assert_eq!(answer(http.get(url(addr, "/startup"))).await.0, 200);

    let long = {
        let (http, chat) = (http.clone(), url(addr, "/v1/chat/completions"));
        let body = json!({"model": "m", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]});
        actix_rt::spawn(async move { http.post(chat).json(&body).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = actix_rt::spawn(node.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(answer(http.get(url(addr, "/health/ready"))).await.0, 503);
    let (status, body) = answer(http.get(url(addr, "/startup"))).await;
    assert_eq!(status, 200, "startup while draining: {body}");
    assert_eq!(long.await.unwrap().as_u16(), 200);
    stopping.await.unwrap();
}

#[actix_rt::test]
async fn the_request_id_and_traceparent_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "127.0.0.1", &[("m", "")], &[]).await;
    node.wait_ready().await.unwrap();
    let (addr, http) = (node.addr(), local());
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .post(url(addr, "/v1/chat/completions"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let back = r.headers()["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = back.split('-').collect();
    assert_eq!(parts.len(), 4, "{back}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace, "01"),
        "{back}"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "a span of our own");
    assert_eq!(parts[2].len(), 16);
    assert_eq!(
        r.headers()["x-request-id"],
        trace,
        "the trace id names the request"
    );

    let r = http
        .get(url(addr, "/v1/models"))
        .header("x-request-id", "req-77")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-77");
    let back = r.headers()["traceparent"].to_str().unwrap();
    assert!(back.starts_with("00-") && back.len() == 55, "{back}");
    node.stop().await;
}
