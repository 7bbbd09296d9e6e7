//! The models configuration file on a whole node with fake workers
//! (`examples/fake_worker.rs`; a model file's content is its fault flags):
//! aliases and `:latest`, per-model settings reaching the worker, reload
//! through the admin API and SIGHUP's path (only changed models restart, an
//! in-flight request on an unchanged model is unaffected, new models appear,
//! removed ones go, a bad file changes nothing), and a node with no models.

mod common;
use common::fake_worker;

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
    /// A node with `models.toml` = `config` in a directory holding the fake
    /// model files `files` (`(name, flags)`).
    async fn start(files: &[(&str, &str)], config: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        for (name, flags) in files {
            std::fs::write(dir.path().join(name), flags).unwrap();
        }
        std::fs::write(dir.path().join("models.toml"), config).unwrap();
        let argv = vec![
            "llm-node".to_string(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--loopback-only".into(),
            format!(
                "--models-config={}",
                dir.path().join("models.toml").display()
            ),
            format!("--store-dir={}", dir.path().join("store").display()),
            format!("--worker-bin={}", fake_worker().display()),
            "--shutdown-timeout-secs=2".into(),
            "--registry-url=http://127.0.0.1:9".into(),
            "--hf-endpoint=http://127.0.0.1:9".into(),
        ];
        let node = Node::start(Args::try_parse_from(argv).unwrap())
            .await
            .unwrap();
        node.wait_ready().await.unwrap();
        TestNode {
            node,
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.addr())
    }

    fn write_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("models.toml"), config).unwrap();
    }

    async fn reload(&self) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/admin/reload"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn chat(&self, model: &str, max_tokens: Option<u32>) -> (u16, Value) {
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        if let Some(n) = max_tokens {
            body["max_tokens"] = json!(n);
        }
        let r = self
            .http
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn models(&self) -> Vec<Value> {
        let r = self
            .http
            .get(self.url("/admin/models"))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        body["models"].as_array().unwrap().clone()
    }

    async fn model(&self, id: &str) -> Option<Value> {
        self.models().await.into_iter().find(|m| m["id"] == id)
    }

    /// Waits until `id` is ready with a pid other than `not_pid`.
    async fn wait_ready(&self, id: &str, not_pid: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(m) = self.model(id).await {
                if m["state"] == "ready" && &m["pid"] != not_pid {
                    return m;
                }
            }
            assert!(Instant::now() < deadline, "{id} never became ready again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const TWO_MODELS: &str = r#"
[defaults]
ctx_size = 1024

[models.alpha]
path = "alpha.gguf"
aliases = ["first"]
max_tokens = 3

[models.beta]
path = "beta.gguf"
parallel = 2
"#;

#[actix_rt::test]
async fn per_model_settings_reach_each_worker_and_aliases_resolve() {
    let n = TestNode::start(&[("alpha.gguf", ""), ("beta.gguf", "")], TWO_MODELS).await;
    let alpha = n.model("alpha").await.unwrap();
    assert_eq!(
        (alpha["context"].clone(), alpha["parallel"].clone()),
        (json!(1024), json!(4))
    );
    assert_eq!(alpha["aliases"], json!(["first"]));
    let beta = n.model("beta").await.unwrap();
    assert_eq!(
        (beta["context"].clone(), beta["parallel"].clone()),
        (json!(1024), json!(2))
    );
    for name in ["first", "first:latest", "FIRST", "alpha:latest"] {
        let (status, body) = n.chat(name, Some(2)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["model"], "alpha", "{name} answers as its model");
    }
    // alpha's default max_tokens (3) applies to a request without one; the
    // fake worker generates until its limit.
    let (_, body) = n.chat("alpha", None).await;
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");
    n.node.stop().await;
}

#[actix_rt::test]
async fn aliases_are_listed_in_v1_models_and_api_tags_naming_their_model() {
    let n = TestNode::start(&[("alpha.gguf", ""), ("beta.gguf", "")], TWO_MODELS).await;
    let get = |path: &'static str| {
        let (http, url) = (n.http.clone(), n.url(path));
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, list) = get("/v1/models").await;
    assert_eq!(status, 200);
    let data = list["data"].as_array().unwrap();
    let ids: Vec<_> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "first", "beta"], "{list}");
    let (alpha, first) = (&data[0], &data[1]);
    assert_eq!(first["owned_by"], alpha["owned_by"]);
    assert_eq!(first["object"], "model");
    assert_eq!(
        (&first["parent"], &first["root"]),
        (&json!("alpha"), &json!("alpha"))
    );
    assert!(alpha.get("parent").is_none(), "{alpha}");
    // Asked for by the alias, the alias's entry.
    let (status, one) = get("/v1/models/first").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&one["id"], &one["parent"]),
        (&json!("first"), &json!("alpha"))
    );

    let (status, tags) = get("/api/tags").await;
    assert_eq!(status, 200);
    let models = tags["models"].as_array().unwrap();
    let names: Vec<_> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "first", "beta"], "{tags}");
    let (alpha, first) = (&models[0], &models[1]);
    // A model configured by path has no manifest (digest ""); a stored
    // model's alias gets its manifest digest the same way.
    assert!(alpha["digest"].is_string(), "{alpha}");
    assert_eq!(
        first["digest"], alpha["digest"],
        "the alias carries its model's digest"
    );
    assert_eq!(first["size"], alpha["size"]);
    assert_eq!(first["model"], "first");
    n.node.stop().await;
}

