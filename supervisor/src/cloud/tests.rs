//! The translated path against its contract: a test-only [`Provider`]
//! (`Echo`, registered as `anthropic`) speaking a small made-up wire format,
//! served by the fake provider of `tests/fake_cloud/`. What is checked is the
//! dispatcher's part: headers, paths, the SSE events fed in order, chunks out,
//! `[DONE]`, and errors before and during a stream.

#[path = "../../tests/fake_cloud/mod.rs"]
mod fake_cloud;

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::translate::{ChatStream, Provider, SseEvent, TranslateError, UpstreamRequest};
use super::*;
use fake_cloud::{FakeCloud, Recorded, Reply};

/// Wire format: POST `/v1/echo` `{"model","text","stream"}`; whole answer
/// `{"reply"}`; stream events `delta {"text"}`, `stop {}`, `error {"message"}`;
/// errors `{"error": {"message"}}`.
struct Echo;

impl Provider for Echo {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        if openai["n"].as_u64().is_some_and(|n| n > 1) {
            return Err(TranslateError::BadRequest {
                message: "n > 1 is not supported".into(),
                param: Some("n".into()),
            });
        }
        let text = openai["messages"][0]["content"].clone();
        Ok(UpstreamRequest {
            path: "/v1/echo".into(),
            body: json!({"model": model, "text": text, "stream": stream}),
        })
    }

    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError> {
        let reply = upstream["reply"]
            .as_str()
            .ok_or_else(|| TranslateError::Upstream("no reply".into()))?;
        Ok(json!({"object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}))
    }

    fn chat_stream(&self, model: &str, _include_usage: bool) -> Box<dyn ChatStream> {
        Box::new(EchoStream {
            model: model.to_owned(),
            stopped: false,
        })
    }

    fn error_message(&self, _status: u16, body: &str) -> String {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect())
    }
}

struct EchoStream {
    model: String,
    stopped: bool,
}

impl EchoStream {
    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({"object": "chat.completion.chunk", "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }
}

impl ChatStream for EchoStream {
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError> {
        let data: Value = serde_json::from_str(event.data)
            .map_err(|_| TranslateError::Upstream("unreadable event".into()))?;
        match event.event {
            Some("delta") => Ok(vec![
                self.chunk(json!({"content": data["text"]}), Value::Null)
            ]),
            Some("stop") => {
                self.stopped = true;
                Ok(Vec::new())
            }
            Some("error") => Err(TranslateError::Upstream(
                data["message"].as_str().unwrap_or("error").to_owned(),
            )),
            _ => Ok(Vec::new()),
        }
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        match self.stopped {
            true => Ok(vec![self.chunk(json!({}), json!("stop"))]),
            false => Err(TranslateError::Upstream("the stream ended early".into())),
        }
    }
}

/// The fake echo provider, by the request's text.
fn echo(request: &Recorded) -> Reply {
    let text = request.body["text"].as_str().unwrap_or("");
    let stream = request.body["stream"] == json!(true);
    let delta = |t: &str| fake_cloud::event("delta", &json!({"text": t}));
    match (text, stream) {
        ("busy", _) => {
            Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "3")
        }
        (_, false) => Reply::json(200, json!({"reply": text})),
        ("fail", true) => Reply::sse([
            delta("a"),
            fake_cloud::event("error", &json!({"message": "overloaded"})),
        ]),
        ("cut", true) => Reply::sse([delta("a")]).cut(),
        ("early", true) => Reply::sse([delta("a")]),
        (_, true) => Reply::sse([
            ": ping\n\n".to_owned(),
            delta("He"),
            delta("y"),
            fake_cloud::event("stop", &json!({})),
        ]),
    }
}

fn cloud(fake: &FakeCloud, key: Option<&str>) -> Cloud {
    let args = CloudArgs {
        anthropic_api_key: key.map(str::to_owned),
        anthropic_base_url: fake.url.clone(),
        openai_base_url: "http://127.0.0.1:9".into(),
        google_base_url: "http://127.0.0.1:9".into(),
        cloud_timeout_secs: 5,
        ..CloudArgs::default()
    };
    Cloud::with_providers(args, Metrics::new(), vec![Box::new(Echo)]).unwrap()
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "anthropic:m1", "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

async fn serve(cloud: &Cloud, api: Api, body: Value) -> Result<Answer, CloudError> {
    let route = cloud.route(body["model"].as_str().unwrap()).unwrap();
    cloud.serve(api, route, body).await
}

async fn pieces(answer: Answer) -> Vec<Piece> {
    match answer {
        Answer::Stream(s) => s.collect().await,
        _ => panic!("not a stream"),
    }
}

#[actix_rt::test]
async fn a_whole_answer_is_translated_with_the_providers_headers() {
    let fake = FakeCloud::start(echo).await;
    let cloud = cloud(&fake, Some("k-ant"));
    let Answer::Whole(v) = serve(&cloud, Api::Chat, chat("hi", false)).await.unwrap() else {
        panic!("not whole");
    };
    assert_eq!(v["choices"][0]["message"]["content"], "hi");
    assert_eq!(v["model"], "anthropic:m1", "the name the client asked for");
    let seen = &fake.received()[0];
    assert_eq!(seen.path, "/v1/echo");
    assert_eq!(seen.body["model"], "m1");
    assert_eq!(seen.headers["x-api-key"], "k-ant");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(!seen.headers.contains_key("authorization"));
}

#[actix_rt::test]
async fn a_stream_is_translated_event_by_event_and_ends_with_done() {
    let fake = FakeCloud::start(echo).await;
    let cloud = cloud(&fake, Some("k"));
    let got = pieces(serve(&cloud, Api::Chat, chat("hi", true)).await.unwrap()).await;
    let texts: Vec<String> = got
        .iter()
        .map(|p| match p {
            Piece::Chunk(v) => format!(
                "{}|{}",
                v["choices"][0]["delta"]["content"], v["choices"][0]["finish_reason"]
            ),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        ["\"He\"|null", "\"y\"|null", "null|\"stop\"", "Done"]
    );
}

#[actix_rt::test]
async fn an_error_event_or_a_cut_ends_the_stream_with_failed() {
    let fake = FakeCloud::start(echo).await;
    let cloud = cloud(&fake, Some("k"));
    for text in ["fail", "cut", "early"] {
        let got = pieces(serve(&cloud, Api::Chat, chat(text, true)).await.unwrap()).await;
        assert_eq!(got.len(), 2, "{text}: {got:?}");
        assert!(matches!(got[0], Piece::Chunk(_)), "{text}: {got:?}");
        match &got[1] {
            Piece::Failed(e @ CloudError::BadAnswer { .. }) => {
                assert_eq!(e.status(), 502);
                if text == "fail" {
                    assert_eq!(e.to_string(), "anthropic: overloaded");
                }
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn errors_before_the_answer_are_cloud_errors() {
    let fake = FakeCloud::start(echo).await;
    let cloud = cloud(&fake, Some("k"));
    match serve(&cloud, Api::Chat, chat("busy", true)).await {
        Err(CloudError::Upstream {
            status: 429,
            message,
            retry_after,
            ..
        }) => {
            assert_eq!(message, "slow down");
            assert_eq!(retry_after.as_deref(), Some("3"));
        }
        other => panic!("{:?}", other.err()),
    }
    let mut body = chat("hi", false);
    body["n"] = json!(2);
    let e = serve(&cloud, Api::Chat, body).await.err().unwrap();
    assert_eq!(
        e,
        CloudError::BadRequest {
            message: "n > 1 is not supported".into(),
            param: Some("n".into())
        }
    );
    let e = serve(&cloud, Api::Embeddings, chat("hi", false))
        .await
        .err();
    assert_eq!(e.unwrap().label(), "cloud_unsupported");
    let keyless = super::tests::cloud(&fake, None);
    let e = serve(&keyless, Api::Chat, chat("hi", false))
        .await
        .err()
        .unwrap();
    assert_eq!(e.status(), 401);
    assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
    assert_eq!(fake.received().len(), 1, "no call for a refused request");
}

#[test]
fn only_served_prefixes_route() {
    let args = CloudArgs::default();
    let with = Cloud::with_providers(args.clone(), Metrics::new(), vec![Box::new(Echo)]).unwrap();
    let without = Cloud::with_providers(args, Metrics::new(), Vec::new()).unwrap();
    assert_eq!(
        with.route("anthropic:claude").unwrap().provider(),
        "anthropic"
    );
    assert!(without.route("anthropic:claude").is_none());
    assert_eq!(without.route("openai:gpt-4o").unwrap().model, "gpt-4o");
    assert!(without.route("google:gemini").is_none());
    assert!(without.route("llama3:8b").is_none());
    assert!(without.route("gpt-4o").is_none());
}
