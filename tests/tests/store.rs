//! The model store end to end: the real `llm-node` pulls the real bundled GGUF
//! from a fake Ollama-style registry on loopback (Docker registry v2 subset:
//! manifest by tag with the v2 `Accept`, blobs by digest with `Range`), serves
//! it with a real worker without a restart, and resumes a pull after the node
//! is killed mid-transfer.

use std::collections::HashMap;
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
    /// Manifests by tag of `library/smol`, blobs by digest.
    content: Arc<Mutex<Content>>,
}

#[derive(Default)]
struct Content {
    manifests: HashMap<String, String>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
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

fn digest_of(data: &[u8]) -> String {
    let file = tempfile_path(&format!("blob-{}", data.len()));
    std::fs::write(&file, data).unwrap();
    let digest = format!("sha256:{}", sha256_hex(&file));
    let _ = std::fs::remove_file(&file);
    digest
}

impl Registry {
    /// Publishes `library/smol:<tag>`: the bundled GGUF as its model layer,
    /// plus `extra` layers (media type, bytes), as Ollama's registry serves them.
    fn publish(&self, tag: &str, extra: &[(&str, &[u8])]) {
        let mut c = self.content.lock().unwrap();
        let gguf_len = c.blobs[&self.digest].len();
        let mut layers = vec![
            json!({"mediaType": "application/vnd.ollama.image.model", "digest": self.digest, "size": gguf_len}),
        ];
        for (media, data) in extra {
            let digest = digest_of(data);
            layers.push(json!({"mediaType": media, "digest": digest, "size": data.len()}));
            c.blobs.insert(digest, Arc::new(data.to_vec()));
        }
        let config = br#"{"model_format":"gguf"}"#.to_vec();
        let config_digest = digest_of(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        c.blobs.insert(config_digest, Arc::new(config));
        c.manifests.insert(tag.to_string(), manifest.to_string());
    }
}

/// Serves `library/smol:q4` whose model layer is the bundled GGUF.
fn registry() -> Registry {
    let gguf = Arc::new(std::fs::read(model_path()).unwrap());
    let digest = format!("sha256:{}", sha256_hex(&model_path()));
    let content = Arc::new(Mutex::new(Content::default()));
    content.lock().unwrap().blobs.insert(digest.clone(), gguf);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (s, d, r, c) = (
        served.clone(),
        delay_ms.clone(),
        ranges.clone(),
        content.clone(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (s, d, r, c) = (s.clone(), d.clone(), r.clone(), c.clone());
            std::thread::spawn(move || {
                let _ = handle(conn, &c, &s, &d, &r);
            });
        }
    });
    let reg = Registry {
        url,
        served,
        delay_ms,
        ranges,
        digest,
        content,
    };
    reg.publish("q4", &[]);
    reg
}

fn tempfile_path(name: &str) -> String {
    format!(
        "{}/llm-node-store-test-{}-{name}",
        std::env::temp_dir().display(),
        std::process::id()
    )
}

fn handle(
    mut conn: TcpStream,
    content: &Mutex<Content>,
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
    let (manifest, blob) = {
        let c = content.lock().unwrap();
        let manifest = path
            .strip_prefix("/v2/library/smol/manifests/")
            .and_then(|tag| c.manifests.get(tag).cloned());
        let blob = path
            .strip_prefix("/v2/library/smol/blobs/")
            .and_then(|digest| c.blobs.get(digest).cloned());
        (manifest, blob)
    };
    if let Some(manifest) = manifest {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            manifest.len()
        );
        conn.write_all(head.as_bytes())?;
        return conn.write_all(manifest.as_bytes());
    }
    let Some(body) = blob else {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let body: &[u8] = &body;
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

/// A `/v1/chat/completions` body for `model` with `extra` fields.
fn chat_for(model: &str, content: &str, extra: Value) -> Value {
    let mut body = chat(content, extra);
    body["model"] = json!(model);
    body
}

/// An Ollama manifest's params become the pulled model's defaults (below a
/// request's own values), its Go template and system prompt are reported by
/// `/api/show`, and the GGUF's Jinja template still renders the chat.
#[test]
fn manifest_params_are_the_pulled_models_defaults_and_requests_override_them() {
    let reg = registry();
    let store = tempfile_path("params-store");
    let _ = std::fs::remove_dir_all(&store);
    let node = Node::start(&[
        "--store-dir",
        store.as_str(),
        "--registry-url",
        reg.url.as_str(),
        "--no-ollama-models",
    ]);
    // The greedy answer of the same GGUF served by path: the reference.
    let question = "What is the capital of France?";
    let (status, body) = node.post(
        "/v1/chat/completions",
        &chat(question, json!({"max_tokens": 24, "temperature": 0})),
    );
    assert_eq!(status, 200, "{body}");
    let greedy = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string the greedy answer contains, after its first few words.
    let stop = greedy
        .split_whitespace()
        .skip(2)
        .find(|w| w.len() >= 4 && w.chars().all(char::is_alphabetic))
        .unwrap_or_else(|| panic!("no word to stop at in {greedy:?}"))
        .to_string();
    let cut = greedy[..greedy.find(&stop).unwrap()].to_string();

    // `repeat_penalty` 1 replaces Ollama's built-in 1.1, so /api/chat is greedy too.
    let params = json!({"temperature": 0, "num_predict": 3, "stop": [stop], "num_ctx": 2048,
                        "repeat_penalty": 1.0, "mirostat": 0});
    let params = params.to_string();
    reg.publish(
        "tuned",
        &[
            ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
            ("application/vnd.ollama.image.params", params.as_bytes()),
            ("application/vnd.ollama.image.system", b"You are terse."),
        ],
    );
    let lines = pull(&node, "smol:tuned");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");

    // No options: temperature 0 and num_predict 3 from the manifest.
    let (status, body) = node.post(
        "/v1/chat/completions",
        &chat_for("smol:tuned", question, json!({})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    let three = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !three.is_empty() && greedy.starts_with(three),
        "the greedy answer's start, rendered with the GGUF's template: {three:?} vs {greedy:?}"
    );
    // The request's max_tokens wins over num_predict; the manifest's stop cuts.
    let (_, body) = node.post(
        "/v1/chat/completions",
        &chat_for("smol:tuned", question, json!({"max_tokens": 24})),
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        cut.as_str(),
        "{body}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    // The request's own (empty) stop list wins too.
    let (_, body) = node.post(
        "/v1/chat/completions",
        &chat_for(
            "smol:tuned",
            question,
            json!({"max_tokens": 24, "stop": []}),
        ),
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        greedy.as_str(),
        "{body}"
    );

    // Ollama's /api/chat: the same defaults, and options override them.
    let ollama = |options: Value| {
        let (status, body) = node.post(
            "/api/chat",
            &json!({"model": "smol:tuned", "stream": false, "options": options,
                    "messages": [{"role": "user", "content": question}]}),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let body = ollama(json!({}));
    assert_eq!(body["eval_count"], 3, "{body}");
    assert_eq!(body["message"]["content"], three, "{body}");
    let body = ollama(json!({"num_predict": 24}));
    assert_eq!(body["message"]["content"], cut.as_str(), "{body}");
    assert_eq!(body["done_reason"], "stop", "{body}");

    // num_ctx is the model's context per slot (--ctx-size is 1024 here).
    let (_, ps) = node.get("/api/ps");
    let tuned = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smol:tuned")
        .unwrap_or_else(|| panic!("{ps}"));
    assert_eq!(tuned["context_length"], 2048, "{ps}");

    // /api/show reports the manifest as Ollama does.
    let (status, show) = node.post("/api/show", &json!({"model": "smol:tuned"}));
    assert_eq!(status, 200, "{show}");
    let parameters = show["parameters"].as_str().unwrap();
    assert!(
        parameters.contains(&format!("stop{}\"{stop}\"", " ".repeat(27))),
        "{parameters}"
    );
    assert!(parameters.contains("num_predict"), "{parameters}");
    assert_eq!(show["template"], "{{ .Prompt }}");
    assert_eq!(show["system"], "You are terse.");
    let (_, plain) = node.post("/api/show", &json!({"model": MODEL}));
    assert!(
        plain.get("system").is_none(),
        "no system layer, no field: {plain}"
    );
    node.terminate();
    let _ = std::fs::remove_dir_all(&store);
}
