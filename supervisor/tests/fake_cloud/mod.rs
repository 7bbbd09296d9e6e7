//! Fake cloud providers on loopback, for the node's cloud tests.
//!
//! [`FakeCloud`] is a bare HTTP/1.1 server (one request per connection,
//! chunked answers) that records each request and answers with the [`Reply`]
//! its handler picks: a status, headers, body pieces written one by one as
//! they would stream, and optionally a cut (the connection dropped before the
//! body's end). It is written on raw sockets so a cut is a real one.
//!
//! Each provider's fake is a handler function next to the others:
//! [`openai`] follows OpenAI's documented shapes (chat.completion,
//! chat.completion.chunk SSE ending in `data: [DONE]`, `{"error": {...}}`).
//! Anthropic's and Google's fakes go beside it, as `anthropic()` and
//! `google()` handlers built on the same [`Reply`].
//!
//! This file is also compiled into the crate's unit tests (`src/cloud/tests.rs`
//! includes it by path), so it uses only tokio and serde_json.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` if it is not JSON).
    pub body: Value,
}

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Written one by one, each as its own chunk, `gap` apart.
    pub parts: Vec<Vec<u8>>,
    pub gap: Duration,
    /// Drop the connection after the parts, without the body's end.
    pub cut: bool,
    /// Wait this long before answering at all.
    pub delay: Duration,
}

impl Reply {
    /// A JSON body with `status`.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            parts: vec![body.to_string().into_bytes()],
            gap: Duration::ZERO,
            cut: false,
            delay: Duration::ZERO,
        }
    }

    /// A `text/event-stream` body, one part per frame (each already framed).
    pub fn sse(frames: impl IntoIterator<Item = String>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            parts: frames.into_iter().map(String::into_bytes).collect(),
            gap: Duration::from_millis(5),
            cut: false,
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn cut(mut self) -> Self {
        self.cut = true;
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// `data: {json}\n\n`.
pub fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// `event: {name}\ndata: {json}\n\n`.
pub fn event(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A fake provider listening on `127.0.0.1` (port chosen by the system).
pub struct FakeCloud {
    /// `http://127.0.0.1:PORT`, the base URL to configure.
    pub url: String,
    /// Every request received, in order.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCloud {
    /// Starts serving with `handler` (must run inside a tokio runtime).
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, handler, seen).await;
                });
            }
        });
        Self {
            url,
            requests,
            task,
        }
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut socket: TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let request = read_request(&mut socket).await?;
    let reply = handler(&request);
    seen.lock().unwrap().push(request);
    tokio::time::sleep(reply.delay).await;
    let mut head = format!("HTTP/1.1 {} Fake\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    for part in &reply.parts {
        let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
        chunk.extend_from_slice(part);
        chunk.extend_from_slice(b"\r\n");
        socket.write_all(&chunk).await?;
        socket.flush().await?;
        tokio::time::sleep(reply.gap).await;
    }
    if !reply.cut {
        socket.write_all(b"0\r\n\r\n").await?;
    }
    socket.shutdown().await
}

async fn read_request(socket: &mut TcpStream) -> std::io::Result<Recorded> {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut piece).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&piece[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut piece).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&piece[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    Ok(Recorded {
        method,
        path,
        headers,
        body,
    })
}

/// OpenAI's error body.
pub fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The OpenAI API (base URL with `/v1`), by model name:
/// - `gpt-ok`: a chat completion (or its stream: role, "Hel", "lo", finish,
///   usage when asked, `[DONE]`), a text completion, an embedding;
/// - `gpt-unauthorized`: 401; `gpt-busy`: 429 with `Retry-After: 7`;
///   `gpt-broken`: 500; `gpt-cut`: a stream cut after its first content chunk;
///   `gpt-slow`: answers after 3 s; `gpt-long`: a stream of 500 chunks 20 ms apart.
pub fn openai(request: &Recorded) -> Reply {
    let model = request.body["model"].as_str().unwrap_or("").to_owned();
    let stream = request.body["stream"] == json!(true);
    match model.as_str() {
        "gpt-unauthorized" => {
            return Reply::json(
                401,
                openai_error(
                    "Incorrect API key provided: sk-test-key-1234.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
        }
        "gpt-busy" => {
            return Reply::json(
                429,
                openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
            )
            .header("retry-after", "7")
        }
        "gpt-broken" => {
            return Reply::json(
                500,
                openai_error("The server had an error", "server_error", ""),
            )
        }
        "gpt-slow" => {
            return Reply::json(200, json!({})).delay(Duration::from_secs(3));
        }
        _ => {}
    }
    match request.path.as_str() {
        "/v1/chat/completions" if stream => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": model, "choices": [{"index": 0, "delta": delta,
                       "finish_reason": finish}]})
            };
            let mut frames = vec![
                data(&chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                )),
                data(&chunk(json!({"content": "Hel"}), Value::Null)),
            ];
            if model == "gpt-cut" {
                return Reply::sse(frames).cut();
            }
            if model == "gpt-long" {
                let more = (0..500).map(|_| data(&chunk(json!({"content": "x"}), Value::Null)));
                let mut reply = Reply::sse(frames.into_iter().chain(more));
                reply.gap = Duration::from_millis(20);
                return reply;
            }
            frames.push(data(&chunk(json!({"content": "lo"}), Value::Null)));
            frames.push(data(&chunk(json!({}), json!("stop"))));
            if request.body["stream_options"]["include_usage"] == json!(true) {
                frames.push(data(
                    &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                    "created": 1, "model": model, "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
                ));
            }
            frames.push("data: [DONE]\n\n".into());
            Reply::sse(frames)
        }
        "/v1/chat/completions" => Reply::json(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        ),
        "/v1/completions" => Reply::json(
            200,
            json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop",
                                "logprobs": null}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
        ),
        "/v1/embeddings" => Reply::json(
            200,
            json!({"object": "list", "model": model,
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5]}],
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        ),
        _ => Reply::json(
            404,
            openai_error("Unknown path", "invalid_request_error", ""),
        ),
    }
}
