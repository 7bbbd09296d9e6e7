//! Command-line and environment configuration of the node.
//!
//! Owns [`Args`] (every flag is also an `LLM_NODE_*` environment variable and
//! a line of `--help`), the cross-field validation done once at startup
//! ([`Args::validate`]), model discovery ([`ModelSpec`]) and the typed
//! [`WorkerConfig`] each worker receives (workers never read the environment).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use llm_node_protocol::{KvCacheType, SplitMode, WorkerConfig};

use crate::models::ModelSettings;
pub use crate::models::{ModelProfile, ModelSpec};
pub use crate::paths::cache_dir;
use crate::store;

pub mod file;

/// Name of the worker binary looked up next to the supervisor's own executable.
pub const WORKER_BIN_NAME: &str = "llm-node-worker";

/// File name of the bundled model in the cache (see `scripts/setup.sh`).
pub const BUNDLED_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Id the bundled model is served under when no model is configured.
pub const BUNDLED_MODEL_NAME: &str = "smollm2-135m-instruct";

/// Smallest per-slot context we accept; below this no chat template fits.
const MIN_CTX_SIZE: u32 = 64;
/// Upper bounds: llama.cpp's contexts are sized `ctx × parallel` in 32 bits.
const MAX_CTX_SIZE: u32 = 1 << 21;
const MAX_PARALLEL: u32 = 512;

/// Everything `llm-node` can be told at startup.
#[derive(Debug, Clone, Parser)]
#[command(name = "llm-node", version = crate::build_info::LONG_VERSION, about = "OpenAI-compatible inference node")]
pub struct Args {
    /// Address the HTTP server binds to.
    #[arg(long, env = "LLM_NODE_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub host: String,

    /// Port the HTTP server listens on (0 picks a free one).
    #[arg(long, env = "LLM_NODE_PORT", default_value_t = 11435)]
    pub port: u16,

    /// Serve HTTPS with this PEM certificate chain (leaf first; with
    /// `--tls-key`). A renewed file is picked up without a restart.
    #[arg(
        long,
        env = "LLM_NODE_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "LLM_NODE_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    pub tls_key: Option<PathBuf>,

