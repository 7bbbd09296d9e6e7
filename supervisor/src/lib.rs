//! `llm-node`: an OpenAI-compatible HTTP front end that supervises one
//! `llm-node-worker` process per model. This crate never links llama.cpp: a
//! native crash can only take down one worker.
//!
//! # Layout
//! Arrows point one way: a module uses only modules of its own layer or below,
//! never a face, and no two modules use each other (`tests/layers.rs` checks it).
//!
//! Faces (top):
//! - [`Node`], [`run`], [`init_logging`] (here): a whole node, models plus HTTP
//!   server, started on port 0 and stopped, for `main` and for tests.
//! - [`config`]: every flag and environment variable ([`Args`]), startup
//!   validation, the models configuration file ([`config::file`]), and the
//!   small settings struct each subsystem takes.
//! - [`api`]: the whole route table and every handler (OpenAI, admin, the
//!   Ollama store routes and `/api/chat` / `/api/generate`, the router's `/pull` and
//!   `/api/logs`), [`api::AppState`], access control and CORS, request ids and the access
//!   log, and the one error renderer.
//! - [`cli`]: every CLI verb (`ps`, `load`, `pull`, `list`, `rm`, `run`, `show`, `stop`,
//!   `log-level`, …) and its HTTP helper.
//! - [`logging`]: the global subscriber (stderr, rotated files, the `/api/logs`
//!   ring) and the level, changeable at run time.
//!
//! Subsystems:
//! - [`models`]: the only holder of model actors: [`models::Models`] (loading,
//!   eviction, placement, admission, TTL), one actor per model, the
//!   [`models::Lease`] a request holds, typed state, spec, supervision settings.
//! - [`store`]: the only way models reach disk: the Ollama layout and the
//!   router's named directories side by side, registry, Hugging Face and file
//!   pulls, the one downloader, the one pull runner ([`store::Service`], for
//!   `/api/pull`, the router's `/pull` and model sync) and hot add, conversion,
//!   `--models-dir` discovery.
//! - [`router`]: llm-router membership: register, heartbeat, session, model sync,
//!   request stats; a router pull is a store pull whose progress it reports.
//! - [`cloud`]: cloud models by prefix (`openai:`, `anthropic:`, `google:`):
//!   keys, the HTTP calls, SSE, and the translation contract of each provider.
//! - [`worker`]: spawning and stopping worker processes ([`worker::process`]) and
//!   multiplexing requests over their IPC channels ([`worker::client`]).
//! - [`tls`]: HTTPS (`--tls-cert`, `--tls-key`) with certificates re-read when
//!   renewed.
//!
//! Leaves (bottom):
//! - [`policy`]: pure decisions (admission, backoff, eviction, liveness, placement).
//! - [`gpu`]: GPU detection (NVML, AMD sysfs, Apple, simulated) and pinning env.
//! - [`metrics`]: the Prometheus registry.
//! - [`logbuf`]: the ring buffer of recent log lines behind `/api/logs`.
//! - [`net`]: outgoing HTTP clients and the `--loopback-only` guard.
//! - [`paths`]: default locations on disk (`cache_dir`).
//! - [`request_id`]: the current HTTP request's id, read by `WorkerClient`.
//! - [`otel`]: optional OTLP trace export (`--otlp-endpoint`): the export layer,
//!   the request span's parent and attributes, the flush at shutdown.
//! - [`build_info`]: version, git commit, native/portable, backends (`--version`, `/health`).

pub mod api;
pub mod build_info;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod gpu;
pub mod logbuf;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod net;
pub mod otel;
pub mod paths;
pub mod policy;
pub mod request_id;
pub mod router;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod worker;

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};
use tokio::signal::unix::{signal, SignalKind};

pub use config::{Args, LogFormat};

use crate::api::{configure, AppState};
use crate::config::ConfigError;
use crate::models::{ModelState, Models};

