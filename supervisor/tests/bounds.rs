//! Bounds on a whole node with fake workers (`examples/fake_worker.rs`): a
//! client that never reads its stream, and pulls beyond the pull queue. What
//! these cases guard against is memory that grows with a misbehaving client.

mod common;
use common::fake_worker;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use llm_node::{Args, Node};
use serde_json::{json, Value};

/// A node serving model `m` (fault flags `flags`) with `extra` flags.
async fn start(dir: &tempfile::TempDir, flags: &str, extra: &[String]) -> Node {
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, flags).unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    let mut argv = vec![
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
        format!("--model=m={}", path.display()),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=2".into(),
        "--registry-url=http://127.0.0.1:9".into(),
        "--hf-endpoint=http://127.0.0.1:9".into(),
        "--no-ollama-models".into(),
        format!("--store-dir={}", dir.path().join("store").display()),
        format!("--models-dir={}", dir.path().join("models").display()),
    ];
    argv.extend(extra.iter().cloned());
    Node::start(Args::try_parse_from(argv).unwrap())
        .await
        .unwrap()
}

async fn in_flight(http: &reqwest::Client, node: &Node) -> u64 {
    let v: Value = http
        .get(format!("http://{}/admin/models", node.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["models"][0]["in_flight"].as_u64().unwrap()
}

async fn chat(http: &reqwest::Client, node: &Node) -> u16 {
    let body = json!({"model": "m", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = http
        .post(format!("http://{}/v1/chat/completions", node.addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Reads `stream` up to `data: [DONE]`; returns the last few hundred bytes.
fn read_to_done(mut stream: std::net::TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let done = |r: &[u8]| {
        r[r.len().saturating_sub(40)..]
            .windows(12)
            .any(|w| w == b"data: [DONE]")
    };
    let mut rest = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while !done(&rest) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream ended without [DONE]");
        rest.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&rest[rest.len().saturating_sub(600)..]).into_owned()
}

#[actix_rt::test]
async fn a_client_that_never_reads_its_stream_is_cancelled_and_frees_the_model() {
    let dir = tempfile::tempdir().unwrap();
    // A worker as fast as it can go, and room for 16 unread events per request.
    let node = start(&dir, "token_ms=0", &["--stream-buffer=16".into()]).await;
    let http = reqwest::Client::new();
    let body = json!({"model": "m", "stream": true, "max_tokens": 100_000_000,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    // Blocking socket calls run off this thread, which runs the node's actors.
    let addr = node.addr();
    let silent = tokio::task::spawn_blocking(move || {
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        write!(
            silent,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // It reads one byte (the answer has begun), then nothing: once the
        // socket's buffers are full, the events wait in the node, until 16
        // of them are unread and the request is cancelled.
        let mut first = [0u8; 1];
        silent.read_exact(&mut first).unwrap();
        silent
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = in_flight(&http, &node).await;
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent request still holds the model (in_flight {n})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection is still open, the model serves others.
    assert_eq!(chat(&http, &node).await, 200);
    // What it did not read ends with the reason, then `[DONE]`.
    let tail = tokio::task::spawn_blocking(move || read_to_done(silent))
        .await
        .unwrap();
    assert!(tail.contains(r#""code":"client_too_slow""#), "{tail}");
    assert_eq!(chat(&http, &node).await, 200);
    assert_eq!(in_flight(&http, &node).await, 0);
    node.stop().await;
}

#[actix_rt::test]
async fn pulls_beyond_the_queue_are_refused_in_each_routes_shape() {
    // A source that accepts connections and never answers: pulls hang.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = |name: &str| format!("http://{}/{name}.gguf", sink.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    // The sink is on loopback, which `/pull` downloads from only when allowed.
    let node = start(
        &dir,
        "",
        &[
            "--max-queued-pulls=1".into(),
            "--pull-allow-local-urls".into(),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let router_pull = |model: &'static str| {
        let body = json!({"model": model, "task_id": null, "download_url": url(model)});
        let req = http
            .post(format!("http://{}/pull", node.addr()))
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let retry = r.headers().get("retry-after").cloned();
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        }
    };
    // Two run, one waits.
    for model in ["a", "b", "c"] {
        assert_eq!(router_pull(model).await.0, 200, "{model}");
    }
    // Joining one under way is not one more.
    assert_eq!(router_pull("c").await.0, 200);
    let (status, retry, body) = router_pull("d").await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "Retry-After");
    assert!(
        body["error"].as_str().unwrap().contains("waiting"),
        "the router's shape: {body}"
    );
    // Ollama's /api/pull is refused at once, before any streaming.
    let r = http
        .post(format!("http://{}/api/pull", node.addr()))
        .json(&json!({"model": "e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    // In Ollama's shape.
    assert!(body["error"].as_str().unwrap().contains("pull"), "{body}");
    // The node serves on.
    assert_eq!(chat(&http, &node).await, 200);
    node.stop().await;
}
