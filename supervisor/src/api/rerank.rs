//! `POST /v1/rerank`, `/rerank`, `/v1/reranking` and `/reranking`:
//! llama-server's rerank routes, in the Jina/Cohere shape its clients send.
//!
//! Request: `{model, query, documents, top_n?, return_documents?}`, where
//! each document is a string or an object with a string `text`. Answer:
//! `{"model", "object": "list", "results": [{"index", "relevance_score",
//! "document": {"text"}?}], "usage": {"prompt_tokens", "total_tokens"}}`, the
//! results sorted by score, highest first (ties by index), cut to `top_n`
//! (default all). `document` is there only with `return_documents: true`
//! (llama-server never writes it; Cohere's default is false too).
//!
//! TEI's variant (`texts` instead of `documents`, as llama-server accepts it)
//! answers a bare array of `{"index", "score", "text"?}` (`text` with
//! `return_text: true`).
//!
//! A score is the reranker's raw output for the pair (its first classifier
//! output: a logit for a cross-encoder, not squashed through a sigmoid), as
//! llama-server returns it. The worker lays out and evaluates the pairs
//! (`Command::Rerank`); a model that is not a reranker is refused there with
//! a 400. Errors are OpenAI-shaped, like every route outside `/api/`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::state::AppState;
use super::types::MAX_EMBEDDING_INPUTS;

/// A validated rerank request.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankJob {
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
    /// Results to return (1 to the number of documents).
    pub top_n: usize,
    /// Write each result's document (`document.text`, or TEI's `text`).
    pub return_documents: bool,
    /// TEI's shape (`texts` in, a bare array out).
    pub tei: bool,
}

/// A string field that must be present.
fn required_string(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid(name, format!("`{name}` is required"))),
        Some(_) => Err(ApiError::invalid(
            name,
            format!("`{name}` must be a string"),
        )),
    }
}

/// `documents`: strings, or objects with a string `text`.
fn documents(param: &str, value: &Value) -> Result<Vec<String>, ApiError> {
    let shape = || {
        ApiError::invalid(
            param,
            format!("`{param}` must be a non-empty array of strings or {{\"text\": …}} objects"),
        )
    };
    let Value::Array(items) = value else {
        return Err(shape());
    };
    if items.is_empty() {
        return Err(shape());
    }
    if items.len() > MAX_EMBEDDING_INPUTS {
        let message = format!("at most {MAX_EMBEDDING_INPUTS} documents per request");
        return Err(ApiError::invalid(param, message));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => match o.get("text") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(shape()),
            },
            _ => Err(shape()),
        })
        .collect()
}

fn flag(body: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(
            name,
            format!("`{name}` must be a boolean"),
        )),
    }
}

impl TryFrom<Value> for RerankJob {
    type Error = ApiError;

    fn try_from(body: Value) -> Result<Self, ApiError> {
        let Value::Object(body) = body else {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        };
        let model = required_string(&body, "model")?;
        let query = required_string(&body, "query")?;
        let tei = !body.contains_key("documents") && body.contains_key("texts");
        let param = if tei { "texts" } else { "documents" };
        let documents = match body.get(param) {
            Some(v) => documents(param, v)?,
            None => return Err(ApiError::invalid(param, "`documents` is required")),
        };
        let top_n = match body.get("top_n") {
            None | Some(Value::Null) => documents.len(),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(ApiError::invalid("top_n", "`top_n` must be an integer ≥ 1")),
            },
        };
        let return_documents = match tei {
            true => flag(&body, "return_text")?,
            false => flag(&body, "return_documents")?,
        };
        Ok(RerankJob {
            model,
            query,
            top_n: top_n.min(documents.len()),
            documents,
            return_documents,
            tei,
        })
    }
}

/// The `top_n` best (index, score) pairs, highest score first, ties by
/// index. A document's score is its first output (NaN sorts last).
pub fn ranked(scores: &[Vec<f32>], top_n: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = scores
        .iter()
        .map(|s| s.first().copied().unwrap_or(f32::NAN))
        .enumerate()
        .collect();
    ranked.sort_by(|a, b| {
        let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
        key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0))
    });
    ranked.truncate(top_n);
    ranked
}

