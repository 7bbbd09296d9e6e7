//! `POST /api/chat` and `POST /api/generate`: Ollama's native endpoints, on
//! the same inference path as the OpenAI ones (lease and admission, the
//! queue and request deadlines, grammar constraints for `format`, the chat
//! output parser for tool calls and reasoning).
//!
//! The body becomes an [`OllamaJob`] ([`super::ollama_job`]); the answer is
//! rendered by [`super::ndjson`]:
//!
//! - `stream` (default true): NDJSON lines (`application/x-ndjson`), one per
//!   generated piece; tool calls come whole, as one line before the last; the
//!   last line has `done: true`, `done_reason` and the metrics. With
//!   `stream: false` one object holds the whole answer.
//! - The first event is awaited before answering, so a request that cannot
//!   run (unknown model, prompt too long, a schema the grammar refuses) is a
//!   plain error status in Ollama's shape (see [`super::shape`]); a failure
//!   after the first line is an `{"error": …}` line, then the end.
//! - No messages (no prompt): the model is loaded (`done_reason: "load"`), or
//!   with `keep_alive: 0` unloaded (`"unload"`), as Ollama does.
//! - `keep_alive` is applied when the request is over, whatever its outcome
//!   (see [`AfterRequest`]): `0` unloads the model (after a drain), a duration
//!   or "forever" replaces the model's idle TTL until its worker stops.
//!   Preloaded models (`--preload`) are the operator's: `keep_alive` leaves
//!   them loaded (an empty request with `keep_alive: 0` answers 409).
//! - Names resolve as Ollama's do (`name` is `name:latest`, …) in the one
//!   model lookup (`models::names`), as on every route.
//! - A client that goes away cancels the generation: a non-streaming request
//!   is dropped ([`handlers::until_client_leaves`]), a stream's body is
//!   dropped by actix, which drops the generation.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use llm_node_protocol::Usage;
use serde_json::Value;
use tokio::time::Instant;

use super::error::{invalid_body, ApiError};
use super::handlers::{self, first_event, first_token_deadline};
use super::model_defaults;
use super::ndjson::{self, End, Lines, Metrics, Output};
use super::ollama_job::{ChatBody, Endpoint, GenerateBody, KeepAlive, OllamaJob};
use super::output::{self, Assembler, Part};
use super::response::finish_reason;
use super::state::AppState;
use crate::models::Models;
use crate::worker::{GenerationEvent, GenerationStream};

/// `POST /api/chat`.
pub async fn chat(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut body: ChatBody =
        serde_json::from_value(body.into_inner()).map_err(|e| invalid_body(&e))?;
    let profile = state.profile(&body.model);
    model_defaults::fill_ollama(&profile.sampling, &mut body.common.options);
    answer(&req, &state, OllamaJob::try_from(body)?).await
}

/// `POST /api/generate`.
pub async fn generate(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let mut body: GenerateBody =
        serde_json::from_value(body.into_inner()).map_err(|e| invalid_body(&e))?;
    let profile = state.profile(&body.model);
    model_defaults::fill_ollama(&profile.sampling, &mut body.common.options);
    answer(&req, &state, OllamaJob::try_from(body)?).await
}

async fn answer(
    req: &HttpRequest,
    state: &AppState,
    job: OllamaJob,
) -> Result<HttpResponse, ApiError> {
    let stream = job.stream && job.generation.is_some();
    let work = handlers::within_deadlines(state, stream, run(state, job));
    handlers::until_client_leaves(req, work).await
}

