//! A whole node on port 0 with fake worker processes (`examples/fake_worker.rs`, fault flags in the model file):
//! the real spawn, handshake, HTTP server and shutdown, without a model.

mod common;
use common::fake_worker;

use std::time::Duration;

use clap::Parser;
use llm_node::{Args, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `models` are `(name, fault flags)`; the flags become the fake model file.
fn args(dir: &tempfile::TempDir, models: &[(&str, &str)]) -> Args {
    let mut argv = vec![
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
    ];
    for (name, flags) in models {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, flags).unwrap();
        argv.push(format!("--model={name}={}", path.display()));
    }
    argv.push(format!("--worker-bin={}", fake_worker().display()));
    argv.push("--shutdown-timeout-secs=5".into());
    Args::try_parse_from(argv).unwrap()
}

/// A minimal HTTP/1.1 exchange; returns the status line and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[actix_rt::test]
async fn node_serves_a_fake_worker_on_port_0_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(&dir, &[("alpha", "")])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), node.wait_ready())
        .await
        .expect("ready in time")
        .expect("ready");
    let addr = node.addr();
    assert_ne!(addr.port(), 0);

    let (status, body) = http(addr, "GET", "/health", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"ok\""));

    let chat = r#"{"model":"ALPHA","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body) = http(addr, "POST", "/v1/chat/completions", chat).await;
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains("tok0 tok1"), "{body}");

    let statuses = node.models().statuses().await;
    let pid = statuses[0].1.pid.expect("worker running");

    node.stop().await;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    assert!(!alive, "worker {pid} still running after stop");
}

#[actix_rt::test]
async fn a_model_that_fails_to_load_is_reported_and_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(&dir, &[("initfail", "fail_init")]))
        .await
        .unwrap();
    let err = node.wait_ready().await.unwrap_err();
    assert!(err.to_string().contains("fail_init"), "{err}");
    let chat = r#"{"model":"initfail","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body) = http(node.addr(), "POST", "/v1/chat/completions", chat).await;
    assert!(status.contains("503"), "{status} {body}");
    node.stop().await;
}
