//! One actor per model: the single owner of its worker process and state.
//!
//! [`ModelActor`] starts the worker when the actor starts, learns of the
//! worker's readiness and of its exit through messages to itself, and answers
//! callers who want a [`WorkerClient`] or a status. Callers ask; they never
//! look at the state and act on their own.
//!
//! ```text
//!  Starting ──ready──▶ Ready ──exit──▶ Failed
//!     │                  │
//!     └─error/exit─▶ Failed      any ──Stop──▶ Stopping ──exit──▶ Stopped
//! ```
//!
//! Every state change goes through [`ModelActor::set_state`], the hook for the
//! restart policy (backoff, crash-loop parking) that is still to come.

use std::time::{Duration, Instant};

use actix::prelude::*;
use llm_node_protocol::ModelInfo;
use tokio::sync::oneshot;

use crate::worker::{process, SpawnOptions, WorkerClient, WorkerProcess};

/// The lifecycle state of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Starting,
    Ready,
    Failed { reason: String },
    Stopping,
    Stopped,
}

impl ModelState {
    /// A stable lowercase label (`starting`, `ready`, ...), for APIs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ModelState::Starting => "starting",
            ModelState::Ready => "ready",
            ModelState::Failed { .. } => "failed",
            ModelState::Stopping => "stopping",
            ModelState::Stopped => "stopped",
        }
    }
}

/// What a model has to be served from.
enum Launch {
    /// Spawn `llm-node-worker`.
    Process {
        spawn: SpawnOptions,
        shutdown_timeout: Duration,
    },
    /// An already connected worker (tests: the in-process fake).
    #[cfg(test)]
    Attached {
        client: WorkerClient,
        info: ModelInfo,
    },
}

/// Owns one model's worker; see the module docs.
pub struct ModelActor {
    name: String,
    launch: Launch,
    state: ModelState,
    process: Option<WorkerProcess>,
    client: Option<WorkerClient>,
    info: Option<ModelInfo>,
    ready_since: Option<Instant>,
    /// Callers of [`WaitReady`] waiting for the end of `Starting`.
    waiters: Vec<oneshot::Sender<ModelState>>,
}

impl ModelActor {
    /// A model served by a worker process started from `spawn`.
    pub fn new(spawn: SpawnOptions, shutdown_timeout: Duration) -> Self {
        let name = spawn.config.model_name.clone();
        Self::with_launch(
            name,
            Launch::Process {
                spawn,
                shutdown_timeout,
            },
        )
    }

    /// A model served by an already connected worker.
    #[cfg(test)]
    pub(crate) fn attached(name: &str, client: WorkerClient, info: ModelInfo) -> Self {
        Self::with_launch(name.to_string(), Launch::Attached { client, info })
    }

    fn with_launch(name: String, launch: Launch) -> Self {
        Self {
            name,
            launch,
            state: ModelState::Stopped,
            process: None,
            client: None,
            info: None,
            ready_since: None,
            waiters: Vec::new(),
        }
    }