/// The response body for `job`, served by `model`, from the ranked scores.
pub fn response_body(job: &RerankJob, model: &str, ranked: &[(usize, f32)], tokens: u32) -> Value {
    let results: Vec<Value> = ranked
        .iter()
        .map(|&(index, score)| {
            let text = &job.documents[index];
            match (job.tei, job.return_documents) {
                (true, false) => json!({"index": index, "score": score}),
                (true, true) => json!({"index": index, "score": score, "text": text}),
                (false, false) => json!({"index": index, "relevance_score": score}),
                (false, true) => json!({"index": index, "relevance_score": score,
                    "document": {"text": text}}),
            }
        })
        .collect();
    match job.tei {
        true => Value::Array(results),
        false => json!({
            "model": model,
            "object": "list",
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    }
}

pub async fn rerank(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let job = RerankJob::try_from(body.into_inner())?;
    let (model, lease) = state.client(&job.model).await?;
    let started = std::time::Instant::now();
    let result = lease
        .client()
        .rerank(job.query.clone(), job.documents.clone())
        .await;
    state
        .models
        .metrics()
        .observe_pooled(&model, "rerank", started, &result);
    let (scores, tokens) = result?;
    let ranked = ranked(&scores, job.top_n);
    Ok(HttpResponse::Ok().json(response_body(&job, &model, &ranked, tokens)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(body: Value) -> Result<RerankJob, ApiError> {
        RerankJob::try_from(body)
    }

    fn param(e: ApiError) -> Option<String> {
        match e {
            ApiError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn documents_may_be_strings_or_text_objects_and_top_n_is_capped() {
        let j = job(json!({"model": "m", "query": "q",
            "documents": ["a", {"text": "b"}], "top_n": 9, "return_documents": true}))
        .unwrap();
        assert_eq!(j.documents, ["a", "b"]);
        assert_eq!((j.top_n, j.return_documents, j.tei), (2, true, false));
        let j =
            job(json!({"model": "m", "query": "q", "texts": ["a"], "return_text": true})).unwrap();
        assert_eq!((j.top_n, j.return_documents, j.tei), (1, true, true));
        let j = job(json!({"model": "m", "query": "", "documents": [""]})).unwrap();
        assert_eq!((j.top_n, j.return_documents), (1, false));
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        let cases = [
            (json!({"query": "q", "documents": ["a"]}), "model"),
            (json!({"model": "m", "documents": ["a"]}), "query"),
            (
                json!({"model": "m", "query": 3, "documents": ["a"]}),
                "query",
            ),
            (json!({"model": "m", "query": "q"}), "documents"),
            (
                json!({"model": "m", "query": "q", "documents": []}),
                "documents",
            ),
            (
                json!({"model": "m", "query": "q", "documents": "a"}),
                "documents",
            ),
            (
                json!({"model": "m", "query": "q", "documents": [1]}),
                "documents",
            ),
            (
                json!({"model": "m", "query": "q", "documents": [{"t": "a"}]}),
                "documents",
            ),
            (json!({"model": "m", "query": "q", "texts": []}), "texts"),
            (
                json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}),
                "top_n",
            ),
            (
                json!({"model": "m", "query": "q", "documents": ["a"], "top_n": -1}),
                "top_n",
            ),
            (
                json!({"model": "m", "query": "q", "documents": ["a"], "top_n": "2"}),
                "top_n",
            ),
            (
                json!({"model": "m", "query": "q", "documents": ["a"], "return_documents": 1}),
                "return_documents",
            ),
            (json!(["not", "an", "object"]), "body"),
        ];
        for (body, want) in cases {
            let e = job(body.clone()).expect_err(&body.to_string());
            assert_eq!(param(e).as_deref(), Some(want), "{body}");
        }
        let many = vec![json!("d"); MAX_EMBEDDING_INPUTS + 1];
        let e = job(json!({"model": "m", "query": "q", "documents": many})).unwrap_err();
        assert_eq!(param(e).as_deref(), Some("documents"));
    }

    #[test]
    fn results_are_sorted_by_score_then_index_and_cut_to_top_n() {
        let s = |v: &[f32]| v.iter().map(|&x| vec![x]).collect::<Vec<_>>();
        type Case = (Vec<Vec<f32>>, usize, Vec<(usize, f32)>);
        let cases: [Case; 5] = [
            (s(&[0.1, 2.0, -1.0]), 3, vec![(1, 2.0), (0, 0.1), (2, -1.0)]),
            (s(&[0.1, 2.0, -1.0]), 1, vec![(1, 2.0)]),
            (s(&[1.0, 1.0, 3.0]), 3, vec![(2, 3.0), (0, 1.0), (1, 1.0)]),
            (s(&[f32::NAN, -5.0]), 2, vec![(1, -5.0), (0, f32::NAN)]),
            // Several outputs: the first is the score.
            (
                vec![vec![0.0, 9.0], vec![1.0, -9.0]],
                2,
                vec![(1, 1.0), (0, 0.0)],
            ),
        ];
        for (scores, top_n, want) in cases {
            let got = ranked(&scores, top_n);
            let same = got.len() == want.len()
                && got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.0 == w.0 && (g.1 == w.1 || (g.1.is_nan() && w.1.is_nan())));
            assert!(same, "{scores:?} top {top_n}: {got:?} != {want:?}");
        }
    }

    #[test]
    fn the_body_is_llama_servers_with_documents_on_request() {
        let mut j = job(json!({"model": "m", "query": "q", "documents": ["a", "b"]})).unwrap();
        let ranked = [(1, 0.5), (0, -0.25)];
        assert_eq!(
            response_body(&j, "served", &ranked, 7),
            json!({"model": "served", "object": "list",
                "results": [{"index": 1, "relevance_score": 0.5},
                            {"index": 0, "relevance_score": -0.25}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        );
        j.return_documents = true;
        assert_eq!(
            response_body(&j, "served", &ranked[..1], 7)["results"],
            json!([{"index": 1, "relevance_score": 0.5, "document": {"text": "b"}}])
        );
        j.tei = true;
        assert_eq!(
            response_body(&j, "served", &ranked[..1], 7),
            json!([{"index": 1, "score": 0.5, "text": "b"}])
        );
        j.return_documents = false;
        assert_eq!(
            response_body(&j, "served", &ranked[..1], 7),
            json!([{"index": 1, "score": 0.5}])
        );
    }

    #[actix_rt::test]
    async fn every_rerank_route_ranks_through_the_worker_and_refusals_are_400() {
        use actix_web::test;
        let (models, _fakes) = crate::testing::fake_models(&["m"]);
        let app = crate::api::test_app::app(models).await;
        let docs = json!(["red fox", "the quick brown fox", {"text": "a quick fox"}]);
        for uri in ["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"] {
            let req = test::TestRequest::post()
                .uri(uri)
                .set_json(
                    json!({"model": "m", "query": "quick fox", "documents": docs,
                    "top_n": 2, "return_documents": true}),
                )
                .to_request();
            let body: Value = test::call_and_read_body_json(&app, req).await;
            assert_eq!(
                body,
                json!({"model": "m", "object": "list",
                    "results": [
                        {"index": 1, "relevance_score": 2.0, "document": {"text": "the quick brown fox"}},
                        {"index": 2, "relevance_score": 2.0, "document": {"text": "a quick fox"}}],
                    "usage": {"prompt_tokens": 6, "total_tokens": 6}}),
                "{uri}"
            );
        }
        // The fake refuses the query `boom` as a model that does not rerank would.
        let cases = [
            json!({"model": "m", "query": "boom", "documents": ["a"]}),
            json!({"model": "m", "query": "q", "documents": []}),
            json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}),
        ];
        for body in cases {
            let req = test::TestRequest::post()
                .uri("/v1/rerank")
                .set_json(&body)
                .to_request();
            let resp = test::call_service(&app, req).await;
            assert_eq!(resp.status(), 400, "{body}");
            let err: Value = test::read_body_json(resp).await;
            assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        }
    }
}
