//! Supervision policy on a whole node with fake workers
//! (`examples/fake_worker.rs`; fault flags are the model file's content):
//! crash loops, admin verbs, on-demand loading, eviction, queues, idle TTL,
//! the admin key and GPU pinning. Fast, so every rule gets its own case.
//!
//! Time here is real, not paused: each case runs real worker processes (the
//! fake worker binary) over IPC, and tokio's paused clock auto-advances
//! whenever the runtime is idle, i.e. while it waits on a child process's
//! handshake or reply, which would fire every timeout at once. The timing
//! rules themselves (backoff, eviction, TTL expiry) are pure functions in
//! `src/policy/` with table tests that need no clock.

mod common;
use common::fake_worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use llm_node::{Args, Node};
use serde_json::{json, Value};

struct TestNode {
    node: Node,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl TestNode {
    /// A node serving `models` (`(name, fault flags)`) with `extra` flags.
    async fn start(models: &[(&str, &str)], extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = vec![
            "llm-node".into(),
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
        if !extra.iter().any(|a| a.starts_with("--worker-bin=")) {
            argv.push(format!("--worker-bin={}", fake_worker().display()));
        }
        argv.push("--shutdown-timeout-secs=2".into());
        argv.push("--restart-base-ms=20".into());
        // Tests never leave this machine: a pull goes to a closed loopback port.
        argv.push("--registry-url=http://127.0.0.1:9".into());
        argv.push("--hf-endpoint=http://127.0.0.1:9".into());
        argv.extend(extra.iter().map(|s| s.to_string()));
        let node = Node::start(Args::try_parse_from(argv).unwrap())
            .await
            .unwrap();
        TestNode {
            node,
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.addr())
    }

    fn model_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.gguf"))
    }

    async fn chat(&self, model: &str, max_tokens: u32) -> (u16, Value) {
        let body = json!({"model": model, "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": "hi"}]});
        let r = self
            .http
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn model(&self, name: &str) -> Value {
        let (_, v) = self
            .admin(reqwest::Method::GET, "/admin/models", None)
            .await;
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == name)
            .cloned()
            .unwrap()
    }

    async fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait_for(name, state, |m| m["state"] == state).await
    }

    async fn wait_for(&self, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.model(name).await;
            if cond(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{name} never {what}: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn write(path: &Path, flags: &str) {
    std::fs::write(path, flags).unwrap();
}

#[actix_rt::test]
async fn a_crash_loop_parks_the_model_as_failed_until_an_admin_restarts_it() {
    let t = TestNode::start(
        &[("good", ""), ("bad", "exit_at_start")],
        &["--crash-loop-max=3"],
    )
    .await;
    let m = t.wait_state("bad", "failed").await;
    assert!(m["detail"].as_str().unwrap().contains("crash loop"), "{m}");
    assert_eq!(t.model("good").await["state"], "ready");
    let metrics = t.metrics().await;
    assert!(
        metrics.contains(r#"llm_node_model_state{model="bad",state="failed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"llm_node_model_crashes_total{model="bad"} 3"#),
        "{metrics}"
    );
    // A failed model answers 503 with Retry-After; the other one serves.
    let (s, v) = t.chat("bad", 2).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("model_unavailable"))
    );
    assert_eq!(t.chat("good", 2).await.0, 200);

    // The admin fixes the file and restarts: it comes back.
    write(&t.model_file("bad"), "");
    let (s, v) = t
        .admin(reqwest::Method::POST, "/admin/models/bad/restart", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "ready");
    assert_eq!(t.chat("bad", 2).await.0, 200);
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_worker_crashing_mid_generation_restarts_with_backoff() {
    let t = TestNode::start(&[("m", "crash_after=3")], &["--crash-loop-max=100"]).await;
    t.wait_state("m", "ready").await;
    let (s, v) = t.chat("m", 10).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "worker_unavailable");
    let m = t
        .wait_for("m", "restarted", |m| {
            m["state"] == "ready" && m["restarts"].as_u64() >= Some(1)
        })
        .await;
    assert!(m["last_exit"].as_str().unwrap().contains("SIGABRT"), "{m}");
    t.node.stop().await;
}

#[actix_rt::test]
async fn models_load_on_demand_and_unload_through_the_admin_api() {
    let t = TestNode::start(&[("a", ""), ("b", "")], &["--preload=a"]).await;
    t.wait_state("a", "ready").await;
    assert_eq!(t.model("b").await["state"], "stopped");
    assert_eq!(t.chat("b", 2).await.0, 200, "first request loads b");
    assert_eq!(t.model("b").await["state"], "ready");
    let (s, v) = t
        .admin(reqwest::Method::POST, "/admin/models/b/unload", None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("stopped")));
    let (s, v) = t
        .admin(reqwest::Method::POST, "/admin/models/b/load", None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("ready")));
    let (s, _) = t
        .admin(reqwest::Method::POST, "/admin/models/nope/load", None)
        .await;
    assert_eq!(s, 404);
    t.node.stop().await;
}

