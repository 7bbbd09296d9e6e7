//! `POST /tokenize` and `POST /detokenize`, in llama-server's shapes, with a
//! `model` to pick the model (llama-server serves one).
//!
//! - `/tokenize {model, content, add_special?: false, parse_special?: true,
//!   with_pieces?: false}` → `{"tokens": [id, …]}`, or with `with_pieces`
//!   `{"tokens": [{"id", "piece"}, …]}` where `piece` is a string, or the
//!   byte values when the piece alone is not valid UTF-8 (part of a
//!   character), as llama-server writes it. Special-token text is always
//!   parsed (`parse_special: false` is refused rather than ignored).
//! - `/detokenize {model, tokens: [id, …]}` → `{"content"}`; an id outside
//!   the vocabulary is a 400 naming it.
//!
//! Errors are OpenAI-shaped, like every route outside `/api/`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;

/// Most tokens one `/detokenize` accepts.
pub const MAX_DETOKENIZE: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct TokenizeBody {
    model: Option<String>,
    content: Option<Value>,
    add_special: Option<bool>,
    parse_special: Option<bool>,
    with_pieces: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeBody {
    model: Option<String>,
    tokens: Option<Value>,
}

fn model(m: Option<String>) -> Result<String, ApiError> {
    m.filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model", "`model` is required"))
}

/// `content`: a string.
fn content(v: Option<Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ApiError::invalid("content", "`content` must be a string")),
    }
}

/// `tokens`: an array of token ids (integers that fit an `i32`).
fn token_ids(v: Option<Value>) -> Result<Vec<i32>, ApiError> {
    let bad = || ApiError::invalid("tokens", "`tokens` must be an array of token ids");
    let Some(Value::Array(items)) = v else {
        return Err(bad());
    };
    if items.len() > MAX_DETOKENIZE {
        return Err(ApiError::invalid(
            "tokens",
            format!("at most {MAX_DETOKENIZE} tokens per request"),
        ));
    }
    items
        .iter()
        .map(|t| {
            t.as_i64()
                .and_then(|t| i32::try_from(t).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// One `{"id", "piece"}` entry: the piece as text, or its bytes when they are
/// not valid UTF-8 alone.
fn piece_entry(id: i32, piece: &[u8]) -> Value {
    match std::str::from_utf8(piece) {
        Ok(s) => json!({"id": id, "piece": s}),
        Err(_) => json!({"id": id, "piece": piece}),
    }
}

pub async fn tokenize(
    state: web::Data<AppState>,
    body: web::Json<TokenizeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let model = model(body.model)?;
    let content = content(body.content)?;
    if body.parse_special == Some(false) {
        return Err(ApiError::invalid(
            "parse_special",
            "parse_special: false is not supported; special-token text is always parsed",
        ));
    }
    let (_, client) = state.client(&model).await?;
    let (tokens, pieces) = client
        .client()
        .tokenize(content, body.add_special.unwrap_or(false))
        .await?;
    let tokens: Vec<Value> = match body.with_pieces.unwrap_or(false) {
        true => tokens
            .iter()
            .zip(&pieces)
            .map(|(&id, piece)| piece_entry(id, piece))
            .collect(),
        false => tokens.into_iter().map(Value::from).collect(),
    };
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

pub async fn detokenize(
    state: web::Data<AppState>,
    body: web::Json<DetokenizeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let model = model(body.model)?;
    let tokens = token_ids(body.tokens)?;
    let (_, client) = state.client(&model).await?;
    let content = client.client().detokenize(tokens).await?;
    Ok(HttpResponse::Ok().json(json!({ "content": content })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_arrays_are_checked() {
        assert_eq!(token_ids(Some(json!([1, 0, 7]))).unwrap(), vec![1, 0, 7]);
        assert_eq!(token_ids(Some(json!([]))).unwrap(), Vec::<i32>::new());
        for bad in [
            json!("1 2"),
            json!([1.5]),
            json!(["1"]),
            json!([1i64 << 40]),
            json!(null),
        ] {
            assert!(token_ids(Some(bad.clone())).is_err(), "{bad}");
        }
        assert!(token_ids(None).is_err());
    }

    #[test]
    fn a_piece_is_text_or_its_bytes() {
        assert_eq!(piece_entry(3, b"he"), json!({"id": 3, "piece": "he"}));
        assert_eq!(piece_entry(4, &[0xC3]), json!({"id": 4, "piece": [195]}));
    }
}
