//! `llm-node`: an OpenAI-compatible HTTP front end that supervises one
//! `llm-node-worker` process per model. This crate never links llama.cpp: a
//! native crash can only take down one worker.
//!
//! # Layout
//! - [`config`]: flags/environment, startup validation, model discovery.
//! - [`worker`]: spawning and stopping worker processes ([`worker::process`])
//!   and multiplexing requests over their IPC channels ([`worker::client`]).
//! - [`model`]: one actor per model, the single owner of its worker and state.
//! - [`registry`]: model id → actor.
//! - [`api`]: OpenAI request/response types, handlers, SSE, errors.
//! - [`app`]: the actix-web route table and shared state.
//! - [`Node`] (here): a whole node — models plus HTTP server — that can be
//!   started on port 0 and stopped, for `main` and for tests.

pub mod api;
pub mod app;
pub mod config;
pub mod gpu;
pub mod model;
pub mod policy;
pub mod registry;
#[cfg(test)]
mod testing;
pub mod worker;

use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

pub use config::{Args, LogFormat};

use crate::app::{configure, AppState};
use crate::config::ConfigError;
use crate::model::ModelState;
use crate::registry::Models;

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
}

/// A running node: its models' workers and its HTTP server.
pub struct Node {
    addr: SocketAddr,
    server: ServerHandle,
    models: Models,
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
        let specs = args.validate()?;
        let bin = args.worker_bin()?;
        let bind = format!("{}:{}", args.host, args.port);
        let bind_error = |source| NodeError::Bind {
            addr: bind.clone(),
            source,
        };
        // Bind before spawning workers, so a taken port costs no model load.
        let state_slot =
            std::sync::Arc::new(std::sync::OnceLock::<actix_web::web::Data<AppState>>::new());
        let slot = state_slot.clone();
        let server = HttpServer::new(move || {
            let state = slot
                .get()
                .expect("state is set before the server runs")
                .clone();
            App::new().app_data(state).configure(configure)
        })
        .disable_signals()
        .shutdown_timeout(args.shutdown_timeout_secs)
        .bind((args.host.as_str(), args.port))
        .map_err(bind_error)?;
        let addr = *server
            .addrs()
            .first()
            .ok_or_else(|| bind_error(std::io::Error::other("no address bound")))?;
        let models = Models::start(&args, specs, &bin);
        let _ = state_slot.set(AppState::new(models.clone()).into_data());
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!("listening on http://{addr}");
        Ok(Node {
            addr,
            server: handle,
            models,
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

    /// Stops accepting connections, lets in-flight requests finish (up to the
    /// shutdown timeout), then stops every worker (Shutdown, TERM, KILL).
    pub async fn stop(self) {
        tracing::info!("stopping HTTP server");
        self.server.stop(true).await;
        tracing::info!("stopping workers");
        self.models.stop_all().await;
    }
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down gracefully. Prints
/// `listening on http://ADDR` on stdout once the server listens.
///
/// # Errors
/// As [`Node::start`]; [`NodeError::Signals`] if signal handlers cannot be installed.
pub async fn run(args: Args) -> Result<(), NodeError> {
    let mut term = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    let node = Node::start(args).await?;
    println!("listening on http://{}", node.addr());
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received, shutting down");
    node.stop().await;
    Ok(())
}

/// Installs the global tracing subscriber: `RUST_LOG` filter (default `info`),
/// written to stderr as text or JSON. Does nothing if one is already installed.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
