//! The HTTP endpoints. Each handler validates its body into a job, finds the
//! model's client through its actor, and renders the worker's answer. A body
//! whose model has a cloud prefix (`openai:`, …) goes to [`super::cloud`] first.

use actix_web::{web, HttpRequest, HttpResponse};
use llm_node_protocol::{Constraint, TokenLogprob, Usage};
use serde_json::json;

use super::chat::Plan;
use super::error::{invalid_body, ApiError};
use super::output::{self, Assembler};
use super::response::{
    finish_reason, response_id, unix_now, ChatChoice, ChatCompletion, EmbeddingData, EmbeddingList,
    EmbeddingUsage, EmbeddingValue, Header, TextChoice, TextCompletion, UsageBody,
};
use super::sse::{self, ChunkKind, ChunkWriter};
use super::state::AppState;
use super::types::{
    ChatCompletionRequest, CompletionRequest, EmbeddingJob, EmbeddingRequest, EncodingFormat,
    GenerationJob,
};
use super::{aliases, cloud, disconnect, model_defaults};
use crate::cloud::Api;
use crate::models::{Lease, ModelEntry, ModelStatus};
use crate::worker::{GenerationEvent, GenerationStream};

/// The body as `T`, unless its model is a cloud one: then the cloud's answer.
async fn local_or_cloud<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    state: &AppState,
    api: Api,
    body: serde_json::Value,
) -> Result<Result<T, HttpResponse>, ApiError> {
    match cloud::route(state, body) {
        Ok((route, body)) => {
            let answer = cloud::answer(state, api, route, body);
            Ok(Err(until_client_leaves(req, answer).await?))
        }
        Err(body) => Ok(Ok(
            serde_json::from_value(body).map_err(|e| invalid_body(&e))?
        )),
    }
}

pub async fn chat_completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let mut body: ChatCompletionRequest =
        match local_or_cloud(&req, &state, Api::Chat, body.into_inner()).await? {
            Ok(body) => body,
            Err(answer) => return Ok(answer),
        };
    let profile = state.profile(&body.model);
    model_defaults::fill_openai(&profile.sampling, &mut body.sampling);
    let mut job = GenerationJob::try_from(body)?;
    if let Some(n) = profile.sampling.repeat_last_n {
        job.params.penalty_last_n = n;
    }
    let answer = within_deadlines(&state, job.stream, generate(&state, job, ChunkKind::Chat));
    until_client_leaves(&req, answer).await
}

pub async fn completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let mut body: CompletionRequest =
        match local_or_cloud(&req, &state, Api::Completions, body.into_inner()).await? {
            Ok(body) => body,
            Err(answer) => return Ok(answer),
        };
    let profile = state.profile(&body.model);
    model_defaults::fill_openai(&profile.sampling, &mut body.sampling);
    let mut job = GenerationJob::try_from(body)?;
    if let Some(n) = profile.sampling.repeat_last_n {
        job.params.penalty_last_n = n;
    }
    let answer = within_deadlines(&state, job.stream, generate(&state, job, ChunkKind::Text));
    until_client_leaves(&req, answer).await
}

/// Runs `answer` within the node's request deadline (non-streaming answers;
/// a stream's answer is its first event, bounded by the queue deadline).
pub(super) async fn within_deadlines(
    state: &AppState,
    stream: bool,
    answer: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let limit = match (stream, state.limits.request_timeout) {
        (false, Some(t)) => t,
        _ => return answer.await,
    };
    tokio::time::timeout(limit, answer)
        .await
        .unwrap_or(Err(ApiError::Timeout {
            what: "the whole request",
            secs: limit.as_secs(),
        }))
}

/// Runs `answer` unless the client hangs up first: then it is dropped, which
/// releases the model and cancels the generation in the worker (a waiting
/// request gives up its place, a running one stops generating).
pub(super) async fn until_client_leaves(
    req: &HttpRequest,
    answer: impl std::future::Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    tokio::select! {
        r = answer => r,
        () = disconnect::gone(disconnect::connection(req)) => {
            tracing::info!("client went away; request cancelled");
            Err(ApiError::ClientClosed)
        }
    }
}

