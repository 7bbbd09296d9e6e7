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
        embedding_only: false,
        n_ctx_train: 8192,
        parallel: 4,
        embedding_size: 3,
        has_chat_template: true,
        chat_template: String::new(),
        vocab_size: 49152,
        model_size_bytes: 1000,
        n_params: 135_000_000,
        offload: llm_node_protocol::Offload {
            backends: vec!["CPU".into()],
            backend: "CPU".into(),
            layers_total: 31,
            ..Default::default()
        },
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