#[actix_rt::test]
async fn eviction_never_touches_a_busy_model_the_new_load_waits() {
    let t = TestNode::start(
        &[("busy", "token_ms=20"), ("next", "")],
        &["--preload=none", "--max-loaded-models=1"],
    )
    .await;
    assert_eq!(t.chat("busy", 1).await.0, 200);
    // A 60-token generation (~1.2 s) keeps `busy` busy...
    let long = t.chat("busy", 60);
    // ...while `next` asks for the only slot.
    let next = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (s, _) = t.chat("next", 1).await;
        (s, Instant::now())
    };
    let ((s1, v1), (s2, next_done)) = tokio::join!(long, next);
    assert_eq!(s1, 200, "the busy model's request was cut: {v1}");
    assert_eq!(v1["usage"]["completion_tokens"], 60);
    assert_eq!(v1["choices"][0]["finish_reason"], "length");
    assert_eq!(s2, 200);
    let _ = next_done;
    assert_eq!(t.model("busy").await["state"], "stopped");
    assert_eq!(t.model("next").await["state"], "ready");
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_loading_model_is_never_evicted() {
    let t = TestNode::start(
        &[("slow", "load_ms=800"), ("other", "")],
        &["--preload=none", "--max-loaded-models=1"],
    )
    .await;
    let slow = t.chat("slow", 2);
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await; // `slow` is loading now
        t.chat("other", 2).await
    };
    let ((s1, v1), (s2, _)) = tokio::join!(slow, other);
    assert_eq!(s1, 200, "the loading model was evicted: {v1}");
    assert_eq!(s2, 200);
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let t = TestNode::start(&[("m", "token_ms=20")], &["--parallel=1", "--max-queue=1"]).await;
    t.wait_state("m", "ready").await;
    let body =
        json!({"model": "m", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]});
    let send = || {
        t.http
            .post(t.url("/v1/chat/completions"))
            .json(&body)
            .send()
    };
    let (r1, r2, r3) = tokio::join!(send(), send(), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send().await
    });
    let statuses = [r1.unwrap().status().as_u16(), r2.unwrap().status().as_u16()];
    assert_eq!(statuses, [200, 200]);
    let r3 = r3.unwrap();
    assert_eq!(r3.status().as_u16(), 429);
    assert_eq!(r3.headers()["retry-after"], "1");
    let v: Value = r3.json().await.unwrap();
    assert_eq!(v["error"]["code"], "queue_full");
    // Counted once, under the error's label and the status it was sent with;
    // the two served requests waited in the queue and were metered from arrival.
    let metrics = t.metrics().await;
    let refused = r#"llm_node_rejections_total{reason="queue_full",status="429"} 1"#;
    assert!(metrics.contains(refused), "{metrics}");
    assert!(
        metrics.contains(r#"llm_node_queue_wait_seconds_count{model="m"} 2"#),
        "{metrics}"
    );
    t.node.stop().await;
}

#[actix_rt::test]
async fn idle_models_unload_after_their_ttl_but_preloaded_ones_stay() {
    let t = TestNode::start(
        &[("keep", ""), ("lazy", "")],
        &["--preload=keep", "--idle-ttl-secs=1"],
    )
    .await;
    assert_eq!(t.chat("lazy", 1).await.0, 200);
    t.wait_state("lazy", "stopped").await;
    assert_eq!(t.model("keep").await["state"], "ready");
    t.node.stop().await;
}

