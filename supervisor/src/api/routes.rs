//! The route table: every HTTP route the node answers, in one place.
//!
//! | routes | handlers |
//! |---|---|
//! | `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models[/{id}]`, `/health` | [`handlers`] (OpenAI) |
//! | `/admin/...`, `/metrics`, `/health/ready`, `/startup` | [`admin`] |
//! | `/admin/log-level` | [`log_level`] |
//! | `/api/pull`, `/api/tags`, `/api/delete` | [`ollama`] (the model store) |
//! | `/api/chat`, `/api/generate` | [`ollama_chat`] |
//! | `/api/show`, `/api/ps`, `/api/copy`, `/api/version`, `GET`/`HEAD /` | [`ollama_models`] |
//! | `/api/embed`, `/api/embeddings` | [`ollama_embed`] |
//! | `/tokenize`, `/detokenize` | [`tokens`] (llama-server's shapes) |
//! | `/infill` | [`infill`] (llama-server's shape) |
//! | `/embeddings` | [`token_vectors`] (llama-server's shape: per-token vectors) |
//! | `/v1/rerank`, `/rerank`, `/v1/reranking`, `/reranking` | [`rerank`] (llama-server's, Jina/Cohere and TEI shapes) |
//! | `/pull`, `/api/logs` | [`router`] (llm-router's contract) |
//!
//! Who may call each route is decided in front of this table, by path
//! ([`super::access`]): a route added here is an inference route (keyed by
//! `--api-key`) unless its path says otherwise.
//!
//! Handlers find what they need as app data: [`AppState`](super::AppState)
//! always, `web::Data<store::Service>` for the store routes,
//! `web::Data<router::Member>` for `/pull`. Unit tests build the same app, with
//! the middlewares handlers rely on, with `crate::api::test_app::app(models)`.

use actix_web::{web, Resource, Route};

use super::error::json_error;
use super::state::MAX_BODY_BYTES;
use super::{
    admin, handlers, infill, log_level, ollama, ollama_chat, ollama_embed, ollama_models, rerank,
    router, token_vectors, tokens,
};
#[cfg(test)]
use crate::models::Models;

/// A resource answering `route`, and a 405 in OpenAI's shape to other methods.
fn resource(path: &str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(handlers::method_not_allowed))
}