/// Runs one job and answers it whole or as a stream.
async fn run(state: &AppState, job: OllamaJob) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let Some(mut generation) = job.generation else {
        return load_or_unload(state, &job).await;
    };
    // The operator's limit is on `max_tokens`, which Ollama calls `num_predict`.
    state
        .check_limits(&job.model, &mut generation.params)
        .map_err(super::ollama_job::ollama_names)?;
    let queue = state.limits.queue_timeout;
    let (model, lease) = first_token_deadline(queue, started, state.client(&job.model)).await?;
    let loaded = Instant::now();
    if let Some(n) = job.num_ctx {
        check_num_ctx(state, &model, n).await?;
    }
    let plan = generation
        .chat
        .as_ref()
        .map(|c| c.plan(lease.chat_format()));
    if let Some(plan) = &plan {
        generation.params.constraint = plan.constraint.clone();
    }
    let blame = plan.as_ref().and_then(|p| p.constraint_param);
    let assembler = handlers::assembler(plan.as_ref(), &lease);
    let after = AfterRequest {
        models: state.models.clone(),
        model: model.clone(),
        keep_alive: job.keep_alive,
    };
    let mut stream = lease.generate(generation.prompt, generation.params)?;
    let label = match job.endpoint {
        Endpoint::Chat => "ollama_chat",
        Endpoint::Generate => "ollama_generate",
    };
    stream.meter(state.models.metrics(), &model, label, started.into_std());
    let generating = Instant::now();
    let first = first_token_deadline(queue, started, first_event(&mut stream, blame)).await?;
    let turn = Turn {
        lines: Lines {
            endpoint: job.endpoint,
            model,
        },
        assembler,
        clock: Clock {
            started,
            loaded,
            generating,
            first_piece: None,
        },
        parts: Vec::new(),
        merged: output::Message::default(),
    };
    if job.stream {
        let body = Body {
            first: Some(first),
            stream,
            turn,
            done: false,
            _after: after,
        };
        return Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .streaming(body.into_stream()));
    }
    let whole = collect(first, stream, turn).await?;
    drop(after);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(whole))
}

