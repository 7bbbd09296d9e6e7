//! Fake cloud providers on loopback, written from the providers' published
//! wire formats, for the cloud dispatcher's end-to-end tests:
//!
//! - `anthropic`: `POST /v1/messages` (Messages API), whole and streamed;
//! - `google`: `POST /v1beta/models/{model}:generateContent` and
//!   `:streamGenerateContent?alt=sse` (Gemini API), whole and streamed.
//!
//! Both answer with the providers' documented example replies: text, or a
//! tool call when the request offers tools and holds no tool result yet.
//! Faults ([`Fault`]): the provider's own 401, 429 with `Retry-After`, 500,
//! a stream cut mid-way (the connection drops after a few events, before the
//! provider's end of message), and a mid-stream error event. Every request is
//! recorded.

#![allow(dead_code)]

pub mod anthropic;
pub mod google;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::stream;
use serde_json::Value;

/// What a fake provider shares with its handler: the fault to play and the
/// requests seen.
#[derive(Default)]
pub struct State {
    pub fault: Fault,
    pub requests: Vec<Seen>,
}

pub(crate) type Shared = Arc<Mutex<State>>;

/// One fake provider's HTTP server on a free loopback port, its state
/// handed to its handler as `web::Data<Shared>`. Must be used inside an
/// actix `System`.
pub struct FakeServer {
    pub port: u16,
    pub state: Shared,
    handle: ServerHandle,
}

impl FakeServer {
    /// Serves `POST path` with `handler`.
    pub(crate) fn start<F, Args>(path: &'static str, handler: F) -> Self
    where
        F: actix_web::Handler<Args> + Clone + Send + 'static,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Shared = Arc::default();
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(data.clone()))
                .route(path, web::post().to(handler.clone()))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Self {
            port,
            state,
            handle,
        }
    }

    /// The base URL (the dispatcher appends the provider's paths).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// How a fake provider answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fault {
    #[default]
    None,
    /// 401 with the provider's authentication error body.
    Unauthorized,
    /// 429 with the provider's rate-limit body and `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// 500 with the provider's internal-error body.
    ServerError,
    /// Streams drop the connection after this many events (whole answers
    /// are unaffected).
    CutStream { after_events: usize },
    /// Streams send the provider's mid-stream error event after this many
    /// events, then end (Anthropic `event: error` with `overloaded_error`,
    /// Gemini a `data:` whose body is an `error`).
    ErrorEvent { after_events: usize },
}

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub uri: String,
    /// Lower-cased header names with their values.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn seen(req: &actix_web::HttpRequest, body: &[u8]) -> Seen {
    Seen {
        uri: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    }
}

/// An SSE answer of `events` (already framed), dropping the connection after
/// `cut_after` of them when set. A pause between events lets a client see
/// them arrive one by one.
pub(crate) fn sse(events: Vec<String>, cut_after: Option<usize>) -> HttpResponse {
    let keep = cut_after.unwrap_or(events.len()).min(events.len());
    let cut = cut_after.is_some();
    let items = events.into_iter().take(keep).map(Ok::<_, actix_web::Error>);
    let body = futures_util::StreamExt::then(stream::iter(items), |item| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        item.map(Bytes::from)
    });
    // An error item makes actix abort the chunked body: the client sees a
    // connection dropped mid-stream, not a clean end.
    let tail = stream::iter(
        cut.then(|| Err::<Bytes, _>(actix_web::error::ErrorInternalServerError("cut"))),
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(futures_util::StreamExt::chain(body, tail))
}

/// Should the fake answer with a tool call? Yes when the provider request
/// offers tools, does not forbid them (Anthropic `tool_choice.type: none`,
/// Gemini mode `NONE`), and holds no tool result yet (`results_key`:
/// `tool_result` or `functionResponse`).
pub(crate) fn wants_tool_call(body: &Value, results_key: &str) -> bool {
    let offered = body.get("tools").is_some_and(|t| !t.is_null());
    let forbidden = body.pointer("/tool_choice/type") == Some(&Value::from("none"))
        || body.pointer("/toolConfig/functionCallingConfig/mode") == Some(&Value::from("NONE"));
    let has_result = body.to_string().contains(results_key);
    offered && !forbidden && !has_result
}
