//! HTTP tests of Ollama's model routes on a fake worker: every route's success
//! and error shapes, and bodies checked byte for byte where docs/api.md fixes them.

use actix::Actor;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::{json, Value};

use super::ollama_models::VERSION;
use crate::models::actor::ModelActor;
use crate::models::{ModelSpec, Models};
use crate::store::gguf::test_writer::Writer;
use crate::worker::fake::FakeWorker;

/// A model served as `tiny:latest` by a fake worker, whose file is a small
/// GGUF header (a llama, Q4_1, 7M weights, a ChatML template).
fn tiny(dir: &std::path::Path) -> (Models, FakeWorker) {
    let path = dir.join("tiny.gguf");
    let gguf = Writer::default()
        .string("general.architecture", "llama")
        .kv("general.file_type", 4, &3u32.to_le_bytes())
        .kv("llama.context_length", 4, &8192u32.to_le_bytes())
        .string(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}",
        )
        .tensor("w", &[1000, 7000]);
    std::fs::write(&path, gguf.bytes()).unwrap();
    let fake = FakeWorker::start();
    let info = crate::testing::model_info("tiny:latest");
    let actor = ModelActor::attached("tiny:latest", fake.client.clone(), info).start();
    let spec = ModelSpec {
        name: "tiny:latest".into(),
        path,
    };
    (Models::attached(vec![(spec, actor)]), fake)
}

async fn app(
    models: Models,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    crate::api::test_app::app(models).await
}

