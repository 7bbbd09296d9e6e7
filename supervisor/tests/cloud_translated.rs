//! `anthropic:` and `google:` models end to end: a node (one fake-worker model,
//! so it starts) in front of the fake Anthropic and Gemini servers of
//! `tests/fake_providers/` on loopback, driven over HTTP with OpenAI bodies:
//! whole and streamed answers, tool calls, and the providers' 401, 429 with
//! `Retry-After`, 500 and a stream cut mid-way.

mod common;
mod fake_providers;

use clap::Parser;
use common::fake_worker;
use fake_providers::anthropic::{self as fa, FakeAnthropic};
use fake_providers::google::{self as fg, FakeGoogle};
use fake_providers::Fault;
use llm_node::{Args, Node};
use serde_json::{json, Value};

struct TestNode {
    node: Node,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl TestNode {
    async fn start(anthropic: &FakeAnthropic, google: &FakeGoogle) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("local.gguf");
        std::fs::write(&model, "").unwrap();
        let argv: Vec<String> = vec![
            "llm-node".into(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--loopback-only".into(),
            format!("--model=local={}", model.display()),
            format!("--worker-bin={}", fake_worker().display()),
            "--shutdown-timeout-secs=2".into(),
            "--registry-url=http://127.0.0.1:9".into(),
            "--hf-endpoint=http://127.0.0.1:9".into(),
            "--openai-base-url=http://127.0.0.1:9".into(),
            format!("--anthropic-base-url={}", anthropic.url()),
            format!("--anthropic-api-key={}", fa::KEY),
            format!("--google-base-url={}", google.url()),
            format!("--google-api-key={}", fg::KEY),
        ];
        let node = Node::start(Args::try_parse_from(argv).unwrap())
            .await
            .unwrap();
        TestNode {
            node,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    async fn chat(&self, model: &str, stream: bool, tools: bool) -> reqwest::Response {
        let mut body = json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Weather in SF?"}],
        });
        if tools {
            body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object",
                               "properties": {"location": {"type": "string"}}}}}]);
        }
        self.http
            .post(format!("http://{}/v1/chat/completions", self.node.addr()))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Content and tool calls (name, arguments) assembled from OpenAI chunks, and