    /// A model to serve, as NAME=PATH to a GGUF file. Repeatable; the environment
    /// variable takes a comma-separated list.
    #[arg(
        long = "model",
        env = "LLM_NODE_MODELS",
        value_name = "NAME=PATH",
        value_delimiter = ',',
        value_parser = parse_model_arg
    )]
    pub models: Vec<ModelSpec>,

    /// Directory scanned for models: each `*.gguf` directly in it is served under
    /// its lowercased file stem, each `<dir>/model.gguf` under `<dir>` (`name_tag` → `name:tag`, the router layout). With neither
    /// this nor `--model`, the bundled model from `~/.cache/llm-node/models` is
    /// served as `smollm2-135m-instruct`.
    #[arg(long, env = "LLM_NODE_MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// A models configuration file (TOML): models by path or store name,
    /// aliases and per-model settings, over these flags (docs/configuration.md).
    /// Checked at start; reloaded on SIGHUP and `POST /admin/reload`.
    #[arg(long, env = "LLM_NODE_MODELS_CONFIG", value_name = "FILE")]
    pub models_config: Option<PathBuf>,

    /// Context window of each parallel slot, in tokens.
    #[arg(long, env = "LLM_NODE_CTX_SIZE", default_value_t = 4096)]
    pub ctx_size: u32,

    /// Sequences each model decodes together (continuous-batching slots).
    #[arg(long, env = "LLM_NODE_PARALLEL", default_value_t = 4)]
    pub parallel: u32,

    /// CPU threads per worker for decoding; 0 uses all cores.
    #[arg(long, env = "LLM_NODE_THREADS", default_value_t = 0)]
    pub threads: u32,

    /// HTTP threads of the supervisor; 0 uses one per core, at most 8. Each
    /// reads its own event lane of every worker.
    #[arg(long, env = "LLM_NODE_HTTP_THREADS", default_value_t = 0)]
    pub http_threads: u16,

    /// Maximum tokens submitted to one decode call (logical batch).
    #[arg(long, env = "LLM_NODE_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,

    /// Most prompt tokens per decode step while other sequences of the model
    /// are generating (bounds how long a new long prompt stalls their
    /// streams); 0 (the default) = up to the batch size, as llama-server does.
    #[arg(long, env = "LLM_NODE_PREFILL_CHUNK", default_value_t = 0)]
    pub prefill_chunk: u32,

    /// Layers offloaded to the GPU; the worker clamps to the model's layer count.
    #[arg(long, env = "LLM_NODE_N_GPU_LAYERS", default_value_t = 999)]
    pub n_gpu_layers: u32,

    /// Index of the main GPU among the visible ones.
    #[arg(long, env = "LLM_NODE_MAIN_GPU", default_value_t = 0)]
    pub main_gpu: i32,

    /// How a model is spread over several GPUs (llama-server's
    /// `--split-mode`): `none` (the main GPU only), `layer` (whole layers
    /// per GPU, the default) or `row` (rows of each matrix, CUDA only).
    #[arg(long, env = "LLM_NODE_SPLIT_MODE", default_value = "layer")]
    pub split_mode: SplitMode,

    /// Element type of the K cache: f32, f16 (the default), bf16, q8_0,
    /// q4_0, q4_1, iq4_nl, q5_0 or q5_1 (llama-server's `--cache-type-k`).
    #[arg(long, env = "LLM_NODE_CACHE_TYPE_K", default_value = "f16")]
    pub cache_type_k: KvCacheType,

    /// Element type of the V cache, as --cache-type-k; a quantised type
    /// turns flash attention on (llama.cpp needs it for one).
    #[arg(long, env = "LLM_NODE_CACHE_TYPE_V", default_value = "f16")]
    pub cache_type_v: KvCacheType,

    /// Host-RAM prompt cache per model, in MiB: a slot's KV is saved there
    /// when the slot is reassigned, and a request extending it restores it
    /// instead of prefilling again (multi-turn conversations, shared system
    /// prompts); 0 turns it off.
    #[arg(long, env = "LLM_NODE_CACHE_RAM", default_value_t = 4096)]
    pub cache_ram: u32,

    /// Speculative decoding without a draft model: each step, the tokens
    /// that followed the earlier occurrence of a sequence's longest suffix
    /// (at least N tokens) are decoded with it as a draft and kept as far as they match
    /// what it samples (same output, more tokens per step on answers that
    /// repeat their input); 0 (the default) turns it off.
    #[arg(long, env = "LLM_NODE_SPEC_NGRAM", default_value_t = 0)]
    pub spec_ngram: u32,

    /// Most draft tokens per sequence and step (with --spec-ngram); drafts
    /// start at 8, double while taken whole and halve when rejected.
    #[arg(long, env = "LLM_NODE_SPEC_DRAFT", default_value_t = 32)]
    pub spec_draft: u32,

    /// With every slot busy, start the oldest queued request at once in a
    /// borrowed slot (its remaining prompt, at most one --prefill-chunk, and its first
    /// token, between two steps of the slot's own sequence), then park its
    /// KV in the host-RAM prompt cache (at most half of --cache-ram) until
    /// a slot is free: time to first token no longer waits for a slot; the
    /// second token does. `false` turns it off.
    #[arg(long, env = "LLM_NODE_PREFILL_AHEAD", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefill_ahead: bool,

    /// Do not create embedding contexts (`/v1/embeddings` then answers 400).
    #[arg(long, env = "LLM_NODE_NO_EMBEDDINGS")]
    pub no_embeddings: bool,

    /// Most tokens one request may generate (a larger `max_tokens` is a 400;
    /// requests without one get at most this); 0 = no node-wide limit (a
    /// request without `max_tokens` still gets its model's default, 2048
    /// unless the models configuration file says otherwise).
    #[arg(long, env = "LLM_NODE_MAX_TOKENS_LIMIT", default_value_t = 0)]
    pub max_tokens_limit: u32,

    /// Longest a request may wait for its first token (model load, a free
    /// slot, prompt processing) before it is answered 503; 0 = no limit.
    #[arg(long, env = "LLM_NODE_QUEUE_TIMEOUT_SECS", default_value_t = 600)]
    pub queue_timeout_secs: u64,

    /// Longest pause allowed while a request body arrives (then 408); 0 = none.
    #[arg(long, env = "LLM_NODE_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Most open client connections per HTTP thread (actix's limit).
    #[arg(long, env = "LLM_NODE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Longest a whole non-streaming request may take (it is then cancelled
    /// and answered 503); 0 = no limit.
    #[arg(long, env = "LLM_NODE_REQUEST_TIMEOUT_SECS", default_value_t = 0)]
    pub request_timeout_secs: u64,

    /// Events (about one per token) a request may leave unread, e.g. by a
    /// client reading its stream slowly, before it is cancelled and ends with
    /// a `client_too_slow` error.
    #[arg(long, env = "LLM_NODE_STREAM_BUFFER", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub stream_buffer: u32,

    /// Let clients send `ignore_eos` (generate past the end of the answer, for
    /// benchmarks); refused with a 400 otherwise.
    #[arg(long, env = "LLM_NODE_ALLOW_IGNORE_EOS")]
    pub allow_ignore_eos: bool,

    /// Never resolve a host name other than `localhost`: registry, Hub, router
    /// and download hosts must be loopback (air-gapped nodes; the test suite
    /// runs every node this way). Refusals are logged as errors.
    #[arg(long, env = "LLM_NODE_LOOPBACK_ONLY")]
    pub loopback_only: bool,

    /// A Jinja chat template file that replaces model NAME's own (repeatable;
    /// the environment variable takes `NAME=FILE;NAME=FILE`).
    #[arg(
        long = "chat-template",
        env = "LLM_NODE_CHAT_TEMPLATES",
        value_name = "NAME=FILE",
        value_delimiter = ';',
        value_parser = parse_template_arg
    )]
    pub chat_templates: Vec<(String, PathBuf)>,

    /// Path of the `llm-node-worker` binary (default: next to this executable).
    #[arg(long, env = "LLM_NODE_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,

    /// Seconds a worker may take from spawn to `Ready` (model load included).
    #[arg(long, env = "LLM_NODE_READY_TIMEOUT_SECS", default_value_t = 300)]
    pub ready_timeout_secs: u64,

    /// Seconds to wait for in-flight requests and for each worker to exit on shutdown
    /// before escalating to SIGTERM, then SIGKILL.
    #[arg(long, env = "LLM_NODE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Log output format.
    #[arg(long, env = "LLM_NODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Model lifecycle: restarts, liveness, loading, eviction, queues, GPUs, admin key.
    #[command(flatten)]
    pub supervision: crate::models::supervision::SupervisionArgs,

    /// Router membership (`--router-url` and friends; see docs/router.md).
    #[command(flatten)]
    pub router: crate::router::RouterArgs,

    /// Cloud models by prefix (`openai:`, `anthropic:`, `google:`; see docs/cloud.md).
    #[command(flatten)]
    pub cloud: crate::cloud::CloudArgs,

    /// Access control: API keys, `/pull` sources, CORS (see docs/operations.md, "Security model").
    #[command(flatten)]
    pub access: crate::api::access::AccessArgs,

    /// Log files and rotation (see docs/operations.md, "Tracing and logs").
    #[command(flatten)]
    pub logs: crate::logging::LogArgs,

    /// Model store (`--store-dir`, `--ollama-models`, registry, Hugging Face; see docs/models.md).
    #[command(flatten)]
    pub store: crate::store::StoreArgs,

    /// Admin commands against a running node (without one, `llm-node` serves).
    #[command(subcommand)]
    pub command: Option<crate::cli::AdminCommand>,
}

