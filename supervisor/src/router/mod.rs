//! Router membership: how llm-node joins an llm-router cluster.
//!
//! `docs/router.md` is the user's guide; `shared/router-contract.md` the
//! facts this follows. The node is a router member when `--router-url` is
//! set, standalone otherwise; `/pull` and `/api/logs` are served either way
//! (by `api::router`, which calls [`Member::submit`]). Membership only: models
//! reach disk through the store ([`crate::store::Service`]), which runs every
//! pull; a router pull is a store pull whose progress is reported to the router.
//!
//! # Layout
//! - [`config`]: [`RouterArgs`] (flags and `LLM_*` variables) and the JSON config file.
//! - [`client`]: the router's HTTP API, one method per call, with timeouts.
//! - [`register`], [`heartbeat`]: what registration and heartbeats send (pure functions).
//! - [`session`]: the register → heartbeat → re-register loop.
//! - [`pull`]: `/pull` bodies as store pull orders, and their progress reports.
//! - [`sync`]: periodic model sync with the router's `/v1/models`.
//! - [`stats`]: request figures for heartbeats (an actix middleware).
//! - [`models_impl`]: [`NodeModels`] for the node's model registry.
//!
//! # Life of a member
//! [`Member::new`] runs before the HTTP server binds: it checks the settings
//! and the GPU gate (the router refuses GPU-less nodes with 403, so we refuse
//! to start instead). [`Member::start`] runs once the server is serving
//! (the router probes `/v1/models` before it answers the registration) and
//! spawns the session and sync tasks on the caller's arbiter, the one
//! that owns the model actors. [`Member::stop`] ends them and tells the router
//! the node is leaving, before the server drains.

pub mod client;
pub mod config;
pub mod heartbeat;
pub mod models_impl;
pub mod pull;
pub mod register;
pub mod session;
pub mod stats;
pub mod sync;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use config::RouterArgs;
pub use pull::{PullJob, PullRejected, PullRequest};
pub use stats::RequestStats;

use crate::gpu::GpuProbe;
use crate::models::ModelState;
use client::RouterClient;
use session::{Identity, Session};

/// What the router code needs from the node's models.
pub trait NodeModels: Send + Sync + 'static {
    /// Every model the node knows, with its state.
    fn snapshot(&self) -> BoxFuture<'static, Vec<ModelSnapshot>>;
}

/// One model as the router code sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSnapshot {
    /// The id as served (the router gets it lowercased).
    pub name: String,
    /// Its lifecycle state.
    pub state: ModelState,
    /// Whether a request for it can be served now or by loading it on demand;
    /// these are the heartbeat's `loaded_models`.
    pub servable: bool,
    /// Requests in flight on its worker.
    pub in_flight: usize,
}

/// `initializing` and `ready_models` as the router reads them (contract §1.2, §2.1,
/// §3.6): `[ready, total]` (each at most 255) and "initializing" only while no
/// model is ready and one is starting: `true` makes the whole node unroutable,
/// so a node serving one model while loading another is not initializing.
pub fn readiness<'a>(states: impl IntoIterator<Item = &'a ModelState>) -> (bool, [u8; 2]) {
    let (mut ready, mut total, mut starting) = (0usize, 0usize, false);
    for state in states {
        total += 1;
        match state {
            ModelState::Ready => ready += 1,
            ModelState::Starting => starting = true,
            _ => {}
        }
    }
    let cap = |n: usize| n.min(255) as u8;
    (ready == 0 && starting, [cap(ready), cap(total)])
}

/// Why router mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(
        "router mode needs a GPU, and none was found (probe: {probe}): llm-router refuses \
         GPU-less nodes (HTTP 403). To serve without a router, unset LLM_ROUTER_URL / \
         --router-url; for tests and CPU demos, report pretend GPUs with \
         --simulated-gpus NAME:GIB (LLM_NODE_SIMULATED_GPUS)"
    )]
    NoGpu { probe: &'static str },
    #[error("{0}")]
    Url(String),
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
}

/// What router membership needs from the configuration (built by `config`).
#[derive(Clone)]
pub struct MemberSettings {
    /// `--router-url` and the other router flags.
    pub router: RouterArgs,
    /// The store's pull runner, which runs `/pull` and model sync.
    pub store: Arc<crate::store::Service>,
    /// The address the HTTP server binds, when it is one IP (to choose the one to advertise).
    pub bind_ip: Option<IpAddr>,
}

/// The router side of a node; cheap to clone, shared with the HTTP handlers as `web::Data`.
#[derive(Clone)]
pub struct Member {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: standalone.
    router: Option<RouterSetup>,
    stats: RequestStats,
    /// Runs the pulls.
    store: Arc<crate::store::Service>,
    running: Mutex<Option<Running>>,
    metrics: crate::metrics::Metrics,
}

struct RouterSetup {
    client: RouterClient,
    gpu: Arc<dyn GpuProbe>,
    args: RouterArgs,
    machine_name: String,
    bind_ip: Option<IpAddr>,
}