/// Runs a generation and answers it whole or as a stream.
///
/// The first event is awaited before answering, so that a prompt that does not
/// fit (or a grammar the model refuses) is a plain 400 even for streaming
/// requests. `n` choices are `n` generations of the same prompt on the
/// model's slots (seeds `seed`, `seed + 1`, … when a seed is given).
pub(super) async fn generate(
    state: &AppState,
    mut job: GenerationJob,
    kind: ChunkKind,
) -> Result<HttpResponse, ApiError> {
    if job.stream && job.n > 1 {
        return Err(ApiError::invalid(
            "n",
            "n > 1 is supported for non-streaming requests only",
        ));
    }
    state.check_limits(&job.model, &mut job.params)?;
    let started = tokio::time::Instant::now();
    let queue = state.limits.queue_timeout;
    let (model, client) = first_token_deadline(queue, started, state.client(&job.model)).await?;
    // A model with no slots serves embeddings only: `generate` says so.
    if let Some(slots) = client.slots().filter(|s| *s > 0 && job.n > *s) {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n must be at most {slots} for this model (its slots); got {}",
                job.n
            ),
        ));
    }
    let plan = job.chat.as_ref().map(|c| c.plan(client.chat_format()));
    if let Some(plan) = &plan {
        job.params.constraint = plan.constraint.clone();
    }
    let blame = plan.as_ref().and_then(|p| p.constraint_param);
    let assembler = || assembler(plan.as_ref(), &client);
    let arrived = started.into_std();
    let mut streams = start_choices(state, &job, &client, (&model, arrived), kind)?;
    let writer = ChunkWriter {
        kind,
        id: response_id(match kind {
            ChunkKind::Chat => "chatcmpl",
            ChunkKind::Text => "cmpl",
        }),
        created: unix_now(),
        model,
        include_usage: job.include_usage,
    };
    let want_logprobs = job.params.logprobs.is_some();
    if job.stream {
        let mut stream = streams.pop().ok_or(ApiError::Internal)?;
        let first = first_token_deadline(queue, started, first_event(&mut stream, blame)).await?;
        let body = sse::response(writer, first, stream, assembler(), want_logprobs);
        return Ok(body);
    }
    // Every choice is read as it comes: one read after another would leave
    // its events unread meanwhile, and be cancelled as too slow (`--stream-buffer`).
    let choices = futures_util::future::try_join_all(streams.into_iter().map(|mut stream| {
        let assembler = assembler();
        async move {
            let first =
                first_token_deadline(queue, started, first_event(&mut stream, blame)).await?;
            collect(first, stream, assembler).await
        }
    }))
    .await?;
    Ok(whole_answer(writer, choices, want_logprobs))
}

/// How one choice's text becomes the answer, for this request on this model.
pub(super) fn assembler(plan: Option<&Plan>, client: &Lease) -> Assembler {
    match plan {
        // A grammar over the whole output (response_format, json_schema,
        // grammar) makes it the answer itself: no family syntax to parse.
        Some(plan) if plan.parse.forced.is_none() && whole_output(&plan.constraint) => {
            Assembler::text()
        }
        Some(plan) => Assembler::chat(client.chat_format(), plan.parse.clone())
            .max_calls(if plan.parallel { u32::MAX } else { 1 }),
        None => Assembler::text(),
    }
}

/// Starts the request's `n` generations (seeds `seed`, `seed + 1`, …),
/// metered under `model` from the request's arrival.
fn start_choices(
    state: &AppState,
    job: &GenerationJob,
    client: &Lease,
    (model, arrived): (&str, std::time::Instant),
    kind: ChunkKind,
) -> Result<Vec<GenerationStream>, ApiError> {
    let endpoint = match kind {
        ChunkKind::Chat => "chat",
        ChunkKind::Text => "completions",
    };
    (0..job.n)
        .map(|i| {
            let mut params = job.params.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(i));
            let mut stream = client.generate(job.prompt.clone(), params)?;
            stream.meter(state.models.metrics(), model, endpoint, arrived);
            Ok(stream)
        })
        .collect()
}

