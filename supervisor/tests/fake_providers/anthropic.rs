//! A fake Anthropic Messages API (`POST /v1/messages`) on loopback.
//!
//! Checks `x-api-key` (401 `authentication_error` when wrong) and
//! `anthropic-version` (400 when missing), then answers the documented
//! examples: a text message, or a `tool_use` of the first offered tool (with
//! `input_json_delta` fragments when streamed). Streams follow the documented
//! event order: `message_start`, `content_block_start`, `ping`,
//! `content_block_delta`s, `content_block_stop`, `message_delta`,
//! `message_stop`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{seen, sse, wants_tool_call, FakeServer, Fault, Shared};

/// The key the fake accepts.
pub const KEY: &str = "sk-ant-test";
/// The text of every text answer.
pub const TEXT: &str = "Hello! How can I help?";

/// The fake, on a free loopback port. Must be used inside an actix `System`.
pub type FakeAnthropic = FakeServer;

/// Starts the fake.
pub fn start() -> FakeAnthropic {
    FakeServer::start("/v1/messages", messages)
}

/// Anthropic's documented error body.
fn error(status: u16, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(json!({
        "type": "error",
        "error": { "type": kind, "message": message },
    }))
}

async fn messages(state: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let seen = seen(&req, &body);
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(seen.clone());
        s.fault
    };
    if seen.header("x-api-key") != Some(KEY) || fault == Fault::Unauthorized {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if seen.header("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    match fault {
        Fault::RateLimited { retry_after_secs } => {
            let mut r = error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            r.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                retry_after_secs.to_string().parse().unwrap(),
            );
            return r;
        }
        Fault::ServerError => return error(500, "api_error", "Internal server error"),
        _ => {}
    }
    let b = &seen.body;
    let (Some(model), Some(_)) = (b["model"].as_str(), b["max_tokens"].as_u64()) else {
        return error(
            400,
            "invalid_request_error",
            "model and max_tokens are required",
        );
    };
    let tool = wants_tool_call(b, "tool_result")
        .then(|| b["tools"][0]["name"].as_str().unwrap_or("tool").to_owned());
    if b["stream"] == json!(true) {
        let mut events = stream_events(model, tool.as_deref());
        let cut = match fault {
            Fault::CutStream { after_events } => Some(after_events),
            Fault::ErrorEvent { after_events } => {
                events.truncate(after_events);
                events.push(event(
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                ));
                None
            }
            _ => None,
        };
        return sse(events, cut);
    }
    HttpResponse::Ok().json(whole(model, tool.as_deref()))
}

/// The documented non-streaming answer.
pub fn whole(model: &str, tool: Option<&str>) -> Value {
    let (content, stop) = match tool {
        Some(name) => (
            json!([
                { "type": "text", "text": "I'll look that up." },
                { "type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": name,
                  "input": { "location": "San Francisco, CA" } }
            ]),
            "tool_use",
        ),
        None => (json!([{ "type": "text", "text": TEXT }]), "end_turn"),
    };
    json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": { "input_tokens": 25, "output_tokens": 12 }
    })
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The documented streamed answer, framed as SSE.
pub fn stream_events(model: &str, tool: Option<&str>) -> Vec<String> {
    let mut out = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant",
            "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let text: &[&str] = if tool.is_some() {
        &["I'll look ", "that up."]
    } else {
        &["Hello! ", "How can I help?"]
    };
    for t in text {
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": t}}),
        ));
    }
    out.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    let stop = match tool {
        Some(name) => {
            out.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                                  "name": name, "input": {}}}),
            ));
            for part in ["", "{\"location\":", " \"San Francisco, CA\"}"] {
                out.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ));
            "tool_use"
        }
        None => "end_turn",
    };
    out.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 15}}),
    ));
    out.push(event("message_stop", json!({"type": "message_stop"})));
    out
}
