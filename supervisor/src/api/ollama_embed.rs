//! Ollama's embeddings routes, on the node's embeddings path (the worker's
//! `Embed`, as `/v1/embeddings` uses it):
//!
//! - `POST /api/embed {model, input, truncate?, dimensions?, keep_alive?, options?}`
//!   → `{model, embeddings, total_duration, load_duration, prompt_eval_count}`.
//!   `input` is a string or an array of strings (an empty array gives no
//!   vectors); `dimensions` keeps the first N components and normalises them
//!   again (as Ollama does); `keep_alive` and `options` are accepted.
//!   `truncate` (default true) embeds an input longer than the model's
//!   embedding context from its first tokens; `false` refuses it (400).
//!   `/api/embeddings` truncates too, as Ollama's does.
//! - `POST /api/embeddings {model, prompt}` → `{embedding}` (the older route;
//!   an empty prompt gives an empty vector, as Ollama's does).
//!
//! Vectors are unit length (mean pooling, L2-normalised by the worker).

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;
use super::types::{EmbeddingJob, EmbeddingRequest};
use crate::worker::Embedded;

#[derive(Debug, Deserialize)]
struct EmbedBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    dimensions: Option<Value>,
    #[serde(default)]
    truncate: Option<bool>,
}

fn parse(bytes: &[u8]) -> Result<EmbedBody, ApiError> {
    let body: EmbedBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("model", format!("invalid JSON body: {e}")))?;
    if body.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
        return Err(ApiError::invalid("model", "`model` is required"));
    }
    Ok(body)
}

/// `dimensions`: absent, or a whole number at least 1 (also `/v1/embeddings`).
pub(crate) fn dimensions(value: Option<&Value>) -> Result<Option<usize>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|&n| n > 0) {
            Some(n) => Ok(Some(n as usize)),
            None => Err(ApiError::invalid(
                "dimensions",
                format!("dimensions must be a positive integer, got {v}"),
            )),
        },
    }
}

/// The pooled vectors of `embedded`, one per input.
///
/// # Errors
/// A 400 for a model whose pooling is `none`: its per-token vectors have no
/// place in this answer (llama-server refuses them on its OpenAI route too)
/// and are served by `POST /embeddings`.
pub fn pooled(model: &str, embedded: Embedded) -> Result<Vec<Vec<f32>>, ApiError> {
    match embedded {
        Embedded::Pooled(vectors) => Ok(vectors),
        Embedded::PerToken(_) => Err(ApiError::invalid(
            "model",
            format!(
                "model {model} has pooling `none` (one vector per token), which this route cannot carry: use POST /embeddings"
            ),
        )),
    }
}

/// The first `n` components of `v`, normalised to unit length again.
///
/// # Errors
/// A 400 when the model's vectors have fewer than `n` components.
pub fn shorten(v: Vec<f32>, n: Option<usize>) -> Result<Vec<f32>, ApiError> {
    let Some(n) = n else { return Ok(v) };
    if n > v.len() {
        return Err(ApiError::invalid(
            "dimensions",
            format!("dimensions is at most {} for this model, got {n}", v.len()),
        ));
    }
    let v = &v[..n];
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    Ok(match norm > 0.0 {
        true => v.iter().map(|x| x / norm).collect(),
        false => v.to_vec(),
    })
}

/// Vectors of `inputs` from `model`, with the prompt's tokens and the
/// nanoseconds spent getting the model (load included).
async fn embed(
    state: &AppState,
    model: &str,
    inputs: Vec<String>,
    truncate: bool,
) -> Result<(Vec<Vec<f32>>, u32, u128), ApiError> {
    let job = EmbeddingJob::try_from(EmbeddingRequest {
        model: model.to_string(),
        input: json!(inputs),
        encoding_format: None,
        dimensions: None,
    })?;
    let started = Instant::now();
    let (id, lease) = state.client(&job.model).await?;
    let load = started.elapsed().as_nanos();
    let result = lease.embed_with(job.inputs, truncate).await;
    state
        .models
        .metrics()
        .observe_pooled(&id, "embeddings", started, &result);
    let (embedded, tokens) = result?;
    Ok((pooled(&id, embedded)?, tokens, load))
}

/// `POST /api/embed`.
pub async fn embed_route(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let body = parse(&body)?;
    let model = body.model.unwrap_or_default();
    let dims = dimensions(body.dimensions.as_ref())?;
    let inputs: Vec<String> = match body.input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(
                    "input",
                    "input must be a string or an array of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(ApiError::invalid(
                "input",
                "input must be a string or an array of strings",
            ))
        }
    };
    if inputs.is_empty() {
        state.models.entry(&model)?;
        return Ok(HttpResponse::Ok().json(json!({"model": model, "embeddings": []})));
    }
    let truncate = body.truncate.unwrap_or(true);
    let (vectors, tokens, load) = embed(&state, &model, inputs, truncate).await?;
    let embeddings = vectors
        .into_iter()
        .map(|v| shorten(v, dims))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(json!({
        "model": model,
        "embeddings": embeddings,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": load as u64,
        "prompt_eval_count": tokens,
    })))
}

/// `POST /api/embeddings`.
pub async fn embeddings(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = parse(&body)?;
    let model = body.model.unwrap_or_default();
    let prompt = match body.prompt {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(ApiError::invalid("prompt", "prompt must be a string")),
    };
    if prompt.is_empty() {
        state.models.entry(&model)?;
        return Ok(HttpResponse::Ok().json(json!({"embedding": []})));
    }
    let (mut vectors, _, _) = embed(&state, &model, vec![prompt], true).await?;
    Ok(HttpResponse::Ok().json(json!({"embedding": vectors.pop().unwrap_or_default()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_shorten_and_renormalise() {
        let v = vec![0.6, 0.8, 0.0];
        assert_eq!(shorten(v.clone(), None).unwrap(), v);
        assert_eq!(shorten(v.clone(), Some(3)).unwrap(), v);
        assert_eq!(shorten(v.clone(), Some(1)).unwrap(), vec![1.0]);
        assert_eq!(shorten(vec![0.0, 0.0], Some(1)).unwrap(), vec![0.0]);
        assert!(shorten(v, Some(4)).is_err());
        assert_eq!(dimensions(Some(&json!(2))).unwrap(), Some(2));
        assert_eq!(dimensions(None).unwrap(), None);
        for bad in [json!(0), json!(-1), json!(1.5), json!("2")] {
            assert!(dimensions(Some(&bad)).is_err(), "{bad}");
        }
    }
}