    /// The only place the state changes.
    fn set_state(&mut self, next: ModelState) {
        if next == self.state {
            return;
        }
        match &next {
            ModelState::Failed { reason } => {
                tracing::error!(model = %self.name, from = self.state.label(), "model failed: {reason}")
            }
            _ => {
                tracing::info!(model = %self.name, from = self.state.label(), to = next.label(), "model state")
            }
        }
        self.ready_since = (next == ModelState::Ready).then(Instant::now);
        if next != ModelState::Starting {
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(next.clone());
            }
        }
        self.state = next;
    }

    fn start_worker(&mut self, ctx: &mut Context<Self>) {
        self.set_state(ModelState::Starting);
        let spawn = match &self.launch {
            Launch::Process { spawn, .. } => spawn,
            #[cfg(test)]
            Launch::Attached { client, info } => {
                self.client = Some(client.clone());
                self.info = Some(info.clone());
                return self.set_state(ModelState::Ready);
            }
        };
        // Spawned here, on the arbiter thread, which outlives the worker (see `process::spawn`).
        let (process, handshake) = match process::spawn(spawn) {
            Ok(started) => started,
            Err(e) => {
                return self.set_state(ModelState::Failed {
                    reason: e.to_string(),
                })
            }
        };
        let pid = process.pid();
        self.process = Some(process.clone());
        ctx.spawn(
            async move { process.exited().await }
                .into_actor(self)
                .map(move |status, act, _| act.on_exit(pid, status)),
        );
        ctx.spawn(
            handshake
                .wait()
                .into_actor(self)
                .map(|result, act, _| act.on_handshake(result)),
        );
    }

    fn on_handshake(&mut self, result: Result<(WorkerClient, ModelInfo), process::StartError>) {
        if self.state != ModelState::Starting {
            // Stopped meanwhile; `Stop` kills the process whether or not it connected.
            return;
        }
        match result {
            Ok((client, info)) => {
                tracing::info!(model = %self.name, ctx_per_slot = info.ctx_per_slot,
                    parallel = info.parallel, "worker ready");
                self.client = Some(client);
                self.info = Some(info);
                self.set_state(ModelState::Ready);
            }
            Err(e) => self.set_state(ModelState::Failed {
                reason: e.to_string(),
            }),
        }
    }

    fn on_exit(&mut self, pid: u32, status: Option<std::process::ExitStatus>) {
        if self.process.as_ref().map(WorkerProcess::pid) != Some(pid) {
            return;
        }
        // The client's reader has already failed every request in flight.
        self.client = None;
        let status = status.map_or_else(|| "unknown status".into(), |s| s.to_string());
        match self.state {
            ModelState::Stopping | ModelState::Stopped => self.set_state(ModelState::Stopped),
            // Keep the more specific reason of a failed start.
            ModelState::Failed { .. } => {}
            // The handshake notices too, and reports the exit with the stderr tail.
            ModelState::Starting => {}
            ModelState::Ready => self.set_state(ModelState::Failed {
                reason: format!("worker exited ({status})"),
            }),
        }
    }
}

impl Actor for ModelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_worker(ctx);
    }
}

/// Ask for a client to send requests to; refused unless the model is ready.
#[derive(Message)]
#[rtype(result = "Result<WorkerClient, ModelUnavailable>")]
pub struct GetClient;

/// The model cannot take requests now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("model {model} is {}", state.label())]
pub struct ModelUnavailable {
    pub model: String,
    pub state: ModelState,
}

impl Handler<GetClient> for ModelActor {
    type Result = Result<WorkerClient, ModelUnavailable>;

    fn handle(&mut self, _: GetClient, _: &mut Self::Context) -> Self::Result {
        match (&self.state, &self.client) {
            (ModelState::Ready, Some(client)) if client.is_alive() => Ok(client.clone()),
            _ => Err(ModelUnavailable {
                model: self.name.clone(),
                state: self.state.clone(),
            }),
        }
    }
}

/// Ask for a snapshot of the model's state.
#[derive(Message)]
#[rtype(result = "ModelStatus")]
pub struct GetStatus;

/// A snapshot of one model.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    pub state: ModelState,
    pub pid: Option<u32>,
    /// Known once the worker has been ready.
    pub info: Option<ModelInfo>,
    /// Time since the model became ready, while it is.
    pub uptime: Option<Duration>,
    pub in_flight: usize,
}

impl Handler<GetStatus> for ModelActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let running = self.process.as_ref().filter(|p| !p.has_exited());
        MessageResult(ModelStatus {
            name: self.name.clone(),
            state: self.state.clone(),
            pid: running.map(WorkerProcess::pid),
            info: self.info.clone(),
            uptime: self.ready_since.map(|t| t.elapsed()),
            in_flight: self.client.as_ref().map_or(0, WorkerClient::in_flight),
        })
    }
}

/// Resolves with the state once the model is no longer `Starting`.
#[derive(Message)]
#[rtype(result = "ModelState")]
pub struct WaitReady;