/// The non-streamed answer: every choice, usage summed over them (the prompt once).
fn whole_answer(writer: ChunkWriter, choices: Vec<Choice>, want_logprobs: bool) -> HttpResponse {
    let mut usage = Usage::default();
    for c in &choices {
        usage.prompt_tokens = c.usage.prompt_tokens;
        usage.cached_tokens = usage.cached_tokens.max(c.usage.cached_tokens);
        usage.completion_tokens += c.usage.completion_tokens;
    }
    let kind = writer.kind;
    let header = Header {
        id: writer.id,
        object: match kind {
            ChunkKind::Chat => "chat.completion",
            ChunkKind::Text => "text_completion",
        },
        created: writer.created,
        model: writer.model,
    };
    let usage = UsageBody::from(&usage);
    let indexed = choices.into_iter().enumerate().map(|(i, c)| (i as u32, c));
    match kind {
        ChunkKind::Chat => HttpResponse::Ok().json(ChatCompletion {
            header,
            choices: indexed
                .map(|(index, c)| ChatChoice {
                    index,
                    message: c.message.to_json(),
                    logprobs: want_logprobs.then(|| output::chat_logprobs(&c.logprobs)),
                    finish_reason: c.reason,
                })
                .collect(),
            usage,
        }),
        ChunkKind::Text => HttpResponse::Ok().json(TextCompletion {
            header,
            choices: indexed
                .map(|(index, c)| TextChoice {
                    index,
                    logprobs: want_logprobs.then(|| output::text_logprobs(&c.logprobs, 0)),
                    text: c.message.content,
                    finish_reason: Some(c.reason),
                })
                .collect(),
            usage: Some(usage),
        }),
    }
}

/// Runs `step` unless the request's first token is not there by `start + limit`.
pub(super) async fn first_token_deadline<T>(
    limit: Option<std::time::Duration>,
    start: tokio::time::Instant,
    step: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let Some(limit) = limit else {
        return step.await;
    };
    tokio::time::timeout_at(start + limit, step)
        .await
        .unwrap_or(Err(ApiError::Timeout {
            what: "its first token",
            secs: limit.as_secs(),
        }))
}

/// Whether `constraint` covers the whole output (not a lazy tool-call grammar).
fn whole_output(constraint: &Option<Constraint>) -> bool {
    matches!(
        constraint,
        Some(Constraint::JsonSchema(_) | Constraint::Grammar(_))
    )
}

/// The first event of a generation; a refused constraint is blamed on the
/// request parameter it came from.
pub(super) async fn first_event(
    stream: &mut GenerationStream,
    blame: Option<&'static str>,
) -> Result<GenerationEvent, ApiError> {
    match stream.next().await {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(match (ApiError::from(e), blame) {
            (
                ApiError::InvalidRequest {
                    message,
                    param: None,
                },
                Some(param),
            ) => ApiError::InvalidRequest {
                message,
                param: Some(param.to_owned()),
            },
            (e, _) => e,
        }),
        None => Err(ApiError::Internal),
    }
}

/// One finished choice.
struct Choice {
    message: output::Message,
    reason: &'static str,
    usage: Usage,
    logprobs: Vec<TokenLogprob>,
}

/// Reads a generation to its end.
async fn collect(
    first: GenerationEvent,
    mut stream: GenerationStream,
    mut assembler: Assembler,
) -> Result<Choice, ApiError> {
    let mut message = output::Message::default();
    let mut logprobs = Vec::new();
    let mut parts = Vec::new();
    let mut event = first;
    loop {
        match event {
            GenerationEvent::Started { reasoning_open, .. } => assembler.started(reasoning_open),
            GenerationEvent::Piece {
                text, logprobs: lp, ..
            } => {
                logprobs.extend(lp);
                assembler.push(text, &mut parts);
            }
            GenerationEvent::Finished { reason, usage } => {
                // Cancelled without our asking: the worker is going away.
                let reason = finish_reason(reason).ok_or(ApiError::WorkerGone)?;
                assembler.finish(&mut parts);
                for part in parts.drain(..) {
                    message.apply(part);
                }
                return Ok(Choice {
                    message,
                    reason: output::finish_reason(reason, assembler.called_tools()),
                    usage,
                    logprobs,
                });
            }
        }
        for part in parts.drain(..) {
            message.apply(part);
        }
        event = stream.next().await.ok_or(ApiError::Internal)??;
    }
}