#[actix_rt::test]
async fn the_admin_key_protects_admin_routes_only() {
    let t = TestNode::start(&[("m", "")], &["--admin-key=s3cret"]).await;
    let (s, v) = t.admin(reqwest::Method::GET, "/admin/models", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );
    let (s, _) = t
        .admin(reqwest::Method::GET, "/admin/models", Some("wrong"))
        .await;
    assert_eq!(s, 401);
    let (s, v) = t
        .admin(reqwest::Method::GET, "/admin/models", Some("s3cret"))
        .await;
    assert_eq!(s, 200, "{v}");
    t.node.wait_ready().await.unwrap();
    assert_eq!(
        t.chat("m", 1).await.0,
        200,
        "the OpenAI API needs no admin key"
    );
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_gpu_worker_on_a_node_without_gpu_says_models_fall_back_to_the_cpu() {
    // A CUDA build's `--version` on a machine without GPU; the rest is the fake worker.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cuda-worker");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then\n  echo 'llm-node-worker 0.1.0 (protocol {}; backends: CUDA, CPU; GPUs: none)'\n  exit 0\nfi\nexec {} \"$@\"\n",
            llm_node_protocol::PROTOCOL_VERSION,
            fake_worker().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = TestNode::start(&[("a", "")], &[&format!("--worker-bin={}", bin.display())]).await;
    t.wait_state("a", "ready").await;
    let (_, g) = t.admin(reqwest::Method::GET, "/admin/gpus", None).await;
    assert_eq!(g["worker_backends"], json!(["CUDA", "CPU"]), "{g}");
    let warning = g["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {g}"));
    assert!(
        warning.contains("[CUDA]") && warning.contains("models run on the CPU"),
        "{warning}"
    );
    assert_eq!(
        t.chat("a", 1).await.0,
        200,
        "the model still serves, on the CPU"
    );
    t.node.stop().await;
}