impl Handler<WaitReady> for ModelActor {
    type Result = ResponseFuture<ModelState>;

    fn handle(&mut self, _: WaitReady, _: &mut Self::Context) -> Self::Result {
        if self.state != ModelState::Starting {
            let state = self.state.clone();
            return Box::pin(async move { state });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or(ModelState::Stopped) })
    }
}

/// Stop the worker (Shutdown, then TERM, then KILL); resolves once it is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for ModelActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _: &mut Self::Context) -> Self::Result {
        if matches!(self.state, ModelState::Stopping | ModelState::Stopped) {
            return Box::pin(actix::fut::ready(()));
        }
        self.set_state(ModelState::Stopping);
        let client = self.client.take();
        let (process, grace) = match &self.launch {
            Launch::Process {
                shutdown_timeout, ..
            } => (self.process.clone(), *shutdown_timeout),
            #[cfg(test)]
            Launch::Attached { .. } => (None, Duration::ZERO),
        };
        let stop = async move {
            match process {
                Some(process) => process.stop(client.as_ref(), grace).await,
                None => {
                    if let Some(client) = client {
                        let _ = client.shutdown();
                    }
                }
            }
        };
        Box::pin(
            stop.into_actor(self)
                .map(|(), act, _| act.set_state(ModelState::Stopped)),
        )
    }
}

#[cfg(test)]
mod tests {
    use llm_node_protocol::{Prompt, SamplingParams};

    use super::*;
    use crate::testing::model_info as info;
    use crate::worker::fake::FakeWorker;

    #[actix_rt::test]
    async fn attached_worker_serves_and_stops() {
        let fake = FakeWorker::start();
        let addr = ModelActor::attached("m", fake.client.clone(), info("m")).start();
        assert_eq!(addr.send(WaitReady).await.unwrap(), ModelState::Ready);
        let client = addr.send(GetClient).await.unwrap().unwrap();
        let mut stream = client
            .generate(Prompt::Text("hi".into()), SamplingParams::default())
            .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        let status = addr.send(GetStatus).await.unwrap();
        assert_eq!(status.state, ModelState::Ready);
        assert!(status.uptime.is_some());
        addr.send(Stop).await.unwrap();
        let err = addr.send(GetClient).await.unwrap().unwrap_err();
        assert_eq!(err.state, ModelState::Stopped);
    }

    #[actix_rt::test]
    async fn missing_worker_binary_fails_the_model() {
        let spawn = SpawnOptions {
            bin: "/no/such/llm-node-worker".into(),
            config: crate::config::Args::default_for_tests().worker_config(
                &crate::config::ModelSpec {
                    name: "m".into(),
                    path: "/m.gguf".into(),
                },
            ),
            ready_timeout: Duration::from_secs(1),
        };
        let addr = ModelActor::new(spawn, Duration::from_secs(1)).start();
        let state = addr.send(WaitReady).await.unwrap();
        assert!(matches!(state, ModelState::Failed { .. }), "{state:?}");
        let err = addr.send(GetClient).await.unwrap().unwrap_err();
        assert_eq!(err.state.label(), "failed");
    }

    #[actix_rt::test]
    async fn worker_that_dies_during_start_fails_the_model_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("w");
        std::fs::write(&bin, "#!/bin/sh\necho 'ERROR no gpu' >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spawn = SpawnOptions {
            bin,
            config: crate::config::Args::default_for_tests().worker_config(
                &crate::config::ModelSpec {
                    name: "m".into(),
                    path: "/m.gguf".into(),
                },
            ),
            ready_timeout: Duration::from_secs(10),
        };
        spawn.config.parallel = 1;
        let addr = ModelActor::new(spawn, Duration::from_secs(1)).start();
        match addr.send(WaitReady).await.unwrap() {
            ModelState::Failed { reason } => assert!(reason.contains("no gpu"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        let status = addr.send(GetStatus).await.unwrap();
        assert_eq!(status.pid, None);
    }
}
