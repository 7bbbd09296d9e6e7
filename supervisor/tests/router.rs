//! Router membership against a fake llm-router (`fake_router/`, written from
//! `shared/router-contract.md`) on loopback, with whole nodes on port 0 and
//! fake worker processes (`examples/fake_worker.rs`): registration, heartbeats,
//! re-registration, outages, `/pull`, model sync, `/api/logs`, and a router
//! that misbehaves. Heartbeats run every 200 ms here.

mod common;
use common::fake_worker;

mod fake_router;

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use fake_router::{FakeRouter, Mode, ServedFile};
use llm_node::{Args, Node};
use serde_json::{json, Value};

const HEARTBEAT: &str = "0.2";

/// A node in router mode with one simulated GPU, its models dir in `dir`, serving
/// `models` (name, fault flags), plus `extra` flags.
/// A loopback address nothing listens on (port 9, discard, is never served here).
const UNREACHABLE: &str = "http://127.0.0.1:9";

fn args(dir: &Path, router: &str, models: &[(&str, &str)], extra: &[&str]) -> Args {
    let models_dir = dir.join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    let mut argv = vec![
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
        format!("--router-url={router}"),
        "--simulated-gpus=H100:80".into(),
        format!("--heartbeat-secs={HEARTBEAT}"),
        format!("--models-dir={}", models_dir.display()),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=5".into(),
        // Tests never leave this machine: a pull by name (the null-sources
        // contract test pulls gpt-oss:20b) goes to a closed loopback port,
        // never to the real registry or Hub.
        format!("--registry-url={UNREACHABLE}"),
        format!("--hf-endpoint={UNREACHABLE}"),
    ];
    if !extra.iter().any(|a| a.starts_with("--model-sync-secs")) {
        argv.push("--model-sync-secs=0".into());
    }
    for (name, flags) in models {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, flags).unwrap();
        argv.push(format!("--model={name}={}", path.display()));
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::try_parse_from(argv).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get_json(node: &Node, path: &str) -> Value {
    client()
        .get(format!("http://{}{path}", node.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The value of the unlabelled metric `name` on the node's `/metrics`.
async fn metric(node: &Node, name: &str) -> f64 {
    let page = client()
        .get(format!("http://{}/metrics", node.addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{page}"))
}

async fn pull(node: &Node, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("http://{}/pull", node.addr()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn chat(node: &Node, model: &str) -> (u16, String) {
    let resp = client()
        .post(format!("http://{}/v1/chat/completions", node.addr()))
        .json(&json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Polls `cond` every 20 ms until it holds or `secs` pass.
async fn wait_for(what: &str, secs: f64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_messages_contain(entries: &Value, needle: &str) -> bool {
    entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"].as_str().unwrap_or("").contains(needle))
}

#[actix_rt::test]
async fn node_registers_after_the_probe_and_heartbeats_with_its_token() {
    let router = FakeRouter::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("Alpha", "")], &[]))
        .await
        .unwrap();
    wait_for("two accepted heartbeats", 10.0, || {
        router.accepted_heartbeats().len() >= 2
    })
    .await;
    let reg = &router.registrations()[0];
    assert_eq!(reg.status, 201);
    assert_eq!(reg.body["runtime_port"], node.addr().port() - 1);
    assert_eq!(reg.body["ip_address"], "127.0.0.1");
    assert_eq!(reg.body["gpu_available"], true);
    assert_eq!(
        reg.body["gpu_devices"],
        json!([{"model": "H100", "count": 1, "memory": 80u64 << 30}])
    );
    let probe = reg.probe.as_ref().expect("probe answered before the reply");
    assert_eq!(probe["data"][0]["id"], "Alpha");
    assert!(probe["ready_models"].is_array(), "{probe}");
    assert!(probe["initializing"].is_boolean(), "{probe}");

    let beats = router.accepted_heartbeats();
    assert!(beats.iter().all(|b| b.token.as_deref() == Some(&reg.token)));
    wait_for("alpha reported as loaded", 10.0, || {
        router.accepted_heartbeats().last().unwrap().body["loaded_models"] == json!(["alpha"])
    })
    .await;
    let last = router.accepted_heartbeats().last().unwrap().body.clone();
    assert_eq!(last["node_id"], reg.node_id.as_str());
    assert_eq!(last["initializing"], false);
    assert!(last["cpu_usage"].is_number() && last["memory_usage"].as_f64().unwrap() > 0.0);
    assert_eq!(last["gpu_model_name"], "H100");
    assert_eq!(last["gpu_memory_total_mb"], 80 * 1024);
    assert!(last["active_requests"].is_u64());

    // The router's auto-distribution /pull (null sources) got an immediate 200.
    wait_for("auto-distribution pull answered", 5.0, || {
        !router.state().auto_pulls.is_empty()
    })
    .await;
    assert_eq!(router.state().auto_pulls[0].1, 200);
    node.stop().await;
}

#[actix_rt::test]
async fn heartbeat_401_reregisters_and_carries_on_with_the_new_token() {
    let router = FakeRouter::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    wait_for("first heartbeat", 10.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;
    router.state().revoke_tokens();
    wait_for("second registration", 5.0, || {
        router.registrations().len() >= 2
    })
    .await;
    let regs = router.registrations();
    assert_eq!(regs[1].status, 200, "same machine and port: updated");
    assert_eq!(regs[1].node_id, regs[0].node_id);
    assert_ne!(regs[1].token, regs[0].token, "token rotated");
    let new_token = regs[1].token.clone();
    wait_for("heartbeat with the new token", 5.0, || {
        router
            .accepted_heartbeats()
            .iter()
            .any(|h| h.token.as_deref() == Some(&new_token))
    })
    .await;
    let rejected: Vec<_> = router
        .state()
        .heartbeats
        .iter()
        .filter(|h| h.status == 401)
        .map(|h| h.token.clone())
        .collect();
    assert_eq!(rejected.len(), 1, "one 401, then re-registration");
    assert_eq!(
        metric(&node, "llm_node_router_heartbeat_failures_total").await,
        1.0
    );
    assert_eq!(metric(&node, "llm_node_router_registered").await, 1.0);
    node.stop().await;
}

#[actix_rt::test]
async fn node_registers_once_the_router_appears_and_serves_meanwhile() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut router = FakeRouter::stopped_on(port);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    node.wait_ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = chat(&node, "a").await;
    assert_eq!(status, 200, "serves while the router is down: {body}");
    assert_eq!(metric(&node, "llm_node_router_configured").await, 1.0);
    assert_eq!(metric(&node, "llm_node_router_registered").await, 0.0);
    let last = "llm_node_router_last_heartbeat_success_timestamp_seconds";
    assert_eq!(metric(&node, last).await, 0.0);
    router.start_http();
    let appeared = Instant::now();
    wait_for("registration once the router is up", 5.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;
    assert_eq!(metric(&node, "llm_node_router_registered").await, 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The router records the heartbeat before the node reads its answer.
    let mut beat = 0.0;
    for _ in 0..40 {
        beat = metric(&node, last).await;
        if beat > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!((now - 10.0..=now + 1.0).contains(&beat), "{beat} vs {now}");
    assert!(
        appeared.elapsed() < Duration::from_secs(2),
        "backoff is capped by the heartbeat interval: {:?}",
        appeared.elapsed()
    );
    node.stop().await;
}

#[actix_rt::test]
async fn restarted_router_sees_the_node_again_within_a_heartbeat() {
    let mut router = FakeRouter::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    wait_for("registered", 10.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;

    // Restart keeping its database: heartbeats simply resume.
    router.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = router.accepted_heartbeats().len();
    router.start_http();
    let back = Instant::now();
    wait_for("heartbeat after restart", 5.0, || {
        router.accepted_heartbeats().len() > before
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(router.registrations().len(), 1);

    // Restart with a fresh database: 401, re-register, heartbeats.
    router.stop().await;
    router.state().forget_nodes();
    let before = router.accepted_heartbeats().len();
    router.start_http();
    let back = Instant::now();
    wait_for("re-registered after a fresh restart", 5.0, || {
        router.accepted_heartbeats().len() > before
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(router.registrations().len(), 2);
    node.stop().await;
}

#[actix_rt::test]
async fn shutdown_tells_the_router_before_draining() {
    let router = FakeRouter::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    wait_for("registered", 10.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;
    let node_id = router.registrations()[0].node_id.clone();
    node.stop().await;
    assert_eq!(router.state().disconnects, [node_id]);
}

#[actix_rt::test]
async fn pull_with_null_sources_is_accepted_and_fails_in_the_log_only() {
    llm_node::init_logging(llm_node::LogFormat::Text);
    let router = FakeRouter::start();
    router.state().auto_distribute = false;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[], &[]))
        .await
        .unwrap();
    let (status, body) = pull(
        &node,
        json!({"model": "gpt-oss:20b", "task_id": "t-null", "path": null, "download_url": null,
               "chat_template": null}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "accepted"})));
    let (status, _) = pull(&node, json!({"model": "qwen3-coder:30b"})).await;
    assert_eq!(status, 200, "missing keys are fine too");
    let (status, body) = pull(&node, json!({"task_id": "x"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("model required"))
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = get_json(&node, "/api/logs?tail=1000").await;
        if log_messages_contain(&logs, "model pull failed") {
            break;
        }
        assert!(Instant::now() < deadline, "no failure logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = get_json(&node, "/health").await;
    assert_eq!(health["status"], "ok");
    assert!(
        router.progress_of("t-null").is_empty(),
        "a failure cannot be reported"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn pull_from_a_readable_path_is_served_at_once() {
    let router = FakeRouter::start();
    router.state().auto_distribute = false;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("router-side/shared_model.gguf");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    // A `path` is copied only from the directories the operator allows.
    let allow = format!("--pull-path-allow={}", source.parent().unwrap().display());
    let node = Node::start(args(dir.path(), &router.url(), &[], &[&allow]))
        .await
        .unwrap();
    wait_for("registered", 10.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;
    std::fs::write(&source, b"GGUF").unwrap();
    let (status, _) = pull(
        &node,
        json!({"model": "shared:7b", "task_id": "t-path", "path": source, "download_url": null,
               "chat_template": "{{ messages }}"}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for("final progress", 10.0, || {
        router
            .progress_of("t-path")
            .last()
            .is_some_and(|p| p["progress"] == 1.0)
    })
    .await;
    let (status, body) = chat(&node, "shared:7b").await;
    assert_eq!(status, 200, "{body}");
    let dest = dir.path().join("models/shared_7b/model.gguf");
    assert_eq!(std::fs::read(&dest).unwrap(), b"GGUF");
    assert!(!dir
        .path()
        .join("models/shared_7b/model.gguf.partial")
        .exists());
    let meta: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("models/shared_7b/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["chat_template"], "{{ messages }}");
    let list = get_json(&node, "/v1/models").await;
    assert_eq!(list["data"][0]["id"], "shared:7b");
    assert_eq!(list["ready_models"], json!([1, 1]));
    wait_for("heartbeat lists the pulled model", 5.0, || {
        router
            .accepted_heartbeats()
            .last()
            .is_some_and(|h| h.body["loaded_models"] == json!(["shared:7b"]))
    })
    .await;
    // Pulling it again completes the new task at once.
    pull(&node, json!({"model": "SHARED:7b", "task_id": "t-again"})).await;
    wait_for("second task completed", 5.0, || {
        !router.progress_of("t-again").is_empty()
    })
    .await;
    node.stop().await;
}

#[actix_rt::test]
async fn pull_from_a_url_resumes_verifies_and_reports_monotonic_integer_progress() {
    let router = FakeRouter::start();
    router.state().auto_distribute = false;
    // Not UTF-8, so the fake worker reads no fault flags: a healthy fake model.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    router.state().files.insert(
        "big.gguf".into(),
        ServedFile {
            data: data.clone(),
            chunk: 100_000,
            chunk_delay: Duration::from_millis(60),
            drop_once_after: Some(700_000),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[], &[]))
        .await
        .unwrap();
    let (status, _) = pull(
        &node,
        json!({"model": "big", "task_id": "t-url", "path": "/not/on/this/host.gguf",
               "download_url": format!("{}/files/big.gguf", router.url()), "sha256": sha}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for("final progress", 20.0, || {
        router
            .progress_of("t-url")
            .last()
            .is_some_and(|p| p["progress"] == 1.0)
    })
    .await;
    let reports = router.progress_of("t-url");
    assert!(reports.len() >= 3, "{reports:?}");
    let values: Vec<f64> = reports
        .iter()
        .map(|r| r["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {values:?}"
    );
    assert!(values[..values.len() - 1].iter().all(|v| *v < 1.0));
    assert!(
        reports
            .iter()
            .all(|r| r.get("speed").is_none_or(|s| s.is_null() || s.is_u64())),
        "integer speed: {reports:?}"
    );
    assert!(reports.iter().any(|r| r["speed"].is_u64()));
    assert_eq!(
        router.state().ranges,
        ["bytes=700000-"],
        "resumed after the drop"
    );
    let dest = dir.path().join("models/big_latest/model.gguf");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let (status, body) = chat(&node, "big").await;
    assert_eq!(status, 200, "{body}");
    node.stop().await;
}

#[actix_rt::test]
async fn pull_from_an_unreachable_url_is_logged_and_the_node_stays_healthy() {
    llm_node::init_logging(llm_node::LogFormat::Text);
    let router = FakeRouter::start();
    router.state().auto_distribute = false;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, _) = pull(
        &node,
        json!({"model": "unreachable:1b", "task_id": "t-dead",
               "download_url": format!("http://{dead}/x.gguf")}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = chat(&node, "a").await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logs = get_json(&node, "/api/logs?tail=1000").await;
        let failed = logs["entries"].as_array().unwrap().iter().any(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("model pull failed")
                && e["fields"]["model"] == "unreachable:1b"
        });
        if failed {
            break;
        }
        assert!(Instant::now() < deadline, "no failure logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir.path().join("models/unreachable_1b/model.gguf").exists());
    let list = get_json(&node, "/v1/models").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(get_json(&node, "/health").await["status"], "ok");
    node.stop().await;
}

#[actix_rt::test]
async fn logs_endpoint_returns_router_log_entries() {
    llm_node::init_logging(llm_node::LogFormat::Text);
    let dir = tempfile::tempdir().unwrap();
    let router = FakeRouter::start();
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    tracing::info!(answer = 42u64, "a line for the router");
    let logs = get_json(&node, "/api/logs?tail=5").await;
    let entries = logs["entries"].as_array().unwrap();
    assert!(!entries.is_empty() && entries.len() <= 5, "{logs}");
    for e in entries {
        for key in ["timestamp", "level", "target", "message", "fields"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert!(e["fields"].is_object());
    }
    let all = get_json(&node, "/api/logs").await;
    assert!(log_messages_contain(&all, "a line for the router"));
    node.stop().await;
}

#[actix_rt::test]
async fn model_sync_pulls_what_the_router_lists_with_its_api_key() {
    let router = FakeRouter::start();
    {
        let mut s = router.state();
        s.auto_distribute = false;
        s.api_key = Some("sk_test".into());
        s.files.insert(
            "synced.gguf".into(),
            ServedFile {
                data: b"GGUF".to_vec(),
                chunk: 4,
                ..ServedFile::default()
            },
        );
        s.models = vec![
            json!({"id": "gpt-oss:20b", "object": "model", "created": 0, "owned_by": "coordinator"}),
            json!({"id": "synced:1b", "object": "model", "created": 0, "owned_by": "coordinator",
                   "download_url": "/files/synced.gguf"}),
        ];
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(args(
        dir.path(),
        &router.url(),
        &[],
        &["--model-sync-secs=0.3", "--router-api-key=sk_test"],
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = get_json(&node, "/v1/models").await;
        let ids: Vec<_> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect();
        if ids == [json!("synced:1b")] {
            break;
        }
        assert!(Instant::now() < deadline, "not synced: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = chat(&node, "synced:1b").await;
    assert_eq!(status, 200, "{body}");
    node.stop().await;
}

/// Serving must not wait for the router, whatever it does.
async fn serving_is_fast(node: &Node) {
    for _ in 0..3 {
        let start = Instant::now();
        let (status, body) = chat(node, "a").await;
        assert_eq!(status, 200, "{body}");
        let health = get_json(node, "/health").await;
        assert_eq!(health["status"], "ok");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[actix_rt::test]
async fn a_misbehaving_router_never_blocks_serving_and_is_rejoined_when_it_recovers() {
    let mut router = FakeRouter::start();
    router.state().auto_distribute = false;
    let dir = tempfile::tempdir().unwrap();
    router.set_mode(Mode::Error5xx);
    let node = Node::start(args(dir.path(), &router.url(), &[("a", "")], &[]))
        .await
        .unwrap();
    node.wait_ready().await.unwrap();
    serving_is_fast(&node).await;
    router.set_mode(Mode::Garbage);
    serving_is_fast(&node).await;
    router.set_mode(Mode::Slow(Duration::from_secs(20)));
    serving_is_fast(&node).await;
    router.stop().await;
    router.start_raw(false); // accept and drop every connection
    serving_is_fast(&node).await;
    router.stop().await;
    router.start_raw(true); // bytes that are not HTTP
    serving_is_fast(&node).await;
    assert!(router.accepted_heartbeats().is_empty());

    router.stop().await;
    router.set_mode(Mode::Normal);
    router.start_http();
    wait_for("joined once the router behaves", 40.0, || {
        !router.accepted_heartbeats().is_empty()
    })
    .await;
    node.stop().await;
}

#[actix_rt::test]
async fn router_mode_without_a_gpu_refuses_to_start_and_says_how_to_run_standalone() {
    if !llm_node::gpu::detect(None).unwrap().devices().is_empty() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut argv = args(dir.path(), "http://127.0.0.1:9", &[("a", "")], &[]);
    argv.supervision.simulated_gpus = None;
    let err = Node::start(argv).await.err().expect("refused").to_string();
    assert!(err.contains("needs a GPU"), "{err}");
    assert!(err.contains("LLM_ROUTER_URL"), "{err}");
}