async fn call(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    req: test::TestRequest,
) -> (StatusCode, String, String) {
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = test::read_body(resp).await;
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

fn post(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An Ollama error: `{"error": "<non-empty>"}` and nothing else.
fn assert_ollama_error(text: &str) {
    let body = json_of(text);
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{text}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
}

#[actix_rt::test]
async fn root_and_version_answer_as_ollama_does() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    let (status, ctype, body) = call(&app, test::TestRequest::get().uri("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Ollama is running")
    );
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let (status, _, body) = call(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, ctype, body) = call(&app, test::TestRequest::get().uri("/api/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "application/json");
    assert_eq!(body, format!("{{\"version\":\"{VERSION}\"}}"));
    assert!(VERSION.starts_with("0.12.6+llm-node."), "{VERSION}");
}

#[actix_rt::test]
async fn show_describes_a_model_from_its_gguf_under_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    for name in [
        "tiny",
        "tiny:latest",
        "TINY",
        "library/tiny",
        "registry.ollama.ai/library/tiny:latest",
    ] {
        let (status, _, text) = call(&app, post("/api/show", json!({"model": name}))).await;
        assert_eq!(status, StatusCode::OK, "{name}: {text}");
        let body = json_of(&text);
        assert_eq!(
            body["details"],
            json!({"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                   "parameter_size": "7M", "quantization_level": "Q4_1"})
        );
        assert_eq!(body["model_info"]["general.architecture"], "llama");
        assert_eq!(body["model_info"]["llama.context_length"], 8192);
        assert_eq!(body["model_info"]["general.parameter_count"], 7_000_000);
        assert!(body["template"].as_str().unwrap().contains("<|im_start|>"));
        assert_eq!(body["capabilities"], json!(["completion"]));
        assert_eq!(body["parameters"], "", "a string, as Ollama sends it");
        assert!(body["modified_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert!(body["modelfile"].as_str().unwrap().contains("FROM "));
    }
    // The older `name` field.
    let (status, _, _) = call(&app, post("/api/show", json!({"name": "tiny"}))).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_rt::test]
async fn model_routes_refuse_bad_bodies_and_unknown_models_in_ollamas_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    let cases = [
        ("/api/show", json!({}), StatusCode::BAD_REQUEST),
        ("/api/show", json!({"model": ""}), StatusCode::BAD_REQUEST),
        ("/api/show", json!({"model": "nope"}), StatusCode::NOT_FOUND),
        (
            "/api/show",
            json!({"model": "tiny:7b"}),
            StatusCode::NOT_FOUND,
        ),
        ("/api/embed", json!({"input": "a"}), StatusCode::BAD_REQUEST),
        (
            "/api/embed",
            json!({"model": "nope", "input": "a"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/embed",
            json!({"model": "tiny", "input": 3}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embed",
            json!({"model": "tiny", "input": ["a", 1]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embed",
            json!({"model": "tiny", "input": "a", "dimensions": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embed",
            json!({"model": "tiny", "input": "a", "dimensions": 4}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embed",
            json!({"model": "tiny", "input": "boom"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embeddings",
            json!({"prompt": "a"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embeddings",
            json!({"model": "nope", "prompt": "a"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/embeddings",
            json!({"model": "tiny", "prompt": ["a"]}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (uri, body, want) in cases {
        let (status, ctype, text) = call(&app, post(uri, body.clone())).await;
        assert_eq!(status, want, "{uri} {body}: {text}");
        assert_eq!(ctype, "application/json", "{uri} {body}");
        assert_ollama_error(&text);
    }
    let malformed = test::TestRequest::post()
        .uri("/api/show")
        .insert_header(("content-type", "application/json"))
        .set_payload("{\"model\": ");
    let (status, _, text) = call(&app, malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_ollama_error(&text);
    // Wrong methods are 405s in the same shape.
    let (status, _, text) = call(&app, test::TestRequest::get().uri("/api/show")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_ollama_error(&text);
}

#[actix_rt::test]
async fn embed_answers_a_batch_with_counts_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    let body = json!({"model": "tiny", "input": ["a", "b"], "truncate": true, "keep_alive": "5m", "options": {}});
    let (status, _, text) = call(&app, post("/api/embed", body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body = json_of(&text);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "embeddings",
            "load_duration",
            "model",
            "prompt_eval_count",
            "total_duration"
        ]
    );
    assert_eq!(body["model"], "tiny");
    assert_eq!(
        body["embeddings"],
        json!([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    );
    assert_eq!(body["prompt_eval_count"], 2);
    let total = body["total_duration"].as_u64().unwrap();
    assert!(total > 0 && body["load_duration"].as_u64().unwrap() <= total);
    // `dimensions` keeps the first components, normalised.
    let (_, _, text) = call(
        &app,
        post(
            "/api/embed",
            json!({"model": "tiny", "input": "a", "dimensions": 2}),
        ),
    )
    .await;
    assert_eq!(json_of(&text)["embeddings"], json!([[1.0, 0.0]]));
    // `truncate` (default true) lets an input longer than the context through, cut.
    let long = json!({"model": "tiny", "input": ["a", "too long"]});
    let (status, _, text) = call(&app, post("/api/embed", long)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let long = json!({"model": "tiny", "input": ["a", "too long"], "truncate": false});
    let (status, _, text) = call(&app, post("/api/embed", long)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_ollama_error(&text);
    // No input, no vectors (Ollama's answer to `"input": []`).
    let (status, _, text) = call(
        &app,
        post("/api/embed", json!({"model": "tiny", "input": []})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, r#"{"embeddings":[],"model":"tiny"}"#);
}

#[actix_rt::test]
async fn the_older_embeddings_route_answers_one_vector() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    let (status, _, text) = call(
        &app,
        post(
            "/api/embeddings",
            json!({"model": "tiny:latest", "prompt": "a"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, r#"{"embedding":[1.0,0.0,0.0]}"#);
    let (_, _, text) = call(
        &app,
        post("/api/embeddings", json!({"model": "tiny", "prompt": ""})),
    )
    .await;
    assert_eq!(text, r#"{"embedding":[]}"#);
}

#[actix_rt::test]
async fn ps_lists_loaded_models_with_details_and_context() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    let (status, _, text) = call(&app, test::TestRequest::get().uri("/api/ps")).await;
    assert_eq!(status, StatusCode::OK);
    let body = json_of(&text);
    let m = &body["models"][0];
    assert_eq!(body["models"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(
        (&m["name"], &m["model"]),
        (&json!("tiny:latest"), &json!("tiny:latest"))
    );
    assert_eq!(m["size"], 1000, "the worker's weights size");
    assert_eq!(m["size_vram"], 0, "no GPU");
    assert_eq!(m["context_length"], 4096);
    assert_eq!(m["details"]["quantization_level"], "Q4_1");
    assert_eq!(m["digest"], "", "configured by path: no manifest");
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "context_length",
            "details",
            "digest",
            "expires_at",
            "model",
            "name",
            "size",
            "size_vram"
        ]
    );
}

#[actix_rt::test]
async fn openai_routes_resolve_names_as_ollama_does() {
    let dir = tempfile::tempdir().unwrap();
    let (models, _fake) = tiny(dir.path());
    let app = app(models).await;
    for (name, want) in [
        ("tiny", StatusCode::OK),
        ("Tiny:Latest", StatusCode::OK),
        ("library/tiny", StatusCode::OK),
        ("registry.ollama.ai/library/tiny", StatusCode::OK),
        ("tiny:7b", StatusCode::NOT_FOUND),
        ("other/tiny", StatusCode::NOT_FOUND),
    ] {
        let body = json!({"model": name, "messages": [{"role": "user", "content": "hi"}]});
        let (status, _, text) = call(&app, post("/v1/chat/completions", body)).await;
        assert_eq!(status, want, "{name}: {text}");
        if want == StatusCode::OK {
            assert_eq!(json_of(&text)["model"], "tiny:latest", "the served id");
        }
    }
}