/// the last finish reason.
fn assemble(data: &[String]) -> (String, Vec<(String, String)>, Option<String>) {
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = None;
    for d in data.iter().filter(|d| *d != "[DONE]") {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            calls[i].0 += call["function"]["name"].as_str().unwrap_or_default();
            calls[i].1 += call["function"]["arguments"].as_str().unwrap_or_default();
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    (text, calls, finish)
}

async fn both() -> (FakeAnthropic, FakeGoogle, TestNode) {
    let a = fa::start();
    let g = fg::start();
    let node = TestNode::start(&a, &g).await;
    (a, g, node)
}

#[actix_rt::test]
async fn translated_models_answer_whole_with_text_and_tool_calls() {
    let (a, g, node) = both().await;
    for model in ["anthropic:claude-sonnet-4-5", "google:gemini-2.0-flash"] {
        let r = node.chat(model, false, false).await;
        assert_eq!(r.status(), 200, "{model}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], model);
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            text == fa::TEXT || text == fg::TEXT.concat(),
            "{model}: {body}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert!(
            body["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{body}"
        );

        let body: Value = node.chat(model, false, true).await.json().await.unwrap();
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{model}: {body}");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .expect("arguments are a JSON string");
        assert!(args["location"].is_string(), "{args}");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    }
    // The keys went as each provider wants them; the system prompt was moved.
    let seen = &a.requests()[0];
    assert_eq!(seen.header("x-api-key"), Some(fa::KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.body["system"], "Be brief.", "{}", seen.body);
    assert_eq!(seen.body["model"], "claude-sonnet-4-5");
    let seen = &g.requests()[0];
    assert_eq!(seen.header("x-goog-api-key"), Some(fg::KEY));
    assert!(
        seen.uri.contains("gemini-2.0-flash:generateContent"),
        "{}",
        seen.uri
    );
    assert!(seen.body["systemInstruction"].is_object(), "{}", seen.body);
    node.node.stop().await;
    a.stop().await;
    g.stop().await;
}

#[actix_rt::test]
async fn translated_streams_become_openai_chunks_ending_in_done() {
    let (a, g, node) = both().await;
    for model in ["anthropic:claude-sonnet-4-5", "google:gemini-2.0-flash"] {
        let r = node.chat(model, true, false).await;
        assert_eq!(r.status(), 200, "{model}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let data = sse_data(&r.text().await.unwrap());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
        let (text, calls, finish) = assemble(&data);
        assert!(
            text == fa::TEXT || text == fg::TEXT.concat(),
            "{model}: {text:?}"
        );
        assert!(calls.is_empty());
        assert_eq!(finish.as_deref(), Some("stop"), "{model}");

        let data = sse_data(&node.chat(model, true, true).await.text().await.unwrap());
        let (_, calls, finish) = assemble(&data);
        assert_eq!(calls.len(), 1, "{model}: {data:?}");
        assert_eq!(calls[0].0, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert!(args["location"].is_string(), "{args}");
        assert_eq!(finish.as_deref(), Some("tool_calls"), "{model}");
    }
    node.node.stop().await;
    a.stop().await;
    g.stop().await;
}

#[actix_rt::test]
async fn provider_errors_keep_their_status_and_a_cut_stream_ends_in_an_error_event() {
    let (a, g, node) = both().await;
    let set = |fault: Fault| {
        a.set_fault(fault);
        g.set_fault(fault);
    };
    for model in ["anthropic:claude-sonnet-4-5", "google:gemini-2.0-flash"] {
        set(Fault::Unauthorized);
        let r = node.chat(model, false, false).await;
        assert_eq!(r.status(), 401, "{model}");
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains(fa::KEY) && !message.contains(fg::KEY),
            "{message}"
        );

        set(Fault::RateLimited {
            retry_after_secs: 7,
        });
        let r = node.chat(model, true, false).await;
        assert_eq!(r.status(), 429, "{model}");
        assert_eq!(r.headers()["retry-after"], "7");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");

        set(Fault::ServerError);
        assert_eq!(
            node.chat(model, false, false).await.status(),
            500,
            "{model}"
        );

        set(Fault::CutStream { after_events: 2 });
        let r = node.chat(model, true, false).await;
        assert_eq!(r.status(), 200, "{model}");
        let data = sse_data(&r.text().await.unwrap());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert!(last["error"]["message"].is_string(), "{model}: {data:?}");

        set(Fault::None);
        assert_eq!(
            node.chat(model, false, false).await.status(),
            200,
            "{model}"
        );
    }
    node.node.stop().await;
    a.stop().await;
    g.stop().await;
}

#[actix_rt::test]
async fn google_embeddings_come_back_in_openai_shape_and_anthropic_has_none() {
    let (a, g, node) = both().await;
    let url = format!("http://{}/v1/embeddings", node.node.addr());
    let post = |body: Value| node.http.post(&url).json(&body).send();
    let r = post(
        json!({"model": "google:text-embedding-004", "input": ["ab", "xyz"],
                        "dimensions": 3}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "google:text-embedding-004");
    // The fake's values: text length + index + first byte / 256.
    let first = f64::from(b'x') / 256.0;
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(
        body["data"][1]["embedding"],
        json!([3.0 + first, 4.0 + first, 5.0 + first])
    );
    let seen = g.requests().pop().unwrap();
    assert!(
        seen.uri.ends_with("text-embedding-004:batchEmbedContents"),
        "{}",
        seen.uri
    );
    assert_eq!(seen.body["requests"][0]["outputDimensionality"], 3);

    let r = post(json!({"model": "google:text-embedding-004", "input": [[1, 2]]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "input", "{body}");

    let r = post(json!({"model": "anthropic:claude-sonnet-4-5", "input": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported", "{body}");
    node.node.stop().await;
    a.stop().await;
    g.stop().await;
}
