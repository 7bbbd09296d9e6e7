//! The model store end to end: the real `llm-node` pulls the real bundled GGUF
//! from a fake Ollama-style registry on loopback (Docker registry v2 subset:
//! manifest by tag with the v2 `Accept`, blobs by digest with `Range`), serves
//! it with a real worker without a restart, and resumes a pull after the node
//! is killed mid-transfer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm_node_tests::{chat, model_path, Node, MODEL};
use serde_json::{json, Value};

struct Registry {
    url: String,
    served: Arc<AtomicU64>,
    /// Pause per 64 KiB chunk.
    delay_ms: Arc<AtomicU64>,
    ranges: Arc<Mutex<Vec<String>>>,
    digest: String,
}

fn sha256_hex(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Serves `library/smol:q4` whose model layer is the bundled GGUF.
fn registry() -> Registry {
    let gguf = Arc::new(std::fs::read(model_path()).unwrap());
    let digest = format!("sha256:{}", sha256_hex(&model_path()));
    let config = br#"{"model_format":"gguf"}"#.to_vec();
    let config_digest = {
        let dir = tempfile_path("cfg");
        std::fs::write(&dir, &config).unwrap();
        format!("sha256:{}", sha256_hex(&dir))
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": gguf.len()}],
    })
    .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (s, d, r, dg, cd) = (
        served.clone(),
        delay_ms.clone(),
        ranges.clone(),
        digest.clone(),
        config_digest,
    );
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (gguf, manifest, config) = (gguf.clone(), manifest.clone(), config.clone());
            let (s, d, r, dg, cd) = (s.clone(), d.clone(), r.clone(), dg.clone(), cd.clone());
            std::thread::spawn(move || {
                let _ = handle(conn, &gguf, &manifest, &config, &dg, &cd, &s, &d, &r);
            });
        }
    });
    Registry {
        url,
        served,
        delay_ms,
        ranges,
        digest,
    }
}

fn tempfile_path(name: &str) -> String {
    format!(
        "{}/llm-node-store-test-{}-{name}",
        std::env::temp_dir().display(),
        std::process::id()
    )
}

#[allow(clippy::too_many_arguments)]
fn handle(
    mut conn: TcpStream,
    gguf: &[u8],
    manifest: &str,
    config: &[u8],
    digest: &str,
    config_digest: &str,
    served: &AtomicU64,
    delay_ms: &AtomicU64,
    ranges: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
    }
    let body: &[u8] = if path == "/v2/library/smol/manifests/q4" {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            manifest.len()
        );
        conn.write_all(head.as_bytes())?;
        return conn.write_all(manifest.as_bytes());
    } else if path == format!("/v2/library/smol/blobs/{digest}") {
        gguf
    } else if path == format!("/v2/library/smol/blobs/{config_digest}") {
        config
    } else {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let len = body.len();
    let (start, end) = match &range {
        Some(r) => {
            ranges.lock().unwrap().push(r.clone());
            let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(len - 1))
        }
        None => (0, len - 1),
    };
    let head = match range {
        Some(_) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            end - start + 1
        ),
        None => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
    };
    conn.write_all(head.as_bytes())?;
    for chunk in body[start..=end].chunks(64 << 10) {
        let pause = delay_ms.load(Ordering::SeqCst);
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
        conn.write_all(chunk)?;
        served.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}

/// Streams `/api/pull` and returns its NDJSON lines.
fn pull(node: &Node, model: &str) -> Vec<Value> {
    let mut resp = node
        .http
        .post(node.url("/api/pull"))
        .json(&json!({ "model": model }))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_pulled_model_is_chatted_with_at_once_and_a_killed_pull_resumes() {
    let reg = registry();
    let store = tempfile_path("store");
    let _ = std::fs::remove_dir_all(&store);
    let flags = [
        "--store-dir",
        store.as_str(),
        "--registry-url",
        reg.url.as_str(),
        "--no-ollama-models",
        "--pull-parallel",
        "4",
    ];

    // A slow transfer, then the node is killed in the middle of it.
    reg.delay_ms.store(20, Ordering::SeqCst);
    let node = Node::start(&flags);
    let url = node.url("/api/pull");
    let http = node.http.clone();
    std::thread::spawn(move || {
        let _ = http
            .post(url)
            .json(&json!({"model": "smol:q4"}))
            .send()
            .map(|mut r| {
                let mut sink = String::new();
                let _ = r.read_to_string(&mut sink);
            });
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while reg.served.load(Ordering::SeqCst) < 20 << 20 {
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(node);
    std::thread::sleep(Duration::from_millis(300));
    let written: u64 = std::fs::read_dir(format!("{store}/blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-partial-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(written >= 10 << 20, "only {written} bytes were kept");

    // Restarted: the pull asks only for what is missing, verifies, and the model
    // answers a chat on the real worker with no further restart.
    reg.delay_ms.store(0, Ordering::SeqCst);
    reg.ranges.lock().unwrap().clear();
    let node = Node::start(&flags);
    let lines = pull(&node, "smol:q4");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let total = std::fs::metadata(model_path()).unwrap().len();
    let requested: u64 = reg
        .ranges
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
        })
        .sum();
    assert_eq!(requested, total - written, "only the missing bytes move");
    let blob = format!("{store}/blobs/{}", reg.digest.replace(':', "-"));
    assert_eq!(format!("sha256:{}", sha256_hex(&blob)), reg.digest);

    let (status, body) = node.post("/v1/chat/completions", &{
        let mut c = chat(
            "What is the capital of France?",
            json!({"max_tokens": 8, "temperature": 0}),
        );
        c["model"] = json!("smol:q4");
        c
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "smol:q4");
    assert!(!body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    let (_, tags) = node.get("/api/tags");
    assert_eq!(tags["models"][0]["name"], "smol:q4", "{tags}");
    node.terminate();
    let _ = std::fs::remove_dir_all(&store);
}

/// The guard behind "tests never leave this machine": a node told to pull
/// from the real Ollama registry (by name, as its default is) refuses to
/// resolve it, says so in the pull's answer, and the harness sees the attempt
/// (without `take_refused_hosts` this test would fail when the node is dropped).
#[test]
fn a_node_under_test_never_resolves_a_public_host() {
    let store = tempfile_path("guard-store");
    let _ = std::fs::remove_dir_all(&store);
    let node = Node::start(&[
        "--store-dir",
        store.as_str(),
        "--no-ollama-models",
        "--registry-url",
        "https://registry.ollama.ai",
    ]);
    let resp = node
        .http
        .post(node.url("/api/pull"))
        .json(&json!({ "model": "gpt-oss:20b", "stream": false }))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap();
    // Ollama's `{"error": "…"}`, before streaming as after.
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        status >= 400 && error.contains("registry.ollama.ai is not a loopback host"),
        "the pull should fail on the guard, naming the host: {status} {body}"
    );
    let refused = node.take_refused_hosts();
    assert!(
        refused.iter().any(|l| l.contains("registry.ollama.ai")),
        "the node's log should name the refused host: {refused:?}"
    );
    // Still serving, and nothing was stored for the model.
    let (status, _) = node.post(
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 1})),
    );
    assert_eq!(status, 200);
    // Only the model configured by path is listed (`/api/tags` lists it too).
    let (_, tags) = node.get("/api/tags");
    let names: Vec<&Value> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(names, [MODEL], "{tags}");
}