/// Why a node could not start or become ready.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("model {model} did not become ready: {state:?}")]
    ModelNotReady { model: String, state: ModelState },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Router(#[from] router::RouterError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// A running node: its models' workers and its HTTP server.
pub struct Node {
    addr: SocketAddr,
    server: ServerHandle,
    models: Models,
    state: actix_web::web::Data<AppState>,
    member: router::Member,
}

impl Node {
    /// Validates `args`, starts one model actor per model (each spawns its worker
    /// at once) and binds the HTTP server. Returns as soon as the server listens;
    /// models become ready in the background (see [`Node::wait_ready`]) and
    /// answer 503 until then. Use port 0 to get a free port ([`Node::addr`]).
    ///
    /// Must run inside an actix `System` (`#[actix_web::main]`,
    /// `#[actix_rt::test]`, `actix_rt::System::new().block_on(..)`): the model
    /// actors live on the calling arbiter, whose thread must outlive the workers.
    ///
    /// # Errors
    /// [`NodeError::Config`] for an invalid configuration or a missing worker
    /// binary, [`NodeError::Bind`] when the address cannot be bound.
    pub async fn start(args: Args) -> Result<Node, NodeError> {
        net::set_loopback_only(args.loopback_only);
        let (specs, store) = open_store(&args)?;
        let store_app = actix_web::web::Data::from(store.clone());
        let bin = args.worker_bin()?;
        let supervision =
            std::sync::Arc::new(args.supervision.resolve().map_err(ConfigError::from)?);
        let gpus = detect_gpus(&args)?;
        models::registry::set_shape_reader(store::gguf::shape_of);
        let worker_backends = worker_backends(&bin, gpus.as_ref());
        let metrics = metrics::Metrics::new();
        let member_settings = args.member_settings(store.clone());
        let member = router::Member::new(member_settings, gpus.clone(), metrics.clone())?;
        let member_app = member.clone();
        // Bind before spawning workers, so a taken port costs no model load.
        let state_slot =
            std::sync::Arc::new(std::sync::OnceLock::<actix_web::web::Data<AppState>>::new());
        let slot = state_slot.clone();
        let lanes = std::sync::Arc::new(worker::Lanes::new(args.http_thread_count()));
        let lanes_app = lanes.clone();
        let body_timeout =
            api::body_timeout::BodyTimeout(std::time::Duration::from_secs(args.body_timeout_secs));
        let access = actix_web::web::Data::new(
            api::access::Access::new(
                &args.access,
                supervision.admin_key.clone(),
                args.router.router_url.as_deref(),
            )
            .map_err(|e| ConfigError::Access(e.to_string()))?,
        );
        let cors_origins = api::cors::origins(&args.access.cors_origins)
            .map_err(|e| ConfigError::Access(e.to_string()))?;
        let server = HttpServer::new(move || {
            // Runs once on each HTTP thread as it starts.
            lanes_app.register_current_thread();
            let state = slot
                .get()
                .expect("state is set before the server runs")
                .clone();
            App::new()
                .app_data(body_timeout)
                .app_data(state)
                .app_data(access.clone())
                .app_data(actix_web::web::Data::new(member_app.clone()))
                .app_data(store_app.clone())
                .wrap(member_app.stats().middleware())
                .wrap(actix_web::middleware::from_fn(
                    api::body_timeout::middleware,
                ))
                // Inside `shape`, so refusals on /api/* come out in Ollama's shape;
                // inside CORS, so preflights are answered without credentials.
                .wrap(actix_web::middleware::from_fn(api::access::middleware))
                // Inside `shape`: it counts the handler's own error and the
                // access refusals.
                .wrap(actix_web::middleware::from_fn(api::rejections::middleware))
                .wrap(actix_web::middleware::from_fn(api::shape::middleware))
                .wrap(api::cors::middleware(&cors_origins))
                .wrap(actix_web::middleware::from_fn(api::request_id::middleware))
                .configure(configure)
        })
        .workers(args.http_thread_count())
        .max_connections(args.max_connections.max(1))
        .on_connect(api::disconnect::on_connect)
        .disable_signals()
        .shutdown_timeout(args.shutdown_timeout_secs);
        let tls = args
            .tls()
            .map(|(cert, key)| tls::server_config(cert, key))
            .transpose()
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(config) => server.bind_rustls_0_23((args.host.as_str(), args.port), config),
            None => server.bind((args.host.as_str(), args.port)),
        }
        .map_err(|source| bind_error(&args, source))?;
        let addr = *server
            .addrs()
            .first()
            .ok_or_else(|| bind_error(&args, std::io::Error::other("no address bound")))?;
        let models = Models::start(
            args.model_settings(bin, Some(lanes)),
            specs,
            supervision,
            metrics,
            gpus,
        );
        let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
        let limits = api::state::RequestLimits {
            max_tokens: args.max_tokens_limit,
            allow_ignore_eos: args.allow_ignore_eos,
            queue_timeout: secs(args.queue_timeout_secs),
            request_timeout: secs(args.request_timeout_secs),
        };
        models.set_config_source(config_source(&args)).await;
        let cloud = cloud::Cloud::new(args.cloud.clone(), models.metrics().clone())
            .map_err(|e| ConfigError::Cloud(e.to_string()))?;
        let state = AppState::with_limits(models.clone(), limits)
            .with_cloud(cloud)
            .with_worker_backends(worker_backends)
            .into_data();
        let _ = state_slot.set(state.clone());
        let handle = spawn_server(server.run());
        tracing::info!("listening on {scheme}://{addr}");
        warn_if_open(&args, &addr);
        member.start(std::sync::Arc::new(models.clone()), addr);
        // Stored models are served by name:tag; pulls hot-add on this arbiter.
        store.start(models.clone()).await;
        Ok(Node {
            addr,
            server: handle,
            models,
            state,
            member,
        })
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Waits until every model has left `Starting`.
    ///
    /// # Errors
    /// [`NodeError::ModelNotReady`] naming the first model that is not `Ready`.
    pub async fn wait_ready(&self) -> Result<(), NodeError> {
        for (model, state) in self.models.wait_started().await {
            if state != ModelState::Ready {
                return Err(NodeError::ModelNotReady { model, state });
            }
        }
        Ok(())
    }

    /// Graceful shutdown: stop admitting (readiness and new requests answer
    /// 503), let in-flight requests finish up to the drain timeout, stop the
    /// HTTP server, then stop every worker (Shutdown, TERM, KILL of its group).
    pub async fn stop(self) {
        self.member.stop().await;
        self.state.begin_drain();
        let deadline = tokio::time::Instant::now() + self.models.supervision().drain_timeout;
        loop {
            let idle = self.models.idle_signal();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let in_flight = self.models.total_in_flight().await;
            if in_flight == 0 {
                break;
            }
            tracing::info!(in_flight, "draining before shutdown");
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(in_flight, "drain timeout; stopping with requests in flight");
                break;
            }
        }
        tracing::info!("stopping HTTP server");
        self.server.stop(true).await;
        tracing::info!("stopping workers");
        self.models.stop_all().await;
    }
}

