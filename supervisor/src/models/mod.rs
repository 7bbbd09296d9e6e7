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
//! - [`profile`]: [`ModelProfile`], a model's own settings (from the models
//!   configuration file) and its `max_tokens` and sampling defaults.
//! - [`names`]: Ollama's name resolution (`tiny` is `tiny:latest`, …), the lookup key.
//! - [`reload`]: what a configuration reload changes (a pure plan).
//! - [`supervision`]: restart, TTL, preload and placement settings.
//! - [`error`]: the [`ModelsError`] enum.

pub mod actor;
pub mod error;
pub mod lease;
pub mod manifest_params;
pub mod names;
pub mod profile;
pub mod registry;
pub mod reload;
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
pub use profile::ModelProfile;
pub use registry::{AddModelError, ModelEntry, Models};
pub use reload::{ConfigSource, ReloadReport};
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

    /// The typed configuration sent to the worker serving `spec` with its
    /// `profile`: the node's settings where the profile sets nothing. The
    /// one place a model's resolved settings are read (context per slot ×
    /// slots for memory estimates, too). The chat template is left to the caller.
    pub fn worker_config_for(&self, spec: &ModelSpec, profile: &ModelProfile) -> WorkerConfig {
        let node = self.worker_config(spec);
        WorkerConfig {
            ctx_per_slot: profile.ctx_size.unwrap_or(node.ctx_per_slot),
            parallel: profile.parallel.unwrap_or(node.parallel),
            n_gpu_layers: profile.n_gpu_layers.unwrap_or(node.n_gpu_layers),
            main_gpu: profile.main_gpu.unwrap_or(node.main_gpu),
            split_mode: profile.split_mode.unwrap_or(node.split_mode),
            cache_ram_mib: profile.cache_ram.unwrap_or(node.cache_ram_mib),
            spec_ngram: profile.spec_ngram.unwrap_or(node.spec_ngram),
            spec_draft: profile.spec_draft.unwrap_or(node.spec_draft),
            prefill_ahead: profile.prefill_ahead.unwrap_or(node.prefill_ahead),
            draft_model_path: profile
                .draft_model
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            cache_type_k: profile.cache_type_k.unwrap_or(node.cache_type_k),
            cache_type_v: profile.cache_type_v.unwrap_or(node.cache_type_v),
            threads: profile.threads.unwrap_or(node.threads),
            embeddings: profile.embeddings.unwrap_or(node.embeddings),
            ..node
        }
    }
}