#[actix_rt::test]
async fn reload_restarts_only_changed_models_and_spares_in_flight_requests() {
    let files = [
        ("alpha.gguf", "token_ms=20"),
        ("beta.gguf", ""),
        ("gamma.gguf", ""),
    ];
    let n = TestNode::start(&files, TWO_MODELS).await;
    let alpha_pid = n.model("alpha").await.unwrap()["pid"].clone();
    let beta_pid = n.model("beta").await.unwrap()["pid"].clone();

    // A long request on alpha (40 tokens × 20 ms) runs across the reload.
    let slow = {
        let http = n.http.clone();
        let url = n.url("/v1/chat/completions");
        tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"model": "alpha", "max_tokens": 40,
                    "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;

    // beta's worker setting changes, alpha only gets another alias, gamma is new.
    n.write_config(&format!(
        "{}\n[models.gamma]\npath = \"gamma.gguf\"\n",
        TWO_MODELS
            .replace("parallel = 2", "parallel = 3")
            .replace("[\"first\"]", "[\"first\", \"uno\"]")
    ));
    let (status, report) = n.reload().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["restarted"], json!(["beta"]), "{report}");
    assert_eq!(report["updated"], json!(["alpha"]), "{report}");
    assert_eq!(report["added"], json!(["gamma"]), "{report}");

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["usage"]["completion_tokens"], 40,
        "the in-flight request ran to its end"
    );
    let alpha = n.model("alpha").await.unwrap();
    assert_eq!(alpha["pid"], alpha_pid, "alpha's worker was untouched");
    assert_eq!(alpha["restarts"], 0);
    let beta = n.wait_ready("beta", &beta_pid).await;
    assert_eq!(beta["parallel"], 3, "beta restarted with its new setting");
    n.wait_ready("gamma", &Value::Null).await;
    assert_eq!(n.chat("uno", Some(1)).await.0, 200, "the new alias answers");

    // Removing beta unloads it; requests for it are then 404.
    n.write_config(&TWO_MODELS.replace("[models.beta]\npath = \"beta.gguf\"\nparallel = 2\n", ""));
    let (status, report) = n.reload().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["removed"], json!(["beta", "gamma"]), "{report}");
    assert_eq!(n.chat("beta", Some(1)).await.0, 404);
    assert!(n.model("beta").await.is_none());
    n.node.stop().await;
}

#[actix_rt::test]
async fn a_bad_file_on_reload_is_refused_and_the_running_models_stay() {
    let n = TestNode::start(&[("alpha.gguf", ""), ("beta.gguf", "")], TWO_MODELS).await;
    let before = n.models().await;
    n.write_config(&TWO_MODELS.replace("parallel = 2", "parallel = 0"));
    let (status, body) = n.reload().await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("models.toml:12: models.beta.parallel: 0 is out of range"),
        "{message}"
    );
    let after = n.models().await;
    let pids = |v: &[Value]| v.iter().map(|m| m["pid"].clone()).collect::<Vec<_>>();
    assert_eq!(pids(&after), pids(&before));
    assert_eq!(n.chat("beta", Some(1)).await.0, 200);
    n.node.stop().await;
}

#[actix_rt::test]
async fn a_node_with_no_models_starts_and_serves_health_and_admin() {
    let n = TestNode::start(&[], "[defaults]\nctx_size = 512\n").await;
    let health = n.http.get(n.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(n.models().await.is_empty());
    let tags: Value = n
        .http
        .get(n.url("/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"], json!([]));
    // A model added to the file later appears on reload.
    std::fs::write(n.dir.path().join("late.gguf"), "").unwrap();
    n.write_config("[models.late]\npath = \"late.gguf\"\n");
    let (status, report) = n.reload().await;
    assert_eq!((status, report["added"].clone()), (200, json!(["late"])));
    n.wait_ready("late", &Value::Null).await;
    assert_eq!(n.chat("late", Some(1)).await.0, 200);
    n.node.stop().await;
}

#[test]
fn a_bad_file_stops_the_node_from_starting_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("models.toml");
    std::fs::write(&config, "[models.x]\npath = \"x.gguf\"\nctx = 5\n").unwrap();
    let args = Args::try_parse_from([
        "llm-node".to_string(),
        "--port=0".into(),
        "--loopback-only".into(),
        format!("--models-config={}", config.display()),
        format!("--worker-bin={}", fake_worker().display()),
    ])
    .unwrap();
    let err = actix_rt::System::new()
        .block_on(Node::start(args))
        .err()
        .expect("refused");
    let shown = err.to_string();
    let want = format!("{}:3: models.x.ctx: unknown field `ctx`", config.display());
    assert!(shown.starts_with(&want), "{shown}");
}