/// Says at start what is open to whom (docs/operations.md, "Security model").
fn warn_if_open(args: &Args, addr: &SocketAddr) {
    let remote = !addr.ip().is_loopback();
    if args
        .supervision
        .admin_key
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        tracing::warn!(
            "no --admin-key: /admin, /api/pull, /api/delete and the other store-changing \
             routes answer loopback clients only (403 to others)"
        );
    }
    let keyed = !args.access.api_keys.is_empty() || args.access.api_key_file.is_some();
    if !keyed && remote {
        tracing::warn!(
            "no --api-key: inference routes (/v1/*, /api/*) are open to every client \
             that reaches {addr}"
        );
    }
    if keyed && args.router.enabled() && !args.access.trust_router {
        tracing::warn!(
            "--api-key with a router: the router sends no key, so its requests get 401 \
             unless --trust-router is set"
        );
    }
}

/// The configured models (flags and `--models-config`; none is fine) and the
/// store service (the one pull runner).
fn open_store(args: &Args) -> Result<(Configured, std::sync::Arc<store::Service>), NodeError> {
    // One store for the whole node: startup, the Ollama routes and router pulls.
    let stored = store::Store::new(&args.store);
    let specs = args.configured_models(stored.as_ref().ok())?;
    let service = store::Service::new(stored?, args.pull_dir(), args.store.max_queued_pulls);
    Ok((specs, std::sync::Arc::new(service)))
}

