//! The HTTP endpoints. Each handler validates its body into a job, finds the
//! model's client through its actor, and renders the worker's answer.

use actix_web::{web, HttpRequest, HttpResponse};
use llm_node_protocol::Usage;
use serde_json::json;

use super::error::ApiError;
use super::response::{
    finish_reason, response_id, unix_now, AssistantMessage, ChatChoice, ChatCompletion,
    EmbeddingData, EmbeddingList, EmbeddingUsage, EmbeddingValue, Header, TextChoice,
    TextCompletion, UsageBody,
};
use super::sse::{self, ChunkKind, ChunkWriter};
use super::state::AppState;
use super::types::{
    ChatCompletionRequest, CompletionRequest, EmbeddingJob, EmbeddingRequest, EncodingFormat,
    GenerationJob,
};
use crate::models::{ModelEntry, ModelStatus};
use crate::worker::{GenerationEvent, GenerationStream};

pub async fn chat_completions(
    state: web::Data<AppState>,
    body: web::Json<ChatCompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = GenerationJob::try_from(body.into_inner())?;
    generate(&state, job, ChunkKind::Chat).await
}

pub async fn completions(
    state: web::Data<AppState>,
    body: web::Json<CompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = GenerationJob::try_from(body.into_inner())?;
    generate(&state, job, ChunkKind::Text).await
}

/// Runs a generation and answers it whole or as a stream.
///
/// The first event is awaited before answering, so that a prompt that does not
/// fit is a plain 400 even for streaming requests.
async fn generate(
    state: &AppState,
    job: GenerationJob,
    kind: ChunkKind,
) -> Result<HttpResponse, ApiError> {
    let (model, client) = state.client(&job.model).await?;
    let mut stream = client.generate(job.prompt, job.params)?;
    let endpoint = match kind {
        ChunkKind::Chat => "chat",
        ChunkKind::Text => "completions",
    };
    stream.meter(state.models.metrics(), &model, endpoint);
    let first = match stream.next().await {
        Some(event) => event?,
        None => return Err(ApiError::Internal),
    };
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
    if job.stream {
        return Ok(sse::response(writer, first, stream));
    }
    let (text, reason, usage) = collect(first, stream).await?;
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
    Ok(match kind {
        ChunkKind::Chat => HttpResponse::Ok().json(ChatCompletion {
            header,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: reason,
            }],
            usage,
        }),
        ChunkKind::Text => HttpResponse::Ok().json(TextCompletion {
            header,
            choices: vec![TextChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: Some(reason),
            }],
            usage: Some(usage),
        }),
    })
}

/// Reads a generation to its end: text, finish reason, usage.
async fn collect(
    first: GenerationEvent,
    mut stream: GenerationStream,
) -> Result<(String, &'static str, Usage), ApiError> {
    let mut text = String::new();
    let mut event = first;
    loop {
        match event {
            GenerationEvent::Started { .. } => {}
            GenerationEvent::Piece { text: piece, .. } => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage } => {
                // Cancelled without our asking: the worker is going away.
                let reason = finish_reason(reason).ok_or(ApiError::WorkerGone)?;
                return Ok((text, reason, usage));
            }
        }
        event = stream.next().await.ok_or(ApiError::Internal)??;
    }
}

pub async fn embeddings(
    state: web::Data<AppState>,
    body: web::Json<EmbeddingRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = EmbeddingJob::try_from(body.into_inner())?;
    let (model, client) = state.client(&job.model).await?;
    let started = std::time::Instant::now();
    let result = client.embed(job.inputs).await;
    let m = state.models.metrics();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.requests
        .with_label_values(&[&model, "embeddings", outcome])
        .inc();
    m.request_duration
        .with_label_values(&[&model, "embeddings"])
        .observe(started.elapsed().as_secs_f64());
    let (vectors, prompt_tokens) = result?;
    m.prompt_tokens
        .with_label_values(&[&model])
        .inc_by(u64::from(prompt_tokens));
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
    let entry = state.models.entry(&id)?;
    let status = state.models.status(&entry).await?;
    Ok(HttpResponse::Ok().json(model_object(&state, &entry, &status)))
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
            "has_chat_template": info.map(|i| i.has_chat_template),
            "vocab_size": info.map(|i| i.vocab_size),
            "size": info.map(|i| i.model_size_bytes),
            "n_params": info.map(|i| i.n_params),
            "in_flight": status.in_flight,
            "uptime_secs": status.uptime.map(|u| u.as_secs()),
        },
    })
}

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
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