#[actix_rt::test]
async fn simulated_gpus_place_and_pin_models() {
    let t = TestNode::start(
        &[("a", ""), ("b", "")],
        &["--simulated-gpus=A:24,B:24:20", "--pin=b=0"],
    )
    .await;
    let a = t.wait_state("a", "ready").await;
    let b = t.wait_state("b", "ready").await;
    assert_eq!(
        a["gpus"],
        json!([0]),
        "a goes to the GPU with the most room"
    );
    assert_eq!(b["gpus"], json!([0]), "b is pinned");
    let (_, g) = t.admin(reqwest::Method::GET, "/admin/gpus", None).await;
    assert_eq!(g["probe"], "simulated");
    assert_eq!(g["gpus"][1]["simulated"], true);
    // Re-pinning applies at the next start.
    let r = t
        .http
        .put(t.url("/admin/models/a/gpus"))
        .json(&json!({"gpus": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, v) = t
        .admin(reqwest::Method::POST, "/admin/models/a/restart", None)
        .await;
    assert_eq!(v["gpus"], json!([1]));
    let r = t
        .http
        .put(t.url("/admin/models/a/gpus"))
        .json(&json!({"gpus": [7]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_worker_that_never_gets_ready_is_a_start_failure() {
    let t = TestNode::start(
        &[("m", "never_ready")],
        &["--ready-timeout-secs=1", "--crash-loop-max=1"],
    )
    .await;
    let m = t.wait_state("m", "failed").await;
    assert!(
        m["detail"].as_str().unwrap().contains("not ready after"),
        "{m}"
    );
    // The stuck process is SIGKILLed; its pid disappears once it is reaped.
    t.wait_for("m", "reaped", |m| m["pid"].is_null()).await;
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_hanging_fake_worker_is_killed_by_liveness_and_restarted() {
    let t = TestNode::start(
        &[("m", "hang_after=2")],
        &[
            "--liveness-interval-ms=100",
            "--liveness-timeout-ms=400",
            "--crash-loop-max=100",
        ],
    )
    .await;
    t.wait_state("m", "ready").await;
    let (s, v) = t.chat("m", 10).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("worker_unavailable"))
    );
    // The client may see the broken channel before the actor handles the exit.
    let m = t
        .wait_for("m", "restarted", |m| {
            m["state"] == "ready" && m["restarts"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(m["last_exit"], "killed: unresponsive");
    t.node.stop().await;
}

/// The worker's reader answers pings even while its engine sits in one step,
/// so what kills a worker whose process is fine is the engine's progress: a
/// step past `--liveness-stall-ms` (not the ping timeout) gets it killed, with
/// that reason; a worker whose steps keep completing is never killed, however
/// long its work takes in all.
#[actix_rt::test]
async fn a_stuck_engine_is_killed_after_the_stall_limit_but_one_making_progress_never_is() {
    let t = TestNode::start(
        &[("stuck", "stuck_after=2"), ("steady", "token_ms=100")],
        &[
            "--liveness-interval-ms=50",
            "--liveness-timeout-ms=200",
            "--liveness-stall-ms=1500",
            "--crash-loop-max=100",
        ],
    )
    .await;
    t.wait_state("stuck", "ready").await;
    t.wait_state("steady", "ready").await;
    let steady = {
        let (http, url) = (t.http.clone(), t.url("/v1/chat/completions"));
        // 25 steps of 100 ms: 2.5 s of work, longer than the stall limit.
        let body = json!({"model": "steady", "max_tokens": 25,
                          "messages": [{"role": "user", "content": "hi"}]});
        actix_rt::spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let asked = Instant::now();
    let (s, v) = t.chat("stuck", 10).await;
    let cut_after = asked.elapsed();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("worker_unavailable")),
        "{v}"
    );
    // Pings were answered all along (their timeout is 200 ms): only the
    // stall limit ended it.
    assert!(
        cut_after >= Duration::from_millis(1500),
        "killed after {cut_after:?}, before the stall limit"
    );
    let m = t
        .wait_for("stuck", "restarted", |m| {
            m["state"] == "ready" && m["restarts"].as_u64() >= Some(1)
        })
        .await;
    let last_exit = m["last_exit"].as_str().unwrap();
    assert!(
        last_exit.starts_with("killed: engine stuck in one step for "),
        "{m}"
    );

    let (s, v) = steady.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 25);
    let m = t.model("steady").await;
    assert_eq!(
        (m["restarts"].as_u64(), &m["state"]),
        (Some(0), &json!("ready")),
        "{m}"
    );
    t.node.stop().await;
}

#[actix_rt::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_ones() {
    let t = TestNode::start(&[("m", "token_ms=20")], &[]).await;
    t.wait_state("m", "ready").await;
    let (http, chat_url, ready_url) = (
        t.http.clone(),
        t.url("/v1/chat/completions"),
        t.url("/health/ready"),
    );
    let body =
        json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let long = {
        let (http, url, body) = (http.clone(), chat_url.clone(), body.clone());
        actix_rt::spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    t.wait_for("m", "busy", |m| m["in_flight"] == 1).await;
    let TestNode {
        node, dir: _dir, ..
    } = t;
    let stopping = actix_rt::spawn(node.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let r = http.get(ready_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "readiness while draining");
    let r = http.post(chat_url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "shutting_down");

    let (status, v) = long.await.unwrap();
    assert_eq!(status, 200, "the in-flight request was cut: {v}");
    assert_eq!(v["usage"]["completion_tokens"], 50);
    stopping.await.unwrap();
}

#[actix_rt::test]
async fn a_model_that_can_never_load_is_parked_at_once_with_the_reason() {
    let t = TestNode::start(
        &[("good", ""), ("bad", "bad_file")],
        &["--crash-loop-max=5"],
    )
    .await;
    let m = t.wait_state("bad", "failed").await;
    let detail = m["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot load") && detail.contains("template"),
        "{m}"
    );
    assert_eq!(m["restarts"], 0, "not retried as a crash: {m}");
    assert_eq!(t.model("good").await["state"], "ready");
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_worker_that_was_serving_is_always_restarted_never_parked() {
    // crash_after=1: every worker reaches Ready, serves one token and aborts;
    // with a crash-loop limit of 2, the old policy parked it after 2 crashes.
    let t = TestNode::start(&[("m", "crash_after=1")], &["--crash-loop-max=2"]).await;
    for round in 1..=4u64 {
        t.wait_state("m", "ready").await;
        let (s, _) = t.chat("m", 4).await;
        assert_eq!(s, 503, "round {round}: the worker dies mid-request");
        let m = t
            .wait_for("m", "restarted", |m| {
                m["state"] == "ready" && m["restarts"].as_u64() >= Some(round)
            })
            .await;
        assert_ne!(m["state"], "failed", "{m}");
    }
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_worker_whose_channel_broke_is_restarted_even_though_its_process_lives() {
    // After 2 tokens the worker sends an undecodable message and goes quiet
    // with its process alive: the connection is dead, so every request would
    // get 503 while the model looked ready. The liveness ping must catch it.
    let t = TestNode::start(
        &[("m", "garbage_after=2")],
        &["--liveness-interval-ms=100", "--liveness-timeout-ms=5000"],
    )
    .await;
    let first = t.wait_state("m", "ready").await["pid"].clone();
    let (s, v) = t.chat("m", 8).await;
    assert_eq!(s, 503, "{v}");
    let m = t
        .wait_for("m", "restarted", |m| {
            m["state"] == "ready" && m["pid"] != first && m["restarts"].as_u64() >= Some(1)
        })
        .await;
    assert!(m["last_exit"].is_string(), "{m}");
    t.node.stop().await;
}

#[actix_rt::test]
async fn ignore_eos_and_max_tokens_obey_the_operator_limits() {
    let post = |t: &TestNode, body: Value| {
        let req = t.http.post(t.url("/v1/chat/completions")).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let msg = json!([{"role": "user", "content": "hi"}]);
    let t = TestNode::start(&[("m", "")], &["--max-tokens-limit=4"]).await;
    t.wait_state("m", "ready").await;
    let (s, v) = post(
        &t,
        json!({"model": "m", "messages": msg, "ignore_eos": true}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("ignore_eos")),
        "{v}"
    );
    let (s, v) = post(&t, json!({"model": "m", "messages": msg, "max_tokens": 5})).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("max_tokens")),
        "{v}"
    );
    let (s, v) = post(&t, json!({"model": "m", "messages": msg})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["usage"]["completion_tokens"], 4,
        "the ceiling applies: {v}"
    );
    let stop = "x".repeat(2000);
    let (s, v) = post(&t, json!({"model": "m", "messages": msg, "stop": stop})).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("stop")),
        "{v}"
    );
    t.node.stop().await;
    let t = TestNode::start(&[("m", "")], &["--allow-ignore-eos"]).await;
    t.wait_state("m", "ready").await;
    let (s, v) = post(
        &t,
        json!({"model": "m", "messages": msg, "ignore_eos": true, "max_tokens": 3}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_client_that_leaves_a_non_streaming_request_cancels_its_generation() {
    // 200 tokens at 50 ms each would run for 10 s; the client leaves after 0.5 s.
    let t = TestNode::start(&[("m", "token_ms=50")], &[]).await;
    t.wait_state("m", "ready").await;
    let body = json!({"model": "m", "max_tokens": 200,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    // A raw socket, so that leaving really closes the connection (an HTTP
    // client library may keep it open in its pool).
    let mut sock = tokio::net::TcpStream::connect(t.node.addr()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    use tokio::io::AsyncWriteExt;
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body.as_bytes()).await.unwrap();
    t.wait_for("m", "busy", |m| m["in_flight"] == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(sock);
    let left = Instant::now();
    t.wait_for("m", "idle again", |m| m["in_flight"] == 0).await;
    assert!(
        left.elapsed() < Duration::from_secs(5),
        "the generation ran on after its client left: {:?}",
        left.elapsed()
    );
    let metrics = t.metrics().await;
    assert!(metrics.contains("outcome=\"cancelled\""), "{metrics}");
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_request_that_waits_too_long_for_a_slot_gets_a_clear_503() {
    let t = TestNode::start(
        &[("m", "token_ms=100")],
        &["--parallel=1", "--queue-timeout-secs=1"],
    )
    .await;
    t.wait_state("m", "ready").await;
    let long = {
        let req = t.http.post(t.url("/v1/chat/completions")).json(&json!({
            "model": "m", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}));
        actix_rt::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    t.wait_for("m", "busy", |m| m["in_flight"] == 1).await;
    let asked = Instant::now();
    let (s, v) = t.chat("m", 2).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("timeout")),
        "{v}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        long.await.unwrap().unwrap(),
        200,
        "the running request is untouched"
    );
    t.node.stop().await;
}

#[actix_rt::test]
async fn a_request_body_that_stops_arriving_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestNode::start(&[("m", "")], &["--body-timeout-secs=1"]).await;
    t.wait_state("m", "ready").await;
    let mut sock = tokio::net::TcpStream::connect(t.node.addr()).await.unwrap();
    sock.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.contains("body_timeout") || head.contains("stopped arriving"),
        "{head}"
    );
    assert_eq!(t.chat("m", 2).await.0, 200, "the node still serves");
    t.node.stop().await;
}

/// Hostile inputs on every route: malformed, wrong-typed, deeply nested and
/// oversized bodies, odd methods and paths. No 5xx, no panic, and the model
/// still serves afterwards.
#[actix_rt::test]
async fn hostile_inputs_on_every_route_get_4xx_and_the_node_keeps_serving() {
    let t = TestNode::start(&[("m", "")], &[]).await;
    t.wait_state("m", "ready").await;
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge = format!("{{\"model\":\"m\",\"x\":\"{}\"}}", "a".repeat(17 << 20));
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        deep.into_bytes(),
        huge.into_bytes(),
        br#"{"model": 5, "messages": "x", "prompt": {}, "input": [[1e400]]}"#.to_vec(),
        br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e30, "n": -1, "temperature": "hot"}"#.to_vec(),
        br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}], "tools": [{"type": "function", "function": {"name": "f", "parameters": 7}}]}"#.to_vec(),
        br#"{"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}], "logit_bias": {"-1": 5}}"#.to_vec(),
        br##"{"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}}"##.to_vec(),
        br#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "grammar": "root ::= root"}"#.to_vec(),
        br#"{"model": "m", "prompt": "x", "logprobs": 99, "echo": true}"#.to_vec(),
        br#"{"model": "m", "input": ["", "x"], "encoding_format": "hex"}"#.to_vec(),
    ];
    let posts = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/admin/models/m/load",
        "/admin/models/m/gpus",
        "/admin/models/nope/restart",
        "/api/pull",
        "/pull",
    ];
    let mut five_xx = Vec::new();
    for path in posts {
        for body in &bodies {
            let r = t
                .http
                .post(t.url(path))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            // A load of an existing model may succeed; nothing may be a 5xx,
            // except the 502 of a pull whose registry (a closed loopback port
            // here) cannot be reached: an upstream failure, correctly named.
            let upstream = status == 502 && path.ends_with("pull");
            if status >= 500 && !upstream {
                five_xx.push(format!(
                    "POST {path} {} -> {status}",
                    String::from_utf8_lossy(&body[..body.len().min(60)])
                ));
            }
        }
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/models/%00%ff"),
        (reqwest::Method::GET, "/v1/nope"),
        (reqwest::Method::DELETE, "/v1/chat/completions"),
        (reqwest::Method::GET, "/api/logs?tail=-5"),
        (reqwest::Method::GET, "/api/logs?tail=99999999999999999999"),
        (reqwest::Method::DELETE, "/api/delete"),
        (reqwest::Method::PUT, "/admin/models"),
    ] {
        let r = t
            .http
            .request(method.clone(), t.url(path))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() >= 500 {
            five_xx.push(format!("{method} {path} -> {}", r.status()));
        }
    }
    assert!(five_xx.is_empty(), "unexpected 5xx: {five_xx:#?}");
    assert_eq!(t.model("m").await["state"], "ready");
    assert_eq!(t.chat("m", 2).await.0, 200, "the model still serves");
    t.node.stop().await;
}