pub use crate::logging::LogFormat;

/// A configuration that cannot work; reported once at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    ModelsFile(#[from] file::FileError),
    #[error(transparent)]
    Supervision(#[from] crate::models::supervision::SupervisionError),
    #[error("GPU configuration: {0}")]
    Gpu(String),
    #[error("model name {0:?} is used twice (names are case-insensitive)")]
    DuplicateName(String),
    #[error("invalid model name {0:?}: it must be non-empty and contain no whitespace")]
    InvalidName(String),
    #[error("model {name}: file {path:?} does not exist")]
    MissingFile { name: String, path: PathBuf },
    #[error("cannot read models dir {path:?}: {source}")]
    ModelsDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--parallel must be at least 1")]
    Parallel,
    #[error("--ctx-size must be at least {MIN_CTX_SIZE}")]
    CtxSize,
    #[error("--ctx-size must be at most {MAX_CTX_SIZE}, --parallel at most {MAX_PARALLEL}, and their product must fit in 32 bits")]
    TooLarge,
    #[error("--batch-size must be at least 1")]
    BatchSize,
    #[error("worker binary {0:?} not found (set --worker-bin or LLM_NODE_WORKER_BIN)")]
    WorkerBin(PathBuf),
    #[error("cloud HTTP client: {0}")]
    Cloud(String),
    #[error("access control: {0}")]
    Access(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("chat template for {name}: cannot read {path:?}: {source}")]
    ChatTemplate {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parses `NAME=FILE` for `--chat-template`.
fn parse_template_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.trim().is_empty() && !path.is_empty() => {
            Ok((name.trim().to_lowercase(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=FILE, got {s:?}")),
    }
}

/// Parses `NAME=PATH` for `--model`.
fn parse_model_arg(s: &str) -> Result<ModelSpec, String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got {s:?}"))?;
    let (name, path) = (name.trim(), path.trim());
    if path.is_empty() {
        return Err(format!("empty path in {s:?}"));
    }
    Ok(ModelSpec {
        name: name.to_string(),
        path: PathBuf::from(path),
    })
}

impl Args {
    /// The certificate and key to serve HTTPS with, when both are given
    /// (clap makes each require the other).
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// The HTTP threads to run: `--http-threads`, or one per core up to 8.
    pub fn http_thread_count(&self) -> usize {
        match self.http_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            n => usize::from(n),
        }
    }

    /// Checks the cross-field rules and returns the models to serve: the `--model`
    /// ones first, then those found in `--models-dir` (sorted by name).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first rule broken.
    pub fn validate(&self) -> Result<Vec<ModelSpec>, ConfigError> {
        self.validate_with_default(bundled_model(&cache_dir()))
    }

    /// [`Args::validate`] with `default` served when no model is configured.
    fn validate_with_default(
        &self,
        default: Option<ModelSpec>,
    ) -> Result<Vec<ModelSpec>, ConfigError> {
        if self.parallel < 1 {
            return Err(ConfigError::Parallel);
        }
        if self.ctx_size < MIN_CTX_SIZE {
            return Err(ConfigError::CtxSize);
        }
        if self.ctx_size > MAX_CTX_SIZE
            || self.parallel > MAX_PARALLEL
            || self.ctx_size.checked_mul(self.parallel).is_none()
        {
            return Err(ConfigError::TooLarge);
        }
        if self.batch_size < 1 {
            return Err(ConfigError::BatchSize);
        }
        let mut specs = self.models.clone();
        if let Some(dir) = &self.models_dir {
            specs.extend(discover_models(dir)?);
        }
        if self.models.is_empty() && self.models_dir.is_none() && self.models_config.is_none() {
            specs.extend(default);
        }
        // A node may start empty: its models arrive through pulls (or a reload).
        check_specs(&specs)?;
        self.chat_templates()?;
        Ok(specs)
    }

    /// The worker binary: `--worker-bin`, else `llm-node-worker` next to the current
    /// executable (or one directory up, where cargo puts binaries for test executables
    /// living in `target/<profile>/deps`).
    ///
    /// # Errors
    /// [`ConfigError::WorkerBin`] when no such file exists.
    pub fn worker_bin(&self) -> Result<PathBuf, ConfigError> {
        if let Some(bin) = &self.worker_bin {
            return match bin.is_file() {
                true => Ok(bin.clone()),
                false => Err(ConfigError::WorkerBin(bin.clone())),
            };
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let dir = exe.parent().unwrap_or(Path::new("."));
        let candidates = [
            Some(dir.join(WORKER_BIN_NAME)),
            dir.parent().map(|up| up.join(WORKER_BIN_NAME)),
        ];
        candidates
            .iter()
            .flatten()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| ConfigError::WorkerBin(dir.join(WORKER_BIN_NAME)))
    }

    /// The configured models with their own settings: [`Args::validate`]'s
    /// (with the default profile: the flags alone), then those of
    /// `--models-config` (a `store` source found in `store`). Empty is fine:
    /// the node then serves what is stored or pulled later.
    ///
    /// # Errors
    /// As [`Args::validate`]; [`ConfigError::ModelsFile`] for a bad file, an
    /// unknown store name, or a name used twice.
    pub fn configured_models(
        &self,
        store: Option<&store::Store>,
    ) -> Result<Vec<(ModelSpec, ModelProfile)>, ConfigError> {
        let mut models: Vec<(ModelSpec, ModelProfile)> = self
            .validate()?
            .into_iter()
            .map(|s| (s, ModelProfile::default()))
            .collect();
        if let Some(path) = &self.models_config {
            for m in file::read(path)?.models {
                let (spec, stored) = resolve_source(path, &m, store)?;
                if let Some((taken, _)) = models.iter().find(|(s, _)| s.key() == spec.key()) {
                    return Err(ConfigError::ModelsFile(file::FileError {
                        path: path.clone(),
                        line: m.line,
                        field: format!("models.{}", m.name),
                        message: format!(
                            "model {:?} is also given by --model or --models-dir",
                            taken.name
                        ),
                    }));
                }
                models.push((spec, stored.unwrap_or(m.profile)));
            }
        }
        Ok(models)
    }

    /// Where the router's pulls put models: `--models-dir`, else `~/.cache/llm-node/models`.
    pub fn pull_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(cache_dir)
    }

    /// The router membership's settings; `store` runs its pulls.
    pub fn member_settings(
        &self,
        store: std::sync::Arc<store::Service>,
    ) -> crate::router::MemberSettings {
        crate::router::MemberSettings {
            router: self.router.clone(),
            store,
            bind_ip: self.host.parse().ok(),
        }
    }

    /// The models subsystem's settings: worker binary `bin`, the worker flags,
    /// timeouts and the HTTP threads' `lanes`.
    pub fn model_settings(
        &self,
        bin: PathBuf,
        lanes: Option<std::sync::Arc<crate::worker::Lanes>>,
    ) -> ModelSettings {
        ModelSettings {
            bin,
            worker: self.worker_config(&ModelSpec {
                name: String::new(),
                path: PathBuf::new(),
            }),
            ready_timeout: self.ready_timeout(),
            shutdown_timeout: self.shutdown_timeout(),
            lanes,
            stream_buffer: self.stream_buffer as usize,
            chat_templates: self.chat_templates().unwrap_or_default(),
        }
    }

    /// The operator's chat templates (`--chat-template`), read, by model key.
    ///
    /// # Errors
    /// [`ConfigError::ChatTemplate`] when a file cannot be read.
    pub fn chat_templates(&self) -> Result<std::collections::HashMap<String, String>, ConfigError> {
        self.chat_templates
            .iter()
            .map(|(name, path)| {
                std::fs::read_to_string(path)
                    .map(|t| (name.clone(), t))
                    .map_err(|source| ConfigError::ChatTemplate {
                        name: name.clone(),
                        path: path.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// The typed configuration sent to the worker serving `spec`.
    pub fn worker_config(&self, spec: &ModelSpec) -> WorkerConfig {
        WorkerConfig {
            model_name: spec.name.clone(),
            model_path: spec.path.to_string_lossy().into_owned(),
            ctx_per_slot: self.ctx_size,
            parallel: self.parallel,
            n_gpu_layers: self.n_gpu_layers,
            main_gpu: self.main_gpu,
            split_mode: self.split_mode,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            threads: self.threads,
            batch_size: self.batch_size,
            prefill_chunk: self.prefill_chunk,
            embeddings: !self.no_embeddings,
            cache_ram_mib: self.cache_ram,
            spec_ngram: self.spec_ngram,
            spec_draft: self.spec_draft,
            prefill_ahead: self.prefill_ahead,
            draft_model_path: None,
            chat_template: None,
        }
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// The bundled model (fetched by `scripts/setup.sh`) in `models_dir`, served as
/// [`BUNDLED_MODEL_NAME`] when no model is configured; `None` when absent.
pub fn bundled_model(models_dir: &Path) -> Option<ModelSpec> {
    let path = models_dir.join(BUNDLED_MODEL_FILE);
    path.is_file().then(|| ModelSpec {
        name: BUNDLED_MODEL_NAME.to_string(),
        path,
    })
}

/// The models in `dir` ([`store::discover::models_in`]).
///
/// # Errors
/// [`ConfigError::ModelsDir`] when `dir` cannot be listed.
pub fn discover_models(dir: &Path) -> Result<Vec<ModelSpec>, ConfigError> {
    store::discover::models_in(dir).map_err(|source| ConfigError::ModelsDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// The spec of file model `m` (of the file at `path`): its GGUF file, or the
/// stored model its `store` names (then also its profile, with the store's
/// chat template unless the file sets one).
fn resolve_source(
    path: &Path,
    m: &file::FileModel,
    store: Option<&store::Store>,
) -> Result<(ModelSpec, Option<ModelProfile>), ConfigError> {
    let gguf = match &m.source {
        file::Source::Path(p) => p.clone(),
        file::Source::Store(name) => {
            let err = |message: String| file::FileError {
                path: path.to_path_buf(),
                line: m.line,
                field: format!("models.{}.store", m.name),
                message,
            };
            let wanted = store::ModelRef::parse(name).map_err(|e| err(e.to_string()))?;
            let found = store
                .ok_or_else(|| err("the model store cannot be opened".into()))?
                .find(&wanted)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err(format!("no stored model {name:?} (pull it first)")))?;
            // The file (its `[defaults]` included) wins over the manifest's params.
            let (manifest, _) = crate::models::manifest_params::profile_of(found.params.as_ref());
            let mut profile = m.profile.clone().merge(&manifest);
            if profile.chat_template.is_none() {
                profile.chat_template = store::jinja_template(found.template.as_deref());
            }
            let spec = ModelSpec {
                name: m.name.clone(),
                path: found.gguf,
            };
            return Ok((spec, Some(profile)));
        }
    };
    let spec = ModelSpec {
        name: m.name.clone(),
        path: gguf,
    };
    Ok((spec, None))
}

/// Valid unique names, existing files.
fn check_specs(specs: &[ModelSpec]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for spec in specs {
        if spec.name.is_empty()
            || spec
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::InvalidName(spec.name.clone()));
        }
        if !seen.insert(spec.key()) {
            return Err(ConfigError::DuplicateName(spec.name.clone()));
        }
        if !spec.path.is_file() {
            return Err(ConfigError::MissingFile {
                name: spec.name.clone(),
                path: spec.path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
impl Args {
    /// The defaults, as if started with no flags.
    pub(crate) fn default_for_tests() -> Self {
        Args::try_parse_from(["llm-node"]).expect("defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("llm-node").chain(args.iter().copied()))
            .expect("parses")
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"GGUF").unwrap();
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let args = parse(&[]);
        assert_eq!(args.host, "0.0.0.0");
        assert_eq!(args.port, 11435);
        assert_eq!(args.ctx_size, 4096);
        assert_eq!(args.parallel, 4);
        assert_eq!(args.threads, 0);
        assert_eq!(args.http_threads, 0);
        assert!((1..=8).contains(&args.http_thread_count()));
        assert_eq!(parse(&["--http-threads", "3"]).http_thread_count(), 3);
        assert_eq!(args.batch_size, 512);
        assert_eq!(args.prefill_chunk, 0);
        assert_eq!(
            (args.cache_ram, args.spec_ngram, args.spec_draft),
            (4096, 0, 32)
        );
        assert!(args.prefill_ahead);
        assert!(!parse(&["--prefill-ahead", "false"]).prefill_ahead);
        assert_eq!(args.n_gpu_layers, 999);
        assert_eq!(args.ready_timeout_secs, 300);
        assert!(!args.no_embeddings);
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn per_model_settings_override_the_node_flags_in_the_worker_config() {
        let args = parse(&[
            "--cache-ram",
            "512",
            "--spec-ngram",
            "2",
            "--spec-draft",
            "4",
            "--prefill-ahead",
            "false",
            "--cache-type-k",
            "q8_0",
            "--split-mode",
            "row",
        ]);
        let settings = args.model_settings(PathBuf::from("w"), None);
        let spec = ModelSpec {
            name: "m".into(),
            path: PathBuf::from("/m.gguf"),
        };
        let node = settings.worker_config_for(&spec, &Default::default());
        assert_eq!(
            (node.cache_ram_mib, node.spec_ngram, node.spec_draft),
            (512, 2, 4)
        );
        assert!(!node.prefill_ahead);
        assert_eq!(
            (node.cache_type_k, node.cache_type_v, node.split_mode),
            (KvCacheType::Q8_0, KvCacheType::F16, SplitMode::Row)
        );
        let profile = crate::models::ModelProfile {
            cache_ram: Some(0),
            spec_ngram: Some(4),
            spec_draft: Some(12),
            prefill_ahead: Some(true),
            cache_type_k: Some(KvCacheType::Q4_0),
            cache_type_v: Some(KvCacheType::Q4_0),
            split_mode: Some(SplitMode::None),
            ..Default::default()
        };
        let own = settings.worker_config_for(&spec, &profile);
        assert_eq!(
            (own.cache_ram_mib, own.spec_ngram, own.spec_draft),
            (0, 4, 12)
        );
        assert!(own.prefill_ahead);
        assert_eq!(
            (own.cache_type_k, own.cache_type_v, own.split_mode),
            (KvCacheType::Q4_0, KvCacheType::Q4_0, SplitMode::None)
        );
        assert!(Args::try_parse_from(["llm-node", "--cache-type-v", "q3_k"]).is_err());
        assert!(Args::try_parse_from(["llm-node", "--split-mode", "tensor"]).is_err());
    }

    #[test]
    fn model_flag_is_repeatable_and_comma_separated() {
        let args = parse(&["--model", "a=/x/a.gguf,b=/y/b.gguf", "--model", "C=/z.gguf"]);
        let names: Vec<_> = args.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "C"]);
        assert_eq!(args.models[2].path, PathBuf::from("/z.gguf"));
    }

    #[test]
    fn model_flag_without_equals_is_rejected() {
        assert!(Args::try_parse_from(["llm-node", "--model", "/x/a.gguf"]).is_err());
        assert!(Args::try_parse_from(["llm-node", "--model", "a="]).is_err());
    }

    #[test]
    fn models_dir_finds_files_and_model_subdirs() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("SmolLM2-135M.gguf"));
        touch(&dir.path().join("qwen/model.gguf"));
        touch(&dir.path().join("notes.txt"));
        touch(&dir.path().join("empty/other.gguf"));
        let specs = discover_models(dir.path()).unwrap();
        let names: Vec<_> = specs.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["qwen", "smollm2-135m"]);
        assert_eq!(specs[0].path, dir.path().join("qwen/model.gguf"));
    }

    #[test]
    fn validate_combines_flags_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("b.gguf"));
        let a = dir.path().join("elsewhere/a.gguf");
        touch(&a);
        let args = parse(&[
            "--model",
            &format!("a={}", a.display()),
            "--models-dir",
            dir.path().to_str().unwrap(),
        ]);
        let names: Vec<_> = args
            .validate()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn validate_rejects_broken_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        touch(&file);
        let m = format!("m={}", file.display());
        let upper = format!("M={}", file.display());
        type Check = fn(&ConfigError) -> bool;
        let cases: Vec<(Vec<&str>, Check)> = vec![
            (vec!["--model", &m, "--model", &upper], |e| {
                matches!(e, ConfigError::DuplicateName(_))
            }),
            (vec!["--model", "x=/does/not/exist.gguf"], |e| {
                matches!(e, ConfigError::MissingFile { .. })
            }),
            (vec!["--model", &m, "--parallel", "0"], |e| {
                matches!(e, ConfigError::Parallel)
            }),
            (vec!["--model", &m, "--ctx-size", "63"], |e| {
                matches!(e, ConfigError::CtxSize)
            }),
            (vec!["--models-dir", "/does/not/exist"], |e| {
                matches!(e, ConfigError::ModelsDir { .. })
            }),
        ];
        for (argv, expected) in cases {
            let err = parse(&argv).validate_with_default(None).unwrap_err();
            assert!(expected(&err), "{argv:?} gave {err}");
        }
        let spaced = format!("a b={}", file.display());
        let err = parse(&["--model", &spaced]).validate().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidName(_)));
    }

    #[test]
    fn bundled_model_is_the_default_only_without_models() {
        let cache = tempfile::tempdir().unwrap();
        assert_eq!(bundled_model(cache.path()), None);
        touch(&cache.path().join(BUNDLED_MODEL_FILE));
        let bundled = bundled_model(cache.path()).unwrap();
        assert_eq!(bundled.name, "smollm2-135m-instruct");
        let specs = parse(&[])
            .validate_with_default(Some(bundled.clone()))
            .unwrap();
        assert_eq!(specs, std::slice::from_ref(&bundled));
        let other = cache.path().join("x.gguf");
        touch(&other);
        let flag = format!("x={}", other.display());
        let specs = parse(&["--model", &flag])
            .validate_with_default(Some(bundled))
            .unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "x");
    }

    #[test]
    fn worker_config_carries_the_flags() {
        let args = parse(&["--ctx-size", "2048", "--parallel", "2", "--no-embeddings"]);
        let spec = ModelSpec {
            name: "m".into(),
            path: "/m.gguf".into(),
        };
        let config = args.worker_config(&spec);
        assert_eq!(config.ctx_per_slot, 2048);
        assert_eq!(config.parallel, 2);
        assert!(!config.embeddings);
        assert_eq!(config.model_path, "/m.gguf");
    }

    #[test]
    fn explicit_missing_worker_bin_is_an_error() {
        let args = parse(&["--worker-bin", "/no/such/llm-node-worker"]);
        assert!(matches!(args.worker_bin(), Err(ConfigError::WorkerBin(_))));
    }
}
