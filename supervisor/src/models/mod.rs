//! The node's models: the one door to them.
//!
//! Only this module holds actor addresses. Callers ask [`Models`] (acquire a
//! [`Lease`], load, unload, restart, remove if idle, read a status) and the
//! model's actor decides; nobody reads a state and then acts on it. Errors are a
//! [`ModelsError`]; the HTTP layer turns them into answers.
//!
//! - [`registry`]: [`Models`], the set of models and the decisions that involve
//!   more than one (on-demand loading, eviction, placement, admission, idle TTL).
//! - [`actor`]: one actor per model, the only owner of its worker and state.
//! - [`lease`]: [`Lease`], a model lent to one request and counted in flight.
//! - [`state`]: [`ModelState`], the typed lifecycle state.
//! - [`spec`]: [`ModelSpec`], a model's id and file.
//! - [`names`]: Ollama's name resolution (`tiny` is `tiny:latest`, …), the lookup key.
//! - [`supervision`]: restart, TTL, preload and placement settings.
//! - [`error`]: the [`ModelsError`] enum.

pub mod actor;
pub mod error;
pub mod lease;
pub mod names;
pub mod registry;
pub mod spec;
pub mod state;
pub mod supervision;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llm_node_protocol::WorkerConfig;

pub use actor::{KeepAlive, ModelStatus};
pub use error::ModelsError;
pub use lease::Lease;
pub use registry::{AddModelError, ModelEntry, Models};
pub use spec::ModelSpec;
pub use state::ModelState;
pub use supervision::{Supervision, SupervisionArgs, SupervisionError};

use crate::worker::Lanes;

/// What the models subsystem needs to start workers (the configuration's
/// part for it, built by `config`; never the whole flag set).
#[derive(Clone)]
pub struct ModelSettings {
    /// The `llm-node-worker` binary (or a stand-in).
    pub bin: PathBuf,
    /// Worker settings shared by every model; [`ModelSettings::worker_config`]
    /// fills in each model's name and file.
    pub worker: WorkerConfig,
    /// How long a worker may take to answer `Ready`; also how long a request
    /// waits for its model to load.
    pub ready_timeout: Duration,
    /// How long a stopping worker gets between TERM and KILL.
    pub shutdown_timeout: Duration,
    /// The HTTP threads' lanes, when workers should reply on them.
    pub lanes: Option<Arc<Lanes>>,
    /// Events buffered per request before its reader counts as too slow.
    pub stream_buffer: usize,
    /// Operator chat templates (`--chat-template`) by model key: they
    /// replace the GGUF's template and one a router sends.
    pub chat_templates: std::collections::HashMap<String, String>,
}

impl ModelSettings {
    /// The typed configuration sent to the worker serving `spec`.
    pub fn worker_config(&self, spec: &ModelSpec) -> WorkerConfig {
        WorkerConfig {
            model_name: spec.name.clone(),
            model_path: spec.path.to_string_lossy().into_owned(),
            chat_template: None,
            ..self.worker.clone()
        }
    }
}
