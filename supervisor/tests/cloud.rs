//! Cloud models end to end: a node (with one fake-worker model, so it starts)
//! in front of fake providers on loopback (`tests/fake_cloud/`), driven over
//! HTTP like a client would. The translated path (`anthropic:`, `google:`) is
//! tested against its contract in `src/cloud/tests.rs`.

mod common;
mod fake_cloud;

use clap::Parser;
use common::fake_worker;
use fake_cloud::FakeCloud;
use llm_node::{Args, Node};
use serde_json::{json, Value};

const KEY: &str = "sk-test-key-1234";

struct TestNode {
    node: Node,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl TestNode {
    /// A node whose `openai:` base URL is `openai` (the fake's `/v1`), with `extra` flags.
    async fn start(openai: &FakeCloud, extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("local.gguf");
        std::fs::write(&model, "").unwrap();
        let mut argv: Vec<String> = vec![
            "llm-node".into(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--loopback-only".into(),
            format!("--model=local={}", model.display()),
            format!("--worker-bin={}", fake_worker().display()),
            "--shutdown-timeout-secs=2".into(),
            "--registry-url=http://127.0.0.1:9".into(),
            "--hf-endpoint=http://127.0.0.1:9".into(),
            format!("--openai-base-url={}/v1", openai.url),
            // Never whatever the environment holds: tests never leave the machine.
            "--anthropic-base-url=http://127.0.0.1:9".into(),
            "--google-base-url=http://127.0.0.1:9".into(),
        ];
        if !extra.iter().any(|a| a.starts_with("--openai-api-key")) {
            argv.push(format!("--openai-api-key={KEY}"));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let node = Node::start(Args::try_parse_from(argv).unwrap())
            .await
            .unwrap();
        TestNode {
            node,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.addr())
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn chat(&self, model: &str, stream: bool) -> reqwest::Response {
        let body = json!({"model": model, "stream": stream,
                          "messages": [{"role": "user", "content": "hi"}]});
        self.post("/v1/chat/completions", body).await
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn openai_chat_is_passed_through_with_the_model_rewritten_and_the_key_sent() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let (status, _, body) = json_of(node.chat("openai:gpt-ok", false).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(body["model"], "gpt-ok");
    let seen = fake.received();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].body["model"], "gpt-ok");
    assert_eq!(seen[0].body["messages"][0]["content"], "hi");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {KEY}"));
    node.stop().await;
}

#[actix_rt::test]
async fn openai_streams_are_relayed_byte_for_byte() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let body = json!({"model": "openai:gpt-ok", "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = node.post("/v1/chat/completions", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let expected: String = fake_cloud::openai(&fake.received()[0])
        .parts
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    assert_eq!(text, expected);
    assert!(text.ends_with("data: [DONE]\n\n"));
    let metrics = node.http.get(node.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(
            "llm_node_cloud_requests_total{endpoint=\"chat\",outcome=\"ok\",provider=\"openai\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("llm_node_cloud_tokens_total{kind=\"completion\",provider=\"openai\"} 2"),
        "{metrics}"
    );
    node.stop().await;
}

#[actix_rt::test]
async fn a_cut_openai_stream_ends_with_an_error_event_and_done() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let r = node.chat("openai:gpt-cut", true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let frames: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(frames.len(), 4, "{text}");
    assert!(frames[1].contains("\"Hel\""), "{text}");
    let error: Value = serde_json::from_str(frames[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "bad_answer", "{error}");
    assert_eq!(error["error"]["type"], "server_error");
    assert_eq!(frames[3], "data: [DONE]");
    node.stop().await;
}

#[actix_rt::test]
async fn provider_errors_keep_their_status_class_and_retry_after_and_never_the_key() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let (status, _, body) = json_of(node.chat("openai:gpt-unauthorized", false).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("openai: Incorrect API key"),
        "{message}"
    );
    assert!(!message.contains(KEY), "{message}");

    // Streaming requests fail the same way before anything is streamed.
    let (status, retry, body) = json_of(node.chat("openai:gpt-busy", true).await).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("7"));
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limited");

    let (status, _, body) = json_of(node.chat("openai:gpt-broken", false).await).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "upstream_error");
    node.stop().await;
}

#[actix_rt::test]
async fn a_missing_key_is_a_401_naming_the_variable() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &["--openai-api-key="]).await;
    let (status, _, body) = json_of(node.chat("openai:gpt-ok", false).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("OPENAI_API_KEY"));
    assert!(fake.received().is_empty(), "nothing sent without a key");
    node.stop().await;
}

#[actix_rt::test]
async fn a_slow_provider_is_a_504() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &["--cloud-timeout-secs=1"]).await;
    let (status, _, body) = json_of(node.chat("openai:gpt-slow", false).await).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    node.stop().await;
}

#[actix_rt::test]
async fn completions_and_embeddings_are_passed_through_for_openai() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let body = json!({"model": "openai:gpt-ok", "prompt": "Say"});
    let (status, _, body) = json_of(node.post("/v1/completions", body).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], "Hello");
    let body = json!({"model": "openai:gpt-ok", "input": "x"});
    let (status, _, body) = json_of(node.post("/v1/embeddings", body).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"], json!([0.5, -0.5]));
    let paths: Vec<String> = fake.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/completions", "/v1/embeddings"]);
    node.stop().await;
}

#[actix_rt::test]
async fn unknown_prefixes_stay_404_and_listed_cloud_models_show_in_v1_models() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &["--cloud-model=openai:gpt-ok"]).await;
    for model in ["azure:gpt-4o", "nope"] {
        let (status, _, body) = json_of(node.chat(model, false).await).await;
        assert_eq!(status, 404, "{model}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    let r = node.http.get(node.url("/v1/models")).send().await.unwrap();
    let (_, _, body) = json_of(r).await;
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local", "openai:gpt-ok"]);
    assert_eq!(body["data"][1]["owned_by"], "openai");
    assert!(fake.received().is_empty());
    node.stop().await;
}

#[actix_rt::test]
async fn a_client_leaving_mid_stream_is_metered_as_client_closed() {
    let fake = FakeCloud::start(fake_cloud::openai).await;
    let node = TestNode::start(&fake, &[]).await;
    let mut r = node.chat("openai:gpt-long", true).await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    let wanted = "llm_node_cloud_requests_total{endpoint=\"chat\",outcome=\"client_closed\",provider=\"openai\"} 1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = node.http.get(node.url("/metrics")).send().await.unwrap();
        if metrics.text().await.unwrap().contains(wanted) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never metered as client_closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    node.stop().await;
}