/// An empty request: load the model, or unload it (`keep_alive: 0`).
async fn load_or_unload(state: &AppState, job: &OllamaJob) -> Result<HttpResponse, ApiError> {
    let entry = state.models.entry(&job.model)?;
    let reason = match job.keep_alive {
        Some(KeepAlive::Unload) if entry.preload => {
            return Err(ApiError::Conflict(format!(
                "model {} is preloaded by the node's operator; keep_alive cannot unload it",
                entry.spec.name
            )))
        }
        Some(KeepAlive::Unload) => {
            if state.models.status(&entry).await?.state.is_loaded() {
                state.models.unload(&entry, false).await?;
            }
            "unload"
        }
        keep => {
            drop(state.client(&job.model).await?);
            match keep {
                Some(KeepAlive::Keep(keep)) if !entry.preload => {
                    state.models.keep_alive(&entry, keep).await?;
                }
                _ => {}
            }
            "load"
        }
    };
    let lines = Lines {
        endpoint: job.endpoint,
        model: entry.spec.name.clone(),
    };
    let end = End {
        reason,
        metrics: Metrics::default(),
    };
    let body = lines.object(&ndjson::now(), &Output::default(), Some(end));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `options.num_ctx` may not exceed the context each request gets here.
async fn check_num_ctx(state: &AppState, model: &str, num_ctx: u32) -> Result<(), ApiError> {
    let entry = state.models.entry(model)?;
    let status = state.models.status(&entry).await?;
    match status.info.map(|i| i.ctx_per_slot) {
        Some(ctx) if num_ctx > ctx => Err(ApiError::invalid(
            "options.num_ctx",
            format!(
                "options.num_ctx {num_ctx} is larger than this model's context per request \
                 ({ctx} tokens, set by the node's --ctx-size and --parallel)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Applies a request's `keep_alive` once the request is over (dropped with
/// its answer: the end of the whole answer or of the stream, a failure, or
/// the client leaving).
struct AfterRequest {
    models: Models,
    model: String,
    keep_alive: Option<KeepAlive>,
}

impl Drop for AfterRequest {
    fn drop(&mut self) {
        let Some(keep_alive) = self.keep_alive else {
            return;
        };
        let Some(entry) = self.models.get(&self.model) else {
            return;
        };
        if entry.preload {
            // The operator's choice wins over a client's.
            tracing::info!(model = %entry.spec.name, "keep_alive ignored: the model is preloaded");
            return;
        }
        let models = self.models.clone();
        actix_rt::spawn(async move {
            let applied = match keep_alive {
                // Waits for the request's lease to be returned (a drain).
                KeepAlive::Unload => models.unload(&entry, false).await,
                KeepAlive::Keep(keep) => models.keep_alive(&entry, keep).await,
            };
            if let Err(e) = applied {
                tracing::debug!(model = %entry.spec.name, error = %e, "keep_alive not applied");
            }
        });
    }
}

/// When each phase of the request began, for Ollama's metrics.
struct Clock {
    started: Instant,
    loaded: Instant,
    generating: Instant,
    first_piece: Option<Instant>,
}

impl Clock {
    fn metrics(&self, usage: &Usage) -> Metrics {
        let now = Instant::now();
        let first = self.first_piece.unwrap_or(now);
        let nanos =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_nanos() as u64;
        Metrics {
            total_duration: nanos(self.started, now),
            load_duration: nanos(self.started, self.loaded),
            prompt_eval_count: u64::from(usage.prompt_tokens),
            prompt_eval_duration: nanos(self.generating, first),
            eval_count: u64::from(usage.completion_tokens),
            eval_duration: nanos(first, now),
        }
    }
}

/// One answer being assembled from generation events.
struct Turn {
    lines: Lines,
    assembler: Assembler,
    clock: Clock,
    parts: Vec<Part>,
    /// The answer's parts merged; its tool calls are sent whole at the end.
    merged: output::Message,
}

impl Turn {
    /// Adds what `event` produced to `out`; the end once it is finished.
    fn step(&mut self, event: GenerationEvent, out: &mut Output) -> Result<Option<End>, ApiError> {
        match event {
            GenerationEvent::Started { reasoning_open, .. } => {
                self.assembler.started(reasoning_open);
                Ok(None)
            }
            GenerationEvent::Piece { text, .. } => {
                self.clock.first_piece.get_or_insert_with(Instant::now);
                self.assembler.push(text, &mut self.parts);
                self.apply(out);
                Ok(None)
            }
            GenerationEvent::Finished { reason, usage } => {
                // Cancelled without our asking: the worker is going away.
                let reason = finish_reason(reason).ok_or(ApiError::WorkerGone)?;
                self.assembler.finish(&mut self.parts);
                self.apply(out);
                out.tool_calls = self
                    .merged
                    .tool_calls
                    .drain(..)
                    .map(|(_, name, args)| (name, ndjson::arguments(&args)))
                    .collect();
                Ok(Some(End {
                    reason,
                    metrics: self.clock.metrics(&usage),
                }))
            }
        }
    }

    /// Moves the parsed parts into `out`; tool calls stay in `merged` until
    /// the end (they are sent whole).
    fn apply(&mut self, out: &mut Output) {
        for part in self.parts.drain(..) {
            self.merged.apply(part);
        }
        out.content
            .push_str(&std::mem::take(&mut self.merged.content));
        out.thinking
            .push_str(&std::mem::take(&mut self.merged.reasoning));
    }
}

/// The whole answer (`stream: false`).
async fn collect(
    first: GenerationEvent,
    mut stream: GenerationStream,
    mut turn: Turn,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Output::default();
    let mut event = first;
    loop {
        if let Some(end) = turn.step(event, &mut out)? {
            return Ok(turn.lines.object(&ndjson::now(), &out, Some(end)));
        }
        event = stream.next().await.ok_or(ApiError::Internal)??;
    }
}

/// A streamed answer. It owns the generation, so when actix drops it (the
/// client went away) the generation is cancelled in the worker.
struct Body {
    /// The event already read to decide between an error status and a stream.
    first: Option<GenerationEvent>,
    stream: GenerationStream,
    turn: Turn,
    done: bool,
    _after: AfterRequest,
}

impl Body {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
        futures_util::stream::unfold(self, |mut body| async move {
            let bytes = body.next_lines().await?;
            Some((Ok(bytes), body))
        })
    }

    /// The next non-empty lines, or `None` after the last.
    async fn next_lines(&mut self) -> Option<Bytes> {
        while !self.done {
            let event = match self.first.take() {
                Some(event) => Ok(event),
                None => match self.stream.next().await {
                    Some(event) => event.map_err(ApiError::from),
                    None => Err(ApiError::Internal),
                },
            };
            let mut out = Output::default();
            let lines = match event.and_then(|e| self.turn.step(e, &mut out)) {
                Ok(None) if out == Output::default() => continue,
                Ok(None) => self.turn.lines.line(&out, None),
                Ok(Some(end)) => {
                    self.done = true;
                    let mut lines = Vec::new();
                    if out != Output::default() {
                        lines = self.turn.lines.line(&out, None);
                    }
                    lines.extend(self.turn.lines.line(&Output::default(), Some(end)));
                    lines
                }
                Err(e) => {
                    self.done = true;
                    ndjson::error_line(&e.to_string())
                }
            };
            return Some(Bytes::from(lines));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::http::StatusCode;
    use actix_web::test;
    use serde_json::json;

    use super::*;
    use actix::Actor;

    use crate::models::actor::ModelActor;
    use crate::models::ModelSpec;
    use crate::models::{KeepAlive as Keep, ModelState};
    use crate::testing::fake_models;
    use crate::worker::fake::FakeWorker;

    /// Fake models loaded on demand (not preloaded), as `keep_alive` needs.
    /// A fake worker serves one load: once unloaded, a model stays down.
    fn on_demand(names: &[&str]) -> (Models, Vec<FakeWorker>) {
        let fakes: Vec<_> = names.iter().map(|_| FakeWorker::start()).collect();
        let entries = names
            .iter()
            .zip(&fakes)
            .map(|(name, fake)| {
                let info = crate::testing::model_info(name);
                let spec = ModelSpec {
                    name: name.to_string(),
                    path: format!("/models/{name}.gguf").into(),
                };
                (
                    spec,
                    ModelActor::attached(name, fake.client.clone(), info).start(),
                )
            })
            .collect();
        (Models::attached_with(entries, false), fakes)
    }

    async fn state_becomes(models: &Models, model: &str, want: ModelState) -> ModelState {
        let entry = models.entry(model).unwrap();
        let mut state = models.status(&entry).await.unwrap().state;
        for _ in 0..300 {
            if state == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            state = models.status(&entry).await.unwrap().state;
        }
        state
    }

    async fn service(
        models: Models,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        crate::api::test_app::app(models).await
    }

    /// Status, content type and body of one POST.
    async fn post(
        app: &impl Service<
            actix_http::Request,
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
        >,
        uri: &str,
        body: Value,
    ) -> (StatusCode, String, String) {
        let req = test::TestRequest::post()
            .uri(uri)
            .set_json(body)
            .to_request();
        let resp = test::call_service(app, req).await;
        let status = resp.status();
        let kind = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = test::read_body(resp).await;
        (status, kind, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn lines(text: &str) -> Vec<Value> {
        assert!(text.ends_with('\n'), "NDJSON ends each line: {text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn user(content: &str, extra: Value) -> Value {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    }

    #[actix_rt::test]
    async fn chat_streams_ndjson_pieces_then_a_done_line_with_metrics() {
        let (models, _fakes) = fake_models(&["M"]);
        let app = service(models).await;
        let body = user("hi", json!({"model": "m:latest"}));
        let (status, kind, text) = post(&app, "/api/chat", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(kind, "application/x-ndjson");
        let lines = lines(&text);
        let pieces: Vec<_> = lines[..lines.len() - 1]
            .iter()
            .map(|l| {
                assert_eq!(l["done"], false);
                assert_eq!(l["model"], "M", "the configured id");
                assert_eq!(l["message"]["role"], "assistant");
                l["message"]["content"].as_str().unwrap()
            })
            .collect();
        assert_eq!(pieces, crate::worker::fake::PIECES, "m:latest is m");
        let last = &lines[lines.len() - 1];
        assert_eq!(
            (&last["done"], &last["done_reason"]),
            (&json!(true), &json!("stop"))
        );
        assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
        assert_eq!(last["prompt_eval_count"], 5);
        assert_eq!(last["eval_count"], 3);
        for field in ["total_duration", "eval_duration", "prompt_eval_duration"] {
            assert!(
                last[field].as_u64().is_some_and(|n| n > 0),
                "{field}: {last}"
            );
        }
        let created = last["created_at"].as_str().unwrap();
        // RFC 3339 in UTC: `2024-07-22T20:47:51.147561Z`.
        let (date, rest) = created.split_once('T').unwrap();
        assert_eq!(date.len(), 10, "{created}");
        assert!(rest.ends_with('Z') && rest.len() >= 9, "{created}");
    }

    #[actix_rt::test]
    async fn generate_answers_whole_and_num_predict_cuts_it_with_length() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body = json!({"model": "m", "prompt": "hi", "stream": false});
        let (status, kind, text) = post(&app, "/api/generate", body).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::OK, "application/json"),
            "{text}"
        );
        let whole: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(whole["response"], "Hello, world");
        assert_eq!(whole["done_reason"], "stop");
        let body = json!({"model": "m", "prompt": "hi", "stream": false,
            "options": {"num_predict": 2}});
        let (_, _, text) = post(&app, "/api/generate", body).await;
        let cut: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (&cut["response"], &cut["done_reason"]),
            (&json!("Hello,"), &json!("length"))
        );
        assert_eq!(cut["eval_count"], 2);
        // A suffix is fill-in-the-middle: the worker gets an infill prompt.
        let body = json!({"model": "m", "prompt": "def f(", "suffix": "):", "stream": false});
        let (status, _, text) = post(&app, "/api/generate", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }

    #[actix_rt::test]
    async fn errors_before_the_stream_are_ollama_shaped_and_after_it_an_error_line() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let cases = [
            (
                "/api/chat",
                user("hi", json!({"model": "nope"})),
                StatusCode::NOT_FOUND,
            ),
            (
                "/api/chat",
                user("too long", json!({})),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/chat",
                json!({"messages": []}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/chat",
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/api/generate",
                json!({"model": "m", "prompt": "x", "options": {"num_ctx": 8192}}),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (uri, body, want) in cases {
            let (status, _, text) = post(&app, uri, body.clone()).await;
            assert_eq!(status, want, "{body}: {text}");
            let error: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error.as_object().map(|o| o.len()), Some(1), "{text}");
            assert!(
                error["error"].as_str().is_some_and(|m| !m.is_empty()),
                "{text}"
            );
        }
        let (status, _, text) = post(&app, "/api/chat", user("crash", json!({}))).await;
        assert_eq!(status, StatusCode::OK);
        let lines = lines(&text);
        let last = &lines[lines.len() - 1];
        assert!(
            last["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert_eq!(last.as_object().map(|o| o.len()), Some(1), "{text}");
    }

    #[actix_rt::test]
    async fn empty_requests_load_and_keep_alive_zero_unloads() {
        let (models, _fakes) = on_demand(&["a", "b"]);
        let app = service(models.clone()).await;
        let (_, _, text) = post(&app, "/api/chat", json!({"model": "a", "messages": []})).await;
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (&answer["done"], &answer["done_reason"]),
            (&json!(true), &json!("load"))
        );
        assert_eq!(
            answer["message"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            state_becomes(&models, "a", ModelState::Ready).await,
            ModelState::Ready
        );

        let body = json!({"model": "a", "keep_alive": 0});
        let (status, _, text) = post(&app, "/api/generate", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["done_reason"], "unload");
        assert_eq!(answer["response"], "");
        let entry = models.entry("a").unwrap();
        assert_eq!(
            models.status(&entry).await.unwrap().state,
            ModelState::Stopped
        );

        // With a prompt, `keep_alive: 0` unloads once the answer is over.
        let body = json!({"model": "b", "prompt": "hi", "stream": false, "keep_alive": "0s"});
        let (status, _, text) = post(&app, "/api/generate", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(
            state_becomes(&models, "b", ModelState::Stopped).await,
            ModelState::Stopped
        );
    }

    #[actix_rt::test]
    async fn keep_alive_leaves_preloaded_models_loaded() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models.clone()).await;
        let (status, _, _) = post(&app, "/api/chat", user("hi", json!({"keep_alive": 0}))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, text) =
            post(&app, "/api/chat", json!({"model": "m", "keep_alive": 0})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{text}");
        assert!(text.contains("preloaded"), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let entry = models.entry("m").unwrap();
        assert_eq!(
            models.status(&entry).await.unwrap().state,
            ModelState::Ready
        );
    }

    #[actix_rt::test]
    async fn a_keep_alive_duration_replaces_the_ttl_and_unloads_when_it_runs_out() {
        let (models, _fakes) = on_demand(&["m"]);
        let entry = models.entry("m").unwrap();
        let app = service(models.clone()).await;
        let keep_alive = |want: Keep| {
            let (models, entry) = (models.clone(), entry.clone());
            async move {
                let mut seen = None;
                for _ in 0..200 {
                    seen = models.status(&entry).await.unwrap().keep_alive;
                    if seen == Some(want) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            }
        };
        let (status, _, _) = post(&app, "/api/chat", user("hi", json!({"keep_alive": -1}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(keep_alive(Keep::Forever).await, Some(Keep::Forever));
        let expires_at = || async {
            let req = test::TestRequest::get().uri("/api/ps").to_request();
            let ps: Value = test::read_body_json(test::call_service(&app, req).await).await;
            ps["models"][0]["expires_at"].clone()
        };
        assert_eq!(expires_at().await, Value::Null, "kept forever");
        // `/api/ps` shows when a keep_alive runs out.
        let body = json!({"model": "m", "prompt": "hi", "keep_alive": "1h", "stream": false});
        let (status, _, _) = post(&app, "/api/generate", body).await;
        assert_eq!(status, StatusCode::OK);
        let hour = Keep::For(Duration::from_secs(3600));
        assert_eq!(keep_alive(hour).await, Some(hour));
        let now = crate::api::response::unix_now();
        let near: Vec<Value> = (now + 3590..=now + 3601)
            .map(|t| Value::from(crate::api::ollama_info::rfc3339(t)))
            .collect();
        let got = expires_at().await;
        assert!(
            near.contains(&got),
            "expires_at {got} is not an hour from now"
        );
        let body = json!({"model": "m", "prompt": "hi", "keep_alive": "1s", "stream": false});
        let (status, _, _) = post(&app, "/api/generate", body).await;
        assert_eq!(status, StatusCode::OK);
        let one_second = Keep::For(Duration::from_secs(1));
        assert_eq!(keep_alive(one_second).await, Some(one_second));
        // No TTL is configured: only the keep_alive unloads it, after ~1 s.
        assert_eq!(
            state_becomes(&models, "m", ModelState::Stopped).await,
            ModelState::Stopped
        );
        assert_eq!(
            models.status(&entry).await.unwrap().keep_alive,
            None,
            "cleared by the stop"
        );
    }

    #[actix_rt::test]
    async fn dropping_an_ndjson_stream_cancels_the_generation() {
        let (models, fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let req = test::TestRequest::post()
            .uri("/api/chat")
            .set_json(user("hang", json!({})))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(fakes[0].client.in_flight(), 1);
        drop(resp); // what actix does when the client disconnects
        for _ in 0..100 {
            if !fakes[0].cancelled.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fakes[0].cancelled.lock().unwrap().len(), 1);
        assert_eq!(fakes[0].client.in_flight(), 0);
    }
}