/// Registers the API's routes, body limits and error shapes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        // `curl -d '{…}'` sends no JSON Content-Type (Ollama's documentation
        // uses exactly that form; llama-server accepts it too).
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .content_type_required(false)
            .error_handler(json_error),
    )
    .service(resource(
        "/v1/chat/completions",
        web::post().to(handlers::chat_completions),
    ))
    .service(resource(
        "/v1/completions",
        web::post().to(handlers::completions),
    ))
    .service(resource(
        "/v1/embeddings",
        web::post().to(handlers::embeddings),
    ))
    .service(resource("/tokenize", web::post().to(tokens::tokenize)))
    .service(resource(
        "/embeddings",
        web::post().to(token_vectors::embeddings),
    ))
    .service(resource("/infill", web::post().to(infill::infill)))
    .service(resource("/detokenize", web::post().to(tokens::detokenize)))
    .service(resource("/v1/rerank", web::post().to(rerank::rerank)))
    .service(resource("/rerank", web::post().to(rerank::rerank)))
    .service(resource("/v1/reranking", web::post().to(rerank::rerank)))
    .service(resource("/reranking", web::post().to(rerank::rerank)))
    .service(resource("/v1/models", web::get().to(handlers::list_models)))
    // Ids may contain slashes (`org/model`).
    .service(resource(
        "/v1/models/{id:.*}",
        web::get().to(handlers::get_model),
    ))
    .service(resource("/health", web::get().to(handlers::health)))
    .service(resource("/health/ready", web::get().to(admin::ready)))
    .service(resource("/startup", web::get().to(admin::startup)))
    .service(resource("/metrics", web::get().to(admin::metrics)))
    .service(resource("/admin/models", web::get().to(admin::list)))
    .service(resource("/admin/gpus", web::get().to(admin::gpus)))
    .service(resource("/admin/reload", web::post().to(admin::reload)))
    .service(
        web::resource("/admin/log-level")
            .route(web::get().to(log_level::get))
            .route(web::put().to(log_level::put))
            .default_service(web::to(handlers::method_not_allowed)),
    )
    .service(resource(
        "/admin/models/{id:.+}/load",
        web::post().to(admin::load),
    ))
    .service(resource(
        "/admin/models/{id:.+}/unload",
        web::post().to(admin::unload),
    ))
    .service(resource(
        "/admin/models/{id:.+}/restart",
        web::post().to(admin::restart),
    ))
    .service(resource(
        "/admin/models/{id:.+}/gpus",
        web::put().to(admin::pin),
    ))
    .service(resource("/api/pull", web::post().to(ollama::pull)))
    .service(resource("/api/tags", web::get().to(ollama::tags)))
    .service(resource("/api/delete", web::delete().to(ollama::delete)))
    .service(resource("/api/chat", web::post().to(ollama_chat::chat)))
    .service(resource(
        "/api/generate",
        web::post().to(ollama_chat::generate),
    ))
    .service(resource("/api/show", web::post().to(ollama_models::show)))
    .service(resource("/api/ps", web::get().to(ollama_models::ps)))
    .service(resource("/api/copy", web::post().to(ollama_models::copy)))
    .service(resource(
        "/api/version",
        web::get().to(ollama_models::version),
    ))
    .service(resource(
        "/api/embed",
        web::post().to(ollama_embed::embed_route),
    ))
    .service(resource(
        "/api/embeddings",
        web::post().to(ollama_embed::embeddings),
    ))
    // Clients probe `HEAD /` (the `ollama` CLI) or `GET /` before anything else.
    .service(
        resource("/", web::get().to(ollama_models::root))
            .route(web::head().to(ollama_models::root_head)),
    )
    .service(web::resource("/pull").route(web::post().to(router::pull)))
    .service(web::resource("/api/logs").route(web::get().to(router::logs)))
    .default_service(web::to(handlers::not_found));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::Actor;
    use actix_web::body::MessageBody;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::http::StatusCode;
    use actix_web::test;
    use serde_json::{json, Value};

    use super::*;
    use crate::models::actor::ModelActor;
    use crate::models::ModelSpec;
    use crate::testing::fake_models;
    use crate::worker::fake::FakeWorker;
    use crate::worker::SpawnOptions;

    async fn service(
        models: Models,
    ) -> impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    > {
        crate::api::test_app::app(models).await
    }

    async fn post(
        app: &impl Service<
            actix_http::Request,
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
        >,
        uri: &str,
        body: Value,
    ) -> (StatusCode, String) {
        let req = test::TestRequest::post()
            .uri(uri)
            .set_json(body)
            .to_request();
        let resp = test::call_service(app, req).await;
        let status = resp.status();
        let bytes = test::read_body(resp).await;
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn json_of(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    fn chat(extra: Value) -> Value {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    }

    #[actix_rt::test]
    async fn bad_requests_get_openai_error_bodies() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let cases = [
            (
                chat(json!({"model": "nope"})),
                StatusCode::NOT_FOUND,
                "model",
                Some("model_not_found"),
            ),
            (
                chat(json!({"messages": []})),
                StatusCode::BAD_REQUEST,
                "messages",
                None,
            ),
            (
                chat(json!({"temperature": 3})),
                StatusCode::BAD_REQUEST,
                "temperature",
                None,
            ),
            (
                chat(json!({"top_p": 0})),
                StatusCode::BAD_REQUEST,
                "top_p",
                None,
            ),
            (
                chat(json!({"max_tokens": 0})),
                StatusCode::BAD_REQUEST,
                "max_tokens",
                None,
            ),
            (chat(json!({"n": 17})), StatusCode::BAD_REQUEST, "n", None),
            (
                chat(json!({"messages": [{"role": "robot", "content": "x"}]})),
                StatusCode::BAD_REQUEST,
                "messages[0].role",
                None,
            ),
        ];
        for (body, status, param, code) in cases {
            let (got, text) = post(&app, "/v1/chat/completions", body.clone()).await;
            assert_eq!(got, status, "{body}: {text}");
            let error = &json_of(&text)["error"];
            assert_eq!(error["param"], param, "{text}");
            assert_eq!(error["code"].as_str(), code, "{text}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(error["type"].is_string());
        }
    }

    #[actix_rt::test]
    async fn malformed_json_and_unknown_routes_keep_the_error_shape() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"model\": ")
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let req = test::TestRequest::get().uri("/v2/nothing").to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["message"], "Invalid URL (GET /v2/nothing)");

        let req = test::TestRequest::get()
            .uri("/v1/chat/completions")
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let body: Value = test::read_body_json(resp).await;
        assert!(body["error"]["message"].is_string());
    }

    #[actix_rt::test]
    async fn ollama_routes_answer_errors_in_ollamas_shape() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let cases = [
            (
                test::TestRequest::get().uri("/api/nothing"),
                StatusCode::NOT_FOUND,
            ),
            (
                test::TestRequest::post().uri("/api/tags"),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
        ];
        for (req, status) in cases {
            let resp = test::call_service(&app, req.to_request()).await;
            assert_eq!(resp.status(), status);
            let body: Value = test::read_body_json(resp).await;
            // Exactly `{"error": "…"}`, as Ollama answers.
            assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
            assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
        }
        // llm-router's `/api/logs` keeps its own shape; OpenAI's routes theirs.
        let req = test::TestRequest::get().uri("/v1/nothing").to_request();
        let body: Value = test::read_body_json(test::call_service(&app, req).await).await;
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    #[actix_rt::test]
    async fn a_json_body_without_content_type_is_accepted() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        // `curl -d '{…}'` sends `application/x-www-form-urlencoded`.
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(chat(json!({"max_tokens": 2})).to_string())
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[actix_rt::test]
    async fn chat_completion_is_answered_whole() {
        let (models, _fakes) = fake_models(&["M"]);
        let app = service(models).await;
        let (status, text) = post(&app, "/v1/chat/completions", chat(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let body = json_of(&text);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(
            body["model"], "M",
            "the configured id, whatever the request's case"
        );
        assert_eq!(body["choices"][0]["message"]["content"], "Hello, world");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 8);
    }

    #[actix_rt::test]
    async fn completion_cut_by_max_tokens_finishes_with_length() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body = json!({"model": "m", "prompt": "once", "max_tokens": 1});
        let (status, text) = post(&app, "/v1/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let body = json_of(&text);
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }

    #[actix_rt::test]
    async fn chat_stream_sends_role_pieces_finish_usage_done() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(body)
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        assert_eq!(resp.headers().get("cache-control").unwrap(), "no-cache");
        let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(frames.len(), 7, "{text}");
        let data: Vec<Value> = frames[..6]
            .iter()
            .map(|f| json_of(f.strip_prefix("data: ").unwrap()))
            .collect();
        assert_eq!(
            data[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let pieces: String = data[1..4]
            .iter()
            .map(|d| d["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(pieces, "Hello, world");
        assert_eq!(data[4]["choices"][0]["finish_reason"], "stop");
        assert_eq!(data[5]["choices"], json!([]));
        assert_eq!(data[5]["usage"]["completion_tokens"], 3);
        assert_eq!(frames[6], "data: [DONE]");
        let ids: Vec<_> = data.iter().map(|d| d["id"].clone()).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "one id per stream");
    }

    #[actix_rt::test]
    async fn the_request_id_is_echoed_and_reaches_the_worker() {
        let (models, fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(("x-request-id", "req-42"))
            .set_json(chat(json!({})))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers().get("x-request-id").unwrap(), "req-42");
        assert_eq!(*fakes[0].traces.lock().unwrap(), ["req-42"]);

        let req = test::TestRequest::get().uri("/v1/models").to_request();
        let resp = test::call_service(&app, req).await;
        let id = resp
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(id.len(), 32, "a fresh id when the client sends none");
    }

    #[actix_rt::test]
    async fn prompt_too_long_is_a_400_even_when_streaming() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body = json!({"model": "m", "prompt": "this is too long", "stream": true});
        let (status, text) = post(&app, "/v1/completions", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json_of(&text)["error"]["code"], "context_length_exceeded");
    }

    #[actix_rt::test]
    async fn worker_crash_mid_stream_ends_with_error_event_and_done() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body =
            chat(json!({"stream": true, "messages": [{"role": "user", "content": "crash"}]}));
        let (status, text) = post(&app, "/v1/chat/completions", body).await;
        assert_eq!(status, StatusCode::OK);
        let frames: Vec<&str> = text.split_terminator("\n\n").collect();
        let error = json_of(frames[frames.len() - 2].strip_prefix("data: ").unwrap());
        assert_eq!(error["error"]["code"], "worker_unavailable");
        assert_eq!(frames[frames.len() - 1], "data: [DONE]");
    }

    #[actix_rt::test]
    async fn dropping_a_stream_cancels_the_generation() {
        let fake = FakeWorker::start();
        let models = Models::attached(vec![(
            ModelSpec {
                name: "m".into(),
                path: "/m.gguf".into(),
            },
            ModelActor::attached("m", fake.client.clone(), crate::testing::model_info("m")).start(),
        )]);
        let app = service(models).await;
        let body = chat(json!({"stream": true, "messages": [{"role": "user", "content": "hang"}]}));
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(body)
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(fake.client.in_flight(), 1);
        drop(resp); // what actix does when the client disconnects
        for _ in 0..100 {
            if !fake.cancelled.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fake.cancelled.lock().unwrap().len(), 1);
        assert_eq!(fake.client.in_flight(), 0);
    }

    #[actix_rt::test]
    async fn embeddings_in_float_and_base64() {
        let (models, _fakes) = fake_models(&["m"]);
        let app = service(models).await;
        let body = json!({"model": "m", "input": ["a", "b"]});
        let (status, text) = post(&app, "/v1/embeddings", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let body = json_of(&text);
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][0]["embedding"], json!([1.0, 0.0, 0.0]));
        assert_eq!(body["usage"]["prompt_tokens"], 2);
        let body = json!({"model": "m", "input": "a", "encoding_format": "base64"});
        let (_, text) = post(&app, "/v1/embeddings", body).await;
        assert_eq!(json_of(&text)["data"][0]["embedding"], "AACAPwAAAAAAAAAA");
        let (status, _) = post(
            &app,
            "/v1/embeddings",
            json!({"model": "m", "input": "boom"}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[actix_rt::test]
    async fn models_are_listed_and_looked_up_case_insensitively() {
        let (models, _fakes) = fake_models(&["SmolLM2", "org/other"]);
        let app = service(models).await;
        let req = test::TestRequest::get().uri("/v1/models").to_request();
        let body: Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][0]["id"], "SmolLM2");
        assert_eq!(body["data"][0]["owned_by"], "llm-node");
        assert_eq!(body["data"][0]["meta"]["state"], "ready");
        assert_eq!(body["data"][0]["meta"]["context"], 4096);
        for uri in ["/v1/models/smollm2", "/v1/models/org/other"] {
            let resp =
                test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        }
        let req = test::TestRequest::get().uri("/v1/models/nope").to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["code"], "model_not_found");
        let req = test::TestRequest::get().uri("/health").to_request();
        let body: Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(body["status"], "ok");
        assert_eq!(body["build"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["build"]["flavor"].is_string());
    }

    #[actix_rt::test]
    async fn a_failed_model_answers_503_with_retry_after() {
        let spawn = SpawnOptions {
            bin: "/no/such/worker".into(),
            config: crate::config::Args::default_for_tests().worker_config(&ModelSpec {
                name: "broken".into(),
                path: "/b.gguf".into(),
            }),
            ready_timeout: Duration::from_secs(1),
            env: Vec::new(),
            lanes: None,
            stream_buffer: crate::worker::client::DEFAULT_STREAM_BUFFER,
        };
        let spec = ModelSpec {
            name: "broken".into(),
            path: "/b.gguf".into(),
        };
        let shared = crate::models::actor::test_shared(1);
        let models = Models::attached(vec![(
            spec,
            ModelActor::new(spawn, Duration::from_secs(1), shared).start(),
        )]);
        models.wait_started().await;
        let app = service(models).await;
        let req = test::TestRequest::post()
            .uri("/v1/chat/completions")
            .set_json(chat(json!({"model": "broken"})))
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = test::read_body_json(resp).await;
        assert_eq!(body["error"]["code"], "model_unavailable");
    }
}