fn bind_error(args: &Args, source: std::io::Error) -> NodeError {
    NodeError::Bind {
        addr: format!("{}:{}", args.host, args.port),
        source,
    }
}

type Configured = Vec<(models::ModelSpec, models::ModelProfile)>;

/// How [`models::Models::reload`] reads the configuration again: the same
/// flags, the models configuration file as it is now.
fn config_source(args: &Args) -> models::ConfigSource {
    let args = args.clone();
    std::sync::Arc::new(move || {
        let stored = store::Store::new(&args.store);
        args.configured_models(stored.as_ref().ok())
            .map_err(|e| e.to_string())
    })
}

/// Runs `server` on the current arbiter; its handle.
fn spawn_server(server: actix_web::dev::Server) -> ServerHandle {
    let handle = server.handle();
    actix_rt::spawn(server);
    handle
}

/// The node's GPUs (`--simulated-gpus` included).
fn detect_gpus(args: &Args) -> Result<std::sync::Arc<dyn gpu::GpuProbe>, NodeError> {
    let gpus = gpu::detect(args.supervision.simulated_gpus.as_deref()).map_err(ConfigError::Gpu)?;
    let gpus: std::sync::Arc<dyn gpu::GpuProbe> = std::sync::Arc::from(gpus);
    tracing::info!(
        probe = gpus.kind(),
        devices = gpus.devices().len(),
        "GPU detection"
    );
    Ok(gpus)
}

/// The worker binary's backends (`--version`); warns loudly when the node
/// sees GPUs the worker cannot use (a CPU-only build on a GPU machine), or a
/// GPU build sees no GPU (every model falls back to the CPU).
fn worker_backends(bin: &std::path::Path, gpus: &dyn gpu::GpuProbe) -> Option<Vec<String>> {
    let backends = worker::version::backends(bin)
        .map_err(|e| tracing::warn!("cannot tell the worker's backends: {e}"))
        .ok()?;
    tracing::info!(backends = ?backends, "worker backends");
    let devices = gpus.devices();
    if let Some(warning) = gpu::cpu_only_worker(&devices, Some(&backends)) {
        tracing::warn!("CPU-ONLY WORKER ON A GPU NODE: {warning}");
    } else if let Some(warning) = gpu::cpu_fallback(&devices, Some(&backends)) {
        tracing::warn!("GPU WORKER ON A NODE WITHOUT GPU, CPU FALLBACK: {warning}");
    }
    Some(backends)
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down gracefully; SIGHUP
/// reloads the models configuration ([`Models::reload`]). Prints
/// `listening on http://ADDR` on stdout once the server listens.
///
/// # Errors
/// As [`Node::start`]; [`NodeError::Signals`] if signal handlers cannot be installed.
pub async fn run(args: Args) -> Result<(), NodeError> {
    let mut term = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(NodeError::Signals)?;
    let node = Node::start(args).await?;
    println!("listening on http://{}", node.addr());
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reload_on_hangup(node.models()).await,
        }
    };
    tracing::info!("{name} received, shutting down");
    node.stop().await;
    // After the drain: the last requests' spans go out before the process ends.
    otel::shutdown();
    Ok(())
}

/// SIGHUP: reload the configuration; a bad file is logged and changes nothing.
async fn reload_on_hangup(models: &Models) {
    tracing::info!("SIGHUP received, reloading the configuration");
    if let Err(e) = models.reload().await {
        tracing::error!("{e}");
    }
}

/// Installs the global tracing subscriber without log files ([`logging::init`]):
/// `RUST_LOG` filter (default `info`), written to stderr as text or JSON. Does
/// nothing if one is already installed.
pub fn init_logging(format: LogFormat) {
    let _ = logging::init(format, &logging::LogArgs::default());
}