pub async fn embeddings(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let body: EmbeddingRequest =
        match local_or_cloud(&req, &state, Api::Embeddings, body.into_inner()).await? {
            Ok(body) => body,
            Err(answer) => return Ok(answer),
        };
    let job = EmbeddingJob::try_from(body)?;
    let (model, client) = state.client(&job.model).await?;
    let started = std::time::Instant::now();
    let result = client.embed(job.inputs).await;
    state
        .models
        .metrics()
        .observe_pooled(&model, "embeddings", started, &result);
    let (embedded, prompt_tokens) = result?;
    let vectors = crate::api::ollama_embed::pooled(&model, embedded)?
        .into_iter()
        .map(|v| crate::api::ollama_embed::shorten(v, job.dimensions))
        .collect::<Result<Vec<_>, _>>()?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match job.format {
                EncodingFormat::Float => EmbeddingValue::Float(vector),
                EncodingFormat::Base64 => EmbeddingValue::base64(&vector),
            },
        })
        .collect();
    Ok(HttpResponse::Ok().json(EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }))
}

pub async fn list_models(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let statuses = state.models.statuses().await;
    let data: Vec<_> = statuses
        .iter()
        .map(|(entry, status)| model_object(&state, entry, status))
        .collect();
    let mut data = aliases::openai_list(data, &alias_table(statuses.iter().map(|(e, _)| e)));
    data.extend(cloud::listed(&state));
    // What the router reads from its registration probe (contract §3.6).
    let (initializing, ready_models) =
        crate::router::readiness(statuses.iter().map(|(_, s)| &s.state));
    Ok(
        HttpResponse::Ok().json(json!({"object": "list", "data": data,
        "initializing": initializing, "ready_models": ready_models})),
    )
}

pub async fn get_model(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if let Some(listed) = cloud::listed(&state).into_iter().find(|m| m["id"] == id) {
        return Ok(HttpResponse::Ok().json(listed));
    }
    let entry = state.models.entry(&id)?;
    let status = state.models.status(&entry).await?;
    let model = model_object(&state, &entry, &status);
    // Asked by an alias: the alias's own entry, as the list shows it.
    let key = crate::models::names::canonical(&id);
    Ok(HttpResponse::Ok().json(
        match entry
            .profile
            .aliases
            .iter()
            .find(|a| crate::models::names::canonical(a) == key)
        {
            Some(alias) => aliases::openai_entry(&model, alias),
            None => model,
        },
    ))
}

/// Each model's aliases, by model id (for [`aliases`]).
pub fn alias_table<'a>(
    entries: impl Iterator<Item = &'a ModelEntry>,
) -> Vec<(String, Vec<String>)> {
    entries
        .filter(|e| !e.profile.aliases.is_empty())
        .map(|e| (e.spec.name.clone(), e.profile.aliases.clone()))
        .collect()
}

/// One entry of `/v1/models`, with llm-node's facts under `meta`.
fn model_object(state: &AppState, entry: &ModelEntry, status: &ModelStatus) -> serde_json::Value {
    let info = status.info.as_ref();
    json!({
        "id": entry.spec.name,
        "object": "model",
        "created": state.created,
        "owned_by": "llm-node",
        "meta": {
            "state": status.state.label(),
            "context": info.map(|i| i.ctx_per_slot),
            "n_ctx_train": info.map(|i| i.n_ctx_train),
            "parallel": info.map(|i| i.parallel),
            "embedding_size": info.map(|i| i.embedding_size),
            "embedding_only": info.map(|i| i.embedding_only),
            "has_chat_template": info.map(|i| i.has_chat_template),
            "vocab_size": info.map(|i| i.vocab_size),
            "size": info.map(|i| i.model_size_bytes),
            "n_params": info.map(|i| i.n_params),
            "in_flight": status.in_flight,
            "uptime_secs": status.uptime.map(|u| u.as_secs()),
        },
    })
}

/// Liveness, with what this binary is (version, commit, native/portable, backends).
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "build": crate::build_info::BUILD}))
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        method: req.method().to_string(),
        path: req.path().to_string(),
    })
}

pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_string(),
    })
}
