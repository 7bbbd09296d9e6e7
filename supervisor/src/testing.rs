//! Helpers shared by the unit tests: model facts and an app backed by fake workers.

use actix::Actor;
use llm_node_protocol::ModelInfo;

use crate::models::actor::ModelActor;
use crate::models::{ModelSpec, Models};
use crate::worker::fake::FakeWorker;

pub fn model_info(name: &str) -> ModelInfo {
    ModelInfo {
        model_name: name.into(),
        ctx_per_slot: 4096,
        n_ctx_train: 8192,
        parallel: 4,
        embedding_size: 3,
        has_chat_template: true,
        chat_template: String::new(),
        vocab_size: 49152,
        model_size_bytes: 1000,
        n_params: 135_000_000,
    }
}

/// Models named `names`, each served by its own ready fake worker.
/// Must run inside an actix `System`.
pub fn fake_models(names: &[&str]) -> (Models, Vec<FakeWorker>) {
    let mut fakes = Vec::new();
    let entries = names
        .iter()
        .map(|name| {
            let fake = FakeWorker::start();
            let addr = ModelActor::attached(name, fake.client.clone(), model_info(name)).start();
            fakes.push(fake);
            let spec = ModelSpec {
                name: name.to_string(),
                path: format!("/models/{name}.gguf").into(),
            };
            (spec, addr)
        })
        .collect();
    (Models::attached(entries), fakes)
}

/// The node's route table over `models`, with the middlewares its handlers
/// rely on (errors in each API's shape, request ids), wrapped as `lib.rs`
/// wraps them. Must run inside an actix `System`.
pub async fn app(
    models: Models,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    use actix_web::middleware::from_fn;
    actix_web::test::init_service(
        actix_web::App::new()
            .app_data(crate::api::AppState::new(models).into_data())
            .wrap(from_fn(crate::api::shape::middleware))
            .wrap(from_fn(crate::api::request_id::middleware))
            .configure(crate::api::configure),
    )
    .await
}
