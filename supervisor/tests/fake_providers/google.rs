//! A fake Gemini API on loopback: `POST /v1beta/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse` (each SSE event one whole
//! `GenerateContentResponse`, framed `data: …\r\n\r\n` as Google does).
//!
//! The key comes in `x-goog-api-key` or `?key=`; a wrong one gets Google's
//! 400 `INVALID_ARGUMENT` "API key not valid" (what Google answers), the
//! [`Fault::Unauthorized`] fault a 401 `UNAUTHENTICATED`. Answers: text, or a
//! `functionCall` of the first declared function while the request holds no
//! `functionResponse`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{seen, sse, wants_tool_call, FakeServer, Fault, Shared};

/// The key the fake accepts.
pub const KEY: &str = "AIza-test";
/// The text of every text answer, as its streamed pieces.
pub const TEXT: [&str; 2] = ["The sky is blue", " because of Rayleigh scattering."];

/// The fake, on a free loopback port. Must be used inside an actix `System`.
pub type FakeGoogle = FakeServer;

/// Starts the fake.
pub fn start() -> FakeGoogle {
    FakeServer::start("/v1beta/models/{call}", generate)
}

/// Google's documented error body.
fn error(code: u16, status: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).json(json!({
        "error": { "code": code, "message": message, "status": status }
    }))
}

async fn generate(
    state: web::Data<Shared>,
    req: HttpRequest,
    call: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let seen = seen(&req, &body);
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(seen.clone());
        s.fault
    };
    let query_key = req
        .query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="));
    if seen.header("x-goog-api-key").or(query_key) != Some(KEY) {
        return error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
        );
    }
    match fault {
        Fault::Unauthorized => {
            return error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            )
        }
        Fault::RateLimited { retry_after_secs } => {
            let mut r = error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
            );
            r.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                retry_after_secs.to_string().parse().unwrap(),
            );
            return r;
        }
        Fault::ServerError => return error(500, "INTERNAL", "Internal error encountered."),
        _ => {}
    }
    let Some((model, action)) = call.split_once(':') else {
        return error(404, "NOT_FOUND", "Method not found.");
    };
    if action == "batchEmbedContents" {
        return batch_embed(model, &seen.body);
    }
    if seen
        .body
        .get("contents")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        );
    }
    let tool = wants_tool_call(&seen.body, "functionResponse").then(|| {
        seen.body["tools"][0]["functionDeclarations"][0]["name"]
            .as_str()
            .unwrap_or("tool")
            .to_owned()
    });
    match action {
        "generateContent" => HttpResponse::Ok().json(whole(model, tool.as_deref())),
        "streamGenerateContent" if req.query_string().contains("alt=sse") => {
            let mut chunks = stream_chunks(model, tool.as_deref());
            let cut = match fault {
                Fault::CutStream { after_events } => Some(after_events),
                Fault::ErrorEvent { after_events } => {
                    chunks.truncate(after_events);
                    chunks.push(json!({"error": {"code": 503, "status": "UNAVAILABLE",
                        "message": "The model is overloaded. Please try again later."}}));
                    None
                }
                _ => None,
            };
            let events = chunks
                .into_iter()
                .map(|c| format!("data: {c}\r\n\r\n"))
                .collect();
            sse(events, cut)
        }
        _ => error(404, "NOT_FOUND", "Method not found."),
    }
}

fn usage(candidates: u64) -> Value {
    json!({ "promptTokenCount": 9, "candidatesTokenCount": candidates,
            "totalTokenCount": 9 + candidates })
}

fn candidate(parts: Value, finish: Option<&str>) -> Value {
    let mut c = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if let Some(f) = finish {
        c["finishReason"] = f.into();
    }
    c
}

fn call_part(name: &str) -> Value {
    json!({ "functionCall": { "name": name, "args": { "location": "San Francisco, CA" } } })
}

/// The documented whole answer.
pub fn whole(model: &str, tool: Option<&str>) -> Value {
    let parts = match tool {
        Some(name) => json!([call_part(name)]),
        None => json!([{ "text": TEXT.concat() }]),
    };
    json!({
        "candidates": [candidate(parts, Some("STOP"))],
        "usageMetadata": usage(11),
        "modelVersion": model,
        "responseId": "Gx3Hd0ocFqvY7fQ",
    })
}

/// The documented streamed answer: one `GenerateContentResponse` per event.
pub fn stream_chunks(model: &str, tool: Option<&str>) -> Vec<Value> {
    let chunk = |c: Value, n: u64| {
        json!({ "candidates": [c], "usageMetadata": usage(n),
                                           "modelVersion": model })
    };
    match tool {
        Some(name) => vec![chunk(candidate(json!([call_part(name)]), Some("STOP")), 7)],
        None => vec![
            chunk(candidate(json!([{ "text": TEXT[0] }]), None), 4),
            chunk(candidate(json!([{ "text": TEXT[1] }]), None), 10),
            chunk(candidate(json!([{ "text": "" }]), Some("STOP")), 11),
        ],
    }
}

/// `batchEmbedContents`: one embedding per request, each checked to name the
/// model of the URL; the values derive from the text (its length and first
/// byte), `outputDimensionality` of them (default 4).
fn batch_embed(model: &str, body: &Value) -> HttpResponse {
    let Some(requests) = body["requests"].as_array().filter(|r| !r.is_empty()) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* BatchEmbedContentsRequest.requests: empty",
        );
    };
    let mut embeddings = Vec::new();
    for r in requests {
        if r["model"] != format!("models/{model}") {
            return error(
                400,
                "INVALID_ARGUMENT",
                "* model: must match the URL's model",
            );
        }
        let text = r["content"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default();
        let n = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
        let first = f64::from(text.bytes().next().unwrap_or(0));
        let values: Vec<f64> = (0..n)
            .map(|i| (text.len() + i) as f64 + first / 256.0)
            .collect();
        embeddings.push(json!({ "values": values }));
    }
    HttpResponse::Ok().json(json!({ "embeddings": embeddings }))
}
