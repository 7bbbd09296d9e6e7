//! `POST /embeddings`: llama-server's non-OpenAI embeddings route, the one
//! that can carry per-token vectors.
//!
//! `{model, content | input}` (any form [`super::embed_input`] reads) →
//! `[{"index": i, "embedding": [[…], …]}, …]`, one entry per input: for a
//! model whose pooling is `none`, one vector per token of the input (as
//! llama.cpp computes them, not normalised); for any other model, a list of
//! one pooled, normalised vector, as llama-server answers. `/v1/embeddings`
//! refuses `none`-pooled models with a 400 pointing here, as llama-server's
//! OpenAI route does. Errors are OpenAI-shaped, like every route outside `/api/`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;
use crate::worker::Embedded;

#[derive(Debug, Deserialize)]
pub struct Body {
    model: Option<String>,
    content: Option<Value>,
    input: Option<Value>,
}

/// Each input's vectors: per token, or the pooled one as a list of one.
pub fn entries(embedded: Embedded) -> Value {
    let per_input: Vec<Vec<Vec<f32>>> = match embedded {
        Embedded::PerToken(inputs) => inputs,
        Embedded::Pooled(vectors) => vectors.into_iter().map(|v| vec![v]).collect(),
    };
    per_input
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"index": index, "embedding": embedding}))
        .collect()
}

/// `POST /embeddings`.
pub async fn embeddings(
    state: web::Data<AppState>,
    body: web::Json<Body>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let model = body
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let input = body
        .input
        .or(body.content)
        .ok_or_else(|| ApiError::invalid("input", "`content` or `input` is required"))?;
    let inputs = super::embed_input::inputs(&input)?;
    let (id, lease) = state.client(&model).await?;
    let started = std::time::Instant::now();
    let result = lease.embed(inputs).await;
    state
        .models
        .metrics()
        .observe_pooled(&id, "embeddings", started, &result);
    let (embedded, _) = result?;
    Ok(HttpResponse::Ok().json(entries(embedded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_vectors_are_listed_per_input_and_pooled_ones_as_a_list_of_one() {
        let per_token = Embedded::PerToken(vec![
            vec![vec![1.0, 2.0], vec![3.0, 4.0]],
            vec![vec![5.0, 6.0]],
        ]);
        assert_eq!(
            entries(per_token),
            json!([{"index": 0, "embedding": [[1.0, 2.0], [3.0, 4.0]]},
                   {"index": 1, "embedding": [[5.0, 6.0]]}])
        );
        let pooled = Embedded::Pooled(vec![vec![0.6, 0.8]]);
        assert_eq!(
            entries(pooled),
            json!([{"index": 0, "embedding": [[0.6f32, 0.8f32]]}])
        );
    }
}
