//! `POST /infill`: fill-in-the-middle in llama-server's shape, for coding
//! tools (llama.vscode, Continue's llama.cpp provider).
//!
//! The body `{model, input_prefix, input_suffix, n_predict?, temperature?,
//! top_k?, top_p?, min_p?, seed?, stop?}` becomes the completion request
//! `{prompt: input_prefix, suffix: input_suffix, max_tokens: n_predict, …}`
//! ([`completion_body`], pure), which runs on the `/v1/completions` path: the
//! worker builds `[BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID` from the
//! model's FIM tokens, and a model without them is refused with a 400. The
//! answer is llama-server's `{content, model, stop: true, stop_type,
//! tokens_predicted, tokens_evaluated}` ([`infill_answer`], pure). Not
//! supported, and refused rather than ignored: `stream`, `input_extra` (extra
//! files as context) and a non-empty `prompt` (text already written after the
//! cursor).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::handlers::{generate, until_client_leaves, within_deadlines};
use super::sse::ChunkKind;
use super::state::AppState;
use super::types::{CompletionRequest, GenerationJob};

/// Sampling fields passed through under the same name.
const SAME_NAME: [&str; 8] = [
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
];

/// The `/v1/completions` body for an `/infill` body.
///
/// # Errors
/// A 400 naming the field for what is missing or not supported.
pub fn completion_body(body: &Value) -> Result<Value, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "the body must be a JSON object"))?;
    let text = |name: &str| -> Result<String, ApiError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a string"),
            )),
        }
    };
    let (prefix, suffix) = (text("input_prefix")?, text("input_suffix")?);
    if prefix.is_empty() && suffix.is_empty() {
        return Err(ApiError::invalid(
            "input_prefix",
            "`input_prefix` or `input_suffix` is required",
        ));
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid(
            "stream",
            "stream is not supported on /infill; use /v1/completions with `suffix` to stream",
        ));
    }
    if obj
        .get("input_extra")
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid(
            "input_extra",
            "input_extra is not supported",
        ));
    }
    if !text("prompt")?.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "a non-empty prompt is not supported on /infill",
        ));
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("prompt".into(), Value::String(prefix));
    // The worker needs a non-empty suffix to build an infill prompt.
    out.insert(
        "suffix".into(),
        Value::String(if suffix.is_empty() {
            "\n".into()
        } else {
            suffix
        }),
    );
    if let Some(n) = obj.get("n_predict").filter(|n| !n.is_null()) {
        // llama-server: -1 is "until the end"; here that is the context's limit.
        if n.as_i64() != Some(-1) {
            out.insert("max_tokens".into(), n.clone());
        }
    }
    for name in SAME_NAME {
        if let Some(v) = obj.get(name).filter(|v| !v.is_null()) {
            out.insert(name.into(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// llama-server's answer from the `/v1/completions` answer `completion`.
pub fn infill_answer(completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let stop_type = match choice["finish_reason"].as_str() {
        Some("length") => "limit",
        _ => "eos",
    };
    json!({
        "content": choice["text"].as_str().unwrap_or_default(),
        "model": completion["model"],
        "stop": true,
        "stop_type": stop_type,
        "tokens_predicted": completion["usage"]["completion_tokens"],
        "tokens_evaluated": completion["usage"]["prompt_tokens"],
    })
}

pub async fn infill(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = completion_body(&body.into_inner())?;
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("model", "`model` is required"));
    }
    let request: CompletionRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::invalid("body", format!("invalid infill request: {e}")))?;
    let job = GenerationJob::try_from(request)?;
    let answer = within_deadlines(&state, false, generate(&state, job, ChunkKind::Text));
    let resp = until_client_leaves(&req, answer).await?;
    let bytes = actix_web::body::to_bytes(resp.into_body())
        .await
        .map_err(|_| ApiError::Internal)?;
    let completion: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(infill_answer(&completion)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_infill_body_becomes_a_completion_with_a_suffix() {
        let body = json!({"model": "m", "input_prefix": "def f(", "input_suffix": "):",
                          "n_predict": 16, "temperature": 0.1, "top_k": 5, "cache_prompt": true});
        assert_eq!(
            completion_body(&body).unwrap(),
            json!({"model": "m", "prompt": "def f(", "suffix": "):", "max_tokens": 16,
                   "temperature": 0.1, "top_k": 5})
        );
        let open = json!({"model": "m", "input_prefix": "x", "n_predict": -1});
        assert_eq!(
            completion_body(&open).unwrap(),
            json!({"model": "m", "prompt": "x", "suffix": "\n"})
        );
    }

    #[test]
    fn what_infill_cannot_honour_is_refused_by_name() {
        let param = |b: Value| match completion_body(&b) {
            Err(ApiError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("{b}: {other:?}"),
        };
        let cases = [
            (json!({"model": "m"}), "input_prefix"),
            (json!({"model": "m", "input_prefix": 3}), "input_prefix"),
            (
                json!({"model": "m", "input_prefix": "a", "stream": true}),
                "stream",
            ),
            (
                json!({"model": "m", "input_prefix": "a", "prompt": "b"}),
                "prompt",
            ),
            (
                json!({"model": "m", "input_prefix": "a", "input_extra": [{"text": "t"}]}),
                "input_extra",
            ),
            (json!([1]), "body"),
        ];
        for (body, want) in cases {
            assert_eq!(param(body.clone()), want, "{body}");
        }
    }

    #[test]
    fn the_answer_is_llama_servers() {
        let completion = json!({"model": "m", "choices": [{"index": 0, "text": "a, b",
            "finish_reason": "length"}], "usage": {"prompt_tokens": 9, "completion_tokens": 4}});
        assert_eq!(
            infill_answer(&completion),
            json!({"content": "a, b", "model": "m", "stop": true, "stop_type": "limit",
                   "tokens_predicted": 4, "tokens_evaluated": 9})
        );
    }
}