struct Running {
    shutdown: watch::Sender<bool>,
    identity: Arc<Mutex<Option<Identity>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    /// Checks the router settings and the GPU gate against `gpus`, the node's probe
    /// (`--simulated-gpus` included). Standalone (no router URL) always succeeds.
    /// Membership is recorded in `metrics` (`llm_node_router_*`).
    ///
    /// # Errors
    /// [`RouterError::NoGpu`] in router mode without a (simulated) GPU; a bad URL.
    pub fn new(
        settings: MemberSettings,
        gpus: Arc<dyn GpuProbe>,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self, RouterError> {
        let router = match settings.router.enabled() {
            true => Some(Self::setup(&settings, gpus)?),
            false => None,
        };
        metrics.router_configured.set(i64::from(router.is_some()));
        metrics.router_registered.set(0);
        Ok(Self {
            inner: Arc::new(Inner {
                metrics,
                router,
                stats: RequestStats::default(),
                store: settings.store,
                running: Mutex::new(None),
            }),
        })
    }

    fn setup(
        settings: &MemberSettings,
        gpu: Arc<dyn GpuProbe>,
    ) -> Result<RouterSetup, RouterError> {
        let r = &settings.router;
        let url = client::parse_router_url(r.router_url.as_deref().unwrap_or_default())
            .map_err(RouterError::Url)?;
        let devices = gpu.devices();
        if devices.is_empty() {
            return Err(RouterError::NoGpu { probe: gpu.kind() });
        }
        // Router calls are short and carry their own timeouts (see `client`).
        let http = crate::net::client_builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RouterError::Http(e.to_string()))?;
        let machine_name = r
            .machine_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(sysinfo::System::host_name)
            .unwrap_or_else(|| "llm-node".into());
        tracing::info!(router = %url, gpus = devices.len(), probe = gpu.kind(), machine_name,
            "router mode");
        Ok(RouterSetup {
            client: RouterClient::new(url, http, r.router_api_key.clone()),
            gpu,
            args: r.clone(),
            machine_name,
            bind_ip: settings.bind_ip,
        })
    }

    /// The request counters the app's middleware feeds ([`RequestStats::middleware`]).
    pub fn stats(&self) -> &RequestStats {
        &self.inner.stats
    }

    /// Queues a router pull (`POST /pull`, model sync) with the store; it runs in
    /// the background, its progress reported to the router when it has a task id.
    /// Must run on an actix arbiter (the reporter is spawned there).
    ///
    /// # Errors
    /// [`StoreError::Busy`](crate::store::StoreError::Busy) when the pull queue is full.
    pub fn submit(&self, job: PullJob) -> Result<(), crate::store::StoreError> {
        let client = self.inner.router.as_ref().map(|r| &r.client);
        let events = self
            .inner
            .store
            .submit(job.order(client.map(|c| c.base())))?;
        if let (Some(client), Some(task)) = (client, job.task_id) {
            actix_rt::spawn(pull::report(client.clone(), task, events));
        }
        Ok(())
    }

    /// In router mode, starts registering, heartbeating and syncing, as tasks on
    /// the current arbiter. Call once the HTTP server on `listen` is serving.
    /// A second call does nothing.
    pub fn start(&self, models: Arc<dyn NodeModels>, listen: SocketAddr) {
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_some() {
            return;
        }
        let mut tasks = Vec::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let identity = Arc::new(Mutex::new(None));
        if let Some(router) = &self.inner.router {
            let (registrations, registrations_rx) = watch::channel(0u64);
            let session = Session {
                client: router.client.clone(),
                models: models.clone(),
                gpu: router.gpu.clone(),
                stats: self.inner.stats.clone(),
                machine_name: router.machine_name.clone(),
                listen_port: listen.port(),
                node_ip: router.args.node_ip,
                bind_ip: router.bind_ip,
                interval: router.args.heartbeat_interval(),
                identity: identity.clone(),
                registrations,
                metrics: self.inner.metrics.clone(),
            };
            tasks.push(actix_rt::spawn(session.run(shutdown_rx.clone())));
            if let Some(interval) = router.args.model_sync_interval() {
                tasks.push(actix_rt::spawn(sync::run(
                    router.client.clone(),
                    models,
                    self.clone(),
                    interval,
                    registrations_rx,
                    shutdown_rx,
                )));
            }
        }
        *running = Some(Running {
            shutdown,
            identity,
            tasks,
        });
    }

    /// Stops heartbeats and sync, then tells the router the node is leaving
    /// (`POST /api/nodes/{id}/disconnect`, at most a few seconds). Pulls under way
    /// belong to the store; they end with the node, leaving their `-partial` files,
    /// which the next pull resumes.
    pub async fn stop(&self) {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(running) = running else { return };
        let _ = running.shutdown.send(true);
        self.inner.metrics.router_registered.set(0);
        for task in &running.tasks {
            task.abort();
        }
        let identity = running
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(router), Some(identity)) = (&self.inner.router, identity) {
            match router.client.disconnect(&identity.node_id).await {
                Ok(()) => {
                    tracing::info!(node_id = %identity.node_id, "told the router we are leaving")
                }
                Err(e) => tracing::warn!("disconnect from the router failed: {e}"),
            }
        }
    }

    /// The current registration, if any (tests, diagnostics).
    pub fn node_id(&self) -> Option<String> {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        let identity = running.as_ref()?.identity.lock().ok()?.clone()?;
        Some(identity.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_initializing_only_while_nothing_is_ready() {
        use ModelState::{Ready, Starting, Stopped};
        let failed = ModelState::Failed { reason: "x".into() };
        let table: [(Vec<ModelState>, bool, [u8; 2]); 5] = [
            (vec![], false, [0, 0]),
            (vec![Starting], true, [0, 1]),
            (vec![Ready, Starting], false, [1, 2]),
            (vec![Stopped, failed], false, [0, 2]),
            (vec![Ready, Ready], false, [2, 2]),
        ];
        for (states, initializing, ready) in table {
            assert_eq!(readiness(&states), (initializing, ready), "{states:?}");
        }
        let many = vec![Ready; 300];
        assert_eq!(readiness(&many).1, [255, 255]);
    }
}
