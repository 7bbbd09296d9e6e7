//! One actor per model: the only owner of that model's worker process and
//! lifecycle state.
//!
//! ```text
//!             Load                Ready               Unload / Restart
//!  stopped ─────────▶ starting ─────────▶ ready ─────────────────────▶ draining
//!     ▲                  │ crash / no Ready    │ crash / hang               │ in flight = 0
//!     │                  ▼                     ▼                            ▼
//!     │               backoff ◀──────────── (crash)                     stopping ──▶ stopped
//!     │                  │ delay                                            (or starting,
//!     │                  ▼                                                   for a restart)
//!     │               starting …       crash loop ──▶ failed (until an admin loads/restarts)
//! ```
//!
//! Callers never peek at the state and act: they send a message and the
//! actor decides. Every state change goes through [`ModelActor::set_state`],
//! which logs it, updates the metrics and wakes whoever waits for capacity.
//! Crashes are detected from two sides: the process waiter (exit status or
//! signal) and the liveness ping: a hung process answers no `Ping`, and a
//! worker whose engine sits in one step past the stall limit answers with
//! progress that says so (`policy::liveness`); either is killed, and the
//! exit is reported as that kill. Restarts use capped exponential backoff
//! with jitter, and too many crashes in the window park the model as `failed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use llm_node_protocol::{ModelInfo, Progress};
use nix::sys::signal::Signal;
use tokio::sync::{oneshot, Notify};

use super::lease::{LeaseGuard, Leases};
use super::state::ModelState;
use super::supervision::{Liveness, Supervision};
use crate::gpu::{visibility_env, Vendor};
use crate::metrics::Metrics;
use crate::policy::liveness::stuck_for;
use crate::worker::process::StartError;
use crate::worker::{process, SpawnOptions, WorkerClient, WorkerProcess};

/// How the actor gets a worker.
enum Launch {
    /// Spawn `llm-node-worker` (or a stand-in) as a child process.
    Process {
        spawn: SpawnOptions,
        shutdown_timeout: Duration,
    },
    /// Use an already connected client (unit tests).
    #[cfg(test)]
    Attached {
        client: WorkerClient,
        info: ModelInfo,
    },
}

/// What to do once the worker is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    StayStopped,
    Start,
}

/// Shared by every model actor.
#[derive(Clone)]
pub struct Shared {
    pub supervision: Arc<Supervision>,
    pub metrics: Metrics,
    /// Woken on every state change and whenever a model's last request ends:
    /// loads waiting for capacity re-check then.
    pub changed: Arc<Notify>,
    /// The GPUs' vendor, which decides the variable that pins a worker.
    pub vendor: Option<Vendor>,
}

pub struct ModelActor {
    name: String,
    launch: Launch,
    shared: Shared,
    state: ModelState,
    process: Option<WorkerProcess>,
    client: Option<WorkerClient>,
    info: Option<ModelInfo>,
    ready_since: Option<Instant>,
    /// When the current start began (spawn), for the load-time histogram.
    starting_since: Option<Instant>,
    last_used: Instant,
    /// Waiters for the end of `Starting`.
    waiters: Vec<oneshot::Sender<ModelState>>,
    /// Requests woken by `Starting → Ready` that have not acquired yet, and
    /// until when that holds: they count as in flight, so the load they waited
    /// for is not evicted in the moment between the wake-up and their `Acquire`.
    reserved: usize,
    reserved_until: Instant,
    /// Recent crash times (crash-loop rule) and consecutive failures (backoff).
    crashes: Vec<Instant>,
    consecutive_failures: u32,
    /// When the current worker reached Ready (None while it has not): a
    /// worker that was serving is always restarted, never parked.
    ready_at: Option<Instant>,
    restarts: u64,
    last_exit: Option<String>,
    /// GPUs the worker is pinned to (set by placement or an admin), if any.
    gpus: Vec<u32>,
    ping_pending: bool,
    /// The current worker's progress at its last `Pong` (None before the first).
    progress: Option<Progress>,
    /// Set when the liveness check killed the worker, read by the exit
    /// handler, so the exit is reported as that kill (and only then).
    liveness_kill: Option<LivenessKill>,
    /// Bumped on every start, so late callbacks of an older worker are ignored.
    generation: u64,
    /// Requests lent out and not yet over (see `lease`): busy from `Acquire` on.
    leases: Leases,
    /// Set by `RemoveIfIdle`: the model is leaving the node and takes nothing new.
    retired: bool,
    /// A client's `keep_alive` (Ollama's API) for the loaded worker: replaces
    /// the configured idle TTL until the worker stops.
    keep_alive: Option<KeepAlive>,
}

impl ModelActor {
    pub fn new(spawn: SpawnOptions, shutdown_timeout: Duration, shared: Shared) -> Self {
        let name = spawn.config.model_name.clone();
        Self::with_launch(
            name,
            Launch::Process {
                spawn,
                shutdown_timeout,
            },
            shared,
        )
    }

    #[cfg(test)]
    pub(crate) fn attached(name: &str, client: WorkerClient, info: ModelInfo) -> Self {
        let shared = Shared {
            supervision: Arc::new(super::supervision::test_supervision()),
            metrics: Metrics::new(),
            changed: Arc::new(Notify::new()),
            vendor: None,
        };
        Self::with_launch(name.to_string(), Launch::Attached { client, info }, shared)
    }

    /// Pins the worker to `gpus` from its next start on.
    pub fn pin(&mut self, gpus: Vec<u32>) {
        self.gpus = gpus;
    }

    fn with_launch(name: String, launch: Launch, shared: Shared) -> Self {
        shared.metrics.set_state(&name, "stopped");
        shared.metrics.add_model(&name);
        let leases = Leases::new(shared.changed.clone());
        Self {
            name,
            launch,
            shared,
            state: ModelState::Stopped,
            process: None,
            client: None,
            info: None,
            ready_since: None,
            starting_since: None,
            last_used: Instant::now(),
            waiters: Vec::new(),
            reserved: 0,
            reserved_until: Instant::now(),
            crashes: Vec::new(),
            consecutive_failures: 0,
            ready_at: None,
            restarts: 0,
            last_exit: None,
            gpus: Vec::new(),
            keep_alive: None,
            ping_pending: false,
            progress: None,
            liveness_kill: None,
            generation: 0,
            leases,
            retired: false,
        }
    }

    /// The one place the state changes.
    fn set_state(&mut self, next: ModelState) {
        if next == self.state {
            return;
        }
        match &next {
            ModelState::Failed { reason } => {
                tracing::error!(model = %self.name, from = self.state.label(), "model failed: {reason}")
            }
            ModelState::Backoff { attempt, reason } => {
                tracing::warn!(model = %self.name, attempt, "worker crashed ({reason}); restarting after backoff")
            }
            _ => {
                tracing::info!(model = %self.name, from = self.state.label(), to = next.label(), "model state")
            }
        }
        self.ready_since = (next == ModelState::Ready).then(Instant::now);
        self.meter_transition(&next);
        self.reserved = 0;
        if next == ModelState::Ready {
            self.reserved = self.waiters.len();
            self.reserved_until = Instant::now() + RESERVATION;
        }
        if next != ModelState::Starting {
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(next.clone());
            }
        }
        self.shared.metrics.set_state(&self.name, next.label());
        self.state = next;
        self.shared.changed.notify_waiters();
    }

    /// Load time on `Starting → Ready`; a worker's occupancy is forgotten
    /// once it no longer serves.
    fn meter_transition(&mut self, next: &ModelState) {
        let metrics = &self.shared.metrics;
        match next {
            ModelState::Starting => self.starting_since = Some(Instant::now()),
            ModelState::Ready => {
                if let Some(since) = self.starting_since.take() {
                    metrics
                        .model_load_duration
                        .with_label_values(&[&self.name])
                        .observe(since.elapsed().as_secs_f64());
                }
            }
            ModelState::Draining => {}
            _ => {
                self.starting_since = None;
                metrics.clear_occupancy(&self.name);
            }
        }
    }

    fn start_worker(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.set_state(ModelState::Starting);
        let spawn = match &self.launch {
            Launch::Process { spawn, .. } => self.spawn_options(spawn),
            #[cfg(test)]
            Launch::Attached { client, info } => {
                let (client, info) = (client.clone(), info.clone());
                return self.on_ready(ctx, client, info);
            }
        };
        let (process, handshake) = match process::spawn(&spawn) {
            Ok(started) => started,
            Err(e) => return self.on_failure(ctx, e.to_string()),
        };
        self.process = Some(process.clone());
        ctx.spawn(
            async move { process.exited().await }
                .into_actor(self)
                .map(move |status, act, ctx| act.on_exit(ctx, generation, status)),
        );
        ctx.spawn(
            handshake
                .wait()
                .into_actor(self)
                .map(move |result, act, ctx| {
                    if act.generation != generation || act.state != ModelState::Starting {
                        return;
                    }
                    match result {
                        Ok((client, info)) => act.on_ready(ctx, client, info),
                        Err(StartError::InitFailed {
                            message,
                            permanent: true,
                        }) => act.on_load_error(message),
                        Err(e) => act.on_failure(ctx, e.to_string()),
                    }
                }),
        );
    }

    /// The spawn template with this model's GPU pinning applied.
    fn spawn_options(&self, template: &SpawnOptions) -> SpawnOptions {
        let mut spawn = template.clone();
        if !self.gpus.is_empty() {
            for (name, value) in visibility_env(self.shared.vendor, &self.gpus) {
                spawn.env.push((name.into(), value));
            }
            // Visible devices are renumbered from 0.
            spawn.config.main_gpu = 0;
        }
        spawn
    }

    fn on_ready(&mut self, ctx: &mut Context<Self>, client: WorkerClient, info: ModelInfo) {
        tracing::info!(model = %self.name, ctx_per_slot = info.ctx_per_slot,
            parallel = info.parallel, gpus = ?self.gpus, "worker ready");
        // Wake capacity waiters whenever this model's last request ends.
        let mut in_flight = client.watch_in_flight();
        let changed = Arc::clone(&self.shared.changed);
        ctx.spawn(
            async move {
                while in_flight.changed().await.is_ok() {
                    if *in_flight.borrow() == 0 {
                        changed.notify_waiters();
                    }
                }
            }
            .into_actor(self),
        );
        let metrics = &self.shared.metrics;
        metrics.clear_occupancy(&self.name);
        metrics
            .slots
            .with_label_values(&[&self.name])
            .set(i64::from(info.parallel));
        metrics
            .kv_cells_total
            .with_label_values(&[&self.name])
            .set(i64::from(info.parallel).saturating_mul(i64::from(info.ctx_per_slot)));
        metrics.set_offload(&self.name, &info.offload);
        let cache_ram_mib = match &self.launch {
            Launch::Process { spawn, .. } => spawn.config.cache_ram_mib,
            #[cfg(test)]
            Launch::Attached { .. } => 0,
        };
        metrics
            .prompt_cache_limit_bytes
            .with_label_values(&[&self.name])
            .set(i64::from(cache_ram_mib) << 20);
        // A level set at run time reaches workers started after it too.
        if let Some(filter) = worker_log_filter() {
            let _ = client.set_log_level(&filter);
        }
        self.client = Some(client);
        self.info = Some(info);
        self.ready_at = Some(Instant::now());
        self.last_used = Instant::now();
        self.set_state(ModelState::Ready);
        self.progress = None;
        // A worker can exit between its `Ready` and this line; that exit
        // reached `on_exit` while starting and was left to the handshake,
        // which had already succeeded. Without this the model stayed `ready`
        // on a dead worker for good (the abuse suite's `exit at ready`).
        if let Some(status) = self.process.as_ref().and_then(|p| p.exit_status()) {
            return self.on_exit(ctx, self.generation, Some(status));
        }
        if let Some(liveness) = self.shared.supervision.liveness {
            let generation = self.generation;
            ctx.run_interval(liveness.interval, move |act, ctx| {
                if act.generation == generation {
                    act.probe(ctx, liveness);
                }
            });
        }
    }

    /// The worker's occupancy as its `Pong` reported it.
    fn meter_progress(&self, progress: Progress) {
        let metrics = &self.shared.metrics;
        metrics
            .busy_slots
            .with_label_values(&[&self.name])
            .set(i64::from(progress.busy_slots));
        metrics
            .kv_cells_used
            .with_label_values(&[&self.name])
            .set(i64::try_from(progress.kv_cells).unwrap_or(i64::MAX));
        for (gauge, value) in [
            (&metrics.prompt_cache_bytes, progress.cache_bytes),
            (&metrics.prompt_cache_entries, progress.cache_entries),
            (&metrics.prompt_cache_hits, progress.cache_hits),
            (&metrics.prompt_cache_copies, progress.cache_copies),
            (&metrics.spec_draft_tokens, progress.spec_drafted),
            (&metrics.spec_accepted_tokens, progress.spec_accepted),
            (&metrics.parked_sequences, progress.parked),
            (&metrics.started_ahead, progress.started_ahead),
        ] {
            gauge
                .with_label_values(&[&self.name])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Pings a ready worker. Its command reader answers at once with the
    /// engine's progress, even in the middle of a long step, so:
    /// - no answer within the timeout: the process is hung → killed;
    /// - an answer showing the engine inside one step past the stall limit
    ///   (`policy::liveness`): stuck → killed;
    /// - a dead connection while the process lives (a channel that closed or
    ///   sent something undecodable): it could never serve again, yet would
    ///   look ready → killed.
    ///
    /// The exit is then handled as a crash, reported as the kill it was.
    fn probe(&mut self, ctx: &mut Context<Self>, liveness: Liveness) {
        if self.ping_pending || !matches!(self.state, ModelState::Ready | ModelState::Draining) {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        self.ping_pending = true;
        let generation = self.generation;
        let timeout = liveness.timeout;
        let connection = client.clone();
        ctx.spawn(
            async move { tokio::time::timeout(timeout, client.ping()).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.ping_pending = false;
                    if act.generation != generation {
                        return;
                    }
                    // A dead connection is usually a worker that just
                    // exited (its exit is then reported as what it was), so
                    // only a silent or stuck worker is recorded as killed
                    // by this check.
                    let (why, kill) = match result {
                        Ok(Ok(progress)) => {
                            act.meter_progress(progress);
                            let before = act.progress.replace(progress);
                            let Some(limit) = liveness.stall else {
                                return; // a long step is never a reason
                            };
                            let Some(busy) = stuck_for(before, progress, limit) else {
                                return; // alive
                            };
                            let kill = LivenessKill::Stuck { busy, limit };
                            (kill.reason(), Some(kill))
                        }
                        // A worker that sent garbage is alive and silent:
                        // this kill is the only end it gets, so it is
                        // reported as what it was.
                        Ok(Err(e)) => match connection.protocol_error() {
                            Some(why) => {
                                let kill = LivenessKill::Protocol(why);
                                (kill.reason(), Some(kill))
                            }
                            None => (format!("its connection is dead ({e})"), None),
                        },
                        Err(_) => (
                            format!("it did not answer within {timeout:?}"),
                            Some(LivenessKill::Unresponsive),
                        ),
                    };
                    tracing::error!(model = %act.name, %why,
                        "worker failed its liveness check; killing it");
                    if kill.is_some() {
                        act.liveness_kill = kill;
                    }
                    if let Some(p) = &act.process {
                        p.signal(Signal::SIGKILL);
                    }
                }),
        );
    }

    /// The worker said its model can never load as configured (missing or
    /// invalid file, a chat template that does not compile): parked at once
    /// with the reason; retrying cannot help, an admin must act.
    fn on_load_error(&mut self, message: String) {
        tracing::error!(model = %self.name, %message, "model cannot be loaded; not retrying");
        self.client = None;
        self.set_state(ModelState::Failed {
            reason: format!("cannot load: {message}"),
        });
    }

    /// A start that failed or a worker that died unexpectedly.
    ///
    /// A worker that had reached Ready is always restarted (capped backoff;
    /// the attempt count resets after a healthy period): an OOM kill on a busy
    /// night must not leave the model down. Only starts that never reach
    /// Ready count towards the crash loop that parks a model as failed.
    fn on_failure(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.client = None;
        if let Some(p) = &self.process {
            // A start that timed out leaves a live process behind.
            p.signal(Signal::SIGKILL);
        }
        self.shared
            .metrics
            .crashes
            .with_label_values(&[&self.name])
            .inc();
        let now = Instant::now();
        let policy = &self.shared.supervision.restart;
        let was_ready = self.ready_at.take();
        if was_ready.is_some_and(|t| now.saturating_duration_since(t) >= policy.max) {
            // It served for longer than the longest backoff: a fresh incident.
            self.consecutive_failures = 0;
        }
        if was_ready.is_none() {
            self.crashes.push(now);
        }
        self.crashes
            .retain(|t| now.saturating_duration_since(*t) <= policy.window);
        if was_ready.is_none() && policy.is_crash_loop(&self.crashes, now) {
            let reason = format!(
                "crash loop: {} failures within {:?}; last: {reason}",
                self.crashes.len(),
                policy.window
            );
            return self.set_state(ModelState::Failed { reason });
        }
        self.consecutive_failures += 1;
        let attempt = self.consecutive_failures;
        let delay = policy.delay(attempt, rand::random());
        self.set_state(ModelState::Backoff { attempt, reason });
        let generation = self.generation;
        ctx.run_later(delay, move |act, ctx| {
            if act.generation == generation && matches!(act.state, ModelState::Backoff { .. }) {
                act.restarts += 1;
                act.shared
                    .metrics
                    .restarts
                    .with_label_values(&[&act.name])
                    .inc();
                act.start_worker(ctx);
            }
        });
    }

    fn on_exit(
        &mut self,
        ctx: &mut Context<Self>,
        generation: u64,
        status: Option<std::process::ExitStatus>,
    ) {
        if generation != self.generation {
            return;
        }
        let killed = self.liveness_kill.take();
        self.last_exit = Some(match &killed {
            Some(kill) => kill.last_exit(),
            None => describe_exit(status),
        });
        self.client = None;
        match self.state {
            // The handshake sees the exit too and reports it with the stderr tail.
            ModelState::Starting => {}
            ModelState::Ready | ModelState::Draining => {
                let Some(process) = self.process.clone() else {
                    return self.on_failure(ctx, "worker exited".into());
                };
                ctx.spawn(
                    async move { process.exit_error(status).await }
                        .into_actor(self)
                        .map(move |error, act, ctx| {
                            if act.generation != generation {
                                return;
                            }
                            let reason = match (killed, error) {
                                (Some(kill), _) => format!("{}; killed", kill.reason()),
                                // It had been serving: not a failed start.
                                (None, StartError::Exited { status, tail }) => {
                                    format!("worker died ({status}); last stderr lines:\n{tail}")
                                }
                                (None, other) => format!("worker died: {other}"),
                            };
                            act.on_failure(ctx, reason);
                        }),
                );
            }
            ModelState::Stopping | ModelState::Stopped => {}
            ModelState::Backoff { .. } | ModelState::Failed { .. } => {}
        }
    }

    /// Drains (unless `force`), stops the worker, then stays stopped or starts again.
    fn stop_then(
        &mut self,
        force: bool,
        after: AfterStop,
    ) -> ResponseActFuture<Self, Result<(), String>> {
        let client = self.client.clone();
        if !force && client.is_some() && self.state == ModelState::Ready {
            self.set_state(ModelState::Draining);
        }
        let drained = match force {
            true => None,
            false => Some(self.drained(client)),
        };
        Box::pin(
            async move {
                if let Some(drained) = drained {
                    drained.await;
                }
            }
            .into_actor(self)
            .then(move |(), act, _| act.stop_worker(force).into_actor(act))
            .map(move |(), act, ctx| {
                act.after_stop(after, ctx);
                Ok(())
            }),
        )
    }

    /// Resolves once nothing is lent out or in flight, or at the drain timeout.
    fn drained(&self, client: Option<WorkerClient>) -> impl std::future::Future<Output = ()> {
        let drain = self.shared.supervision.drain_timeout;
        let mut leases = self.leases.watch();
        async move {
            let idle = async {
                // Lent out but not sent yet counts too (the lease), so both must end.
                let _ = leases.wait_for(|n| *n == 0).await;
                if let Some(client) = client {
                    let _ = client.watch_in_flight().wait_for(|n| *n == 0).await;
                }
            };
            if tokio::time::timeout(drain, idle).await.is_err() {
                tracing::warn!("drain timeout: stopping with requests in flight");
            }
        }
    }

    /// Marks the worker stopping and stops it: KILL when `force`, else the
    /// graceful Shutdown, TERM, KILL sequence.
    fn stop_worker(&mut self, force: bool) -> impl std::future::Future<Output = ()> {
        self.generation += 1; // exits of this worker are expected now
        self.set_state(ModelState::Stopping);
        let client = self.client.take();
        let process = self.process.clone();
        let grace = match &self.launch {
            Launch::Process {
                shutdown_timeout, ..
            } => *shutdown_timeout,
            #[cfg(test)]
            Launch::Attached { .. } => Duration::ZERO,
        };
        async move {
            match (process, force) {
                (Some(p), true) => {
                    p.signal(Signal::SIGKILL);
                    let _ =
                        tokio::time::timeout(grace.max(Duration::from_secs(1)), p.exited()).await;
                }
                (Some(p), false) => p.stop(client.as_ref(), grace).await,
                (None, _) => {
                    if let Some(c) = client {
                        let _ = c.shutdown();
                    }
                }
            }
        }
    }

    /// The worker is gone: stay stopped (forgetting its info) or start a new one.
    fn after_stop(&mut self, after: AfterStop, ctx: &mut Context<Self>) {
        self.process = None;
        self.keep_alive = None;
        if after == AfterStop::StayStopped {
            self.info = None;
        }
        self.set_state(ModelState::Stopped);
        if after == AfterStop::Start {
            self.restarts += 1;
            self.shared
                .metrics
                .restarts
                .with_label_values(&[&self.name])
                .inc();
            self.start_worker(ctx);
        }
    }
}

/// Shared parts for unit tests: crash loop after `crash_loop_max` failures, fast restarts.
#[cfg(test)]
pub fn test_shared(crash_loop_max: usize) -> Shared {
    let mut s = super::supervision::test_supervision();
    s.restart.max_crashes = crash_loop_max;
    Shared {
        supervision: Arc::new(s),
        metrics: Metrics::new(),
        changed: Arc::new(Notify::new()),
        vendor: None,
    }
}

/// Why the liveness check killed a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LivenessKill {
    /// The process did not answer a ping within the timeout.
    Unresponsive,
    /// The engine sat inside one step for `busy`, past the stall `limit`.
    Stuck { busy: Duration, limit: Duration },
    /// The worker sent a message that is not the protocol (why, from the client).
    Protocol(String),
}

impl LivenessKill {
    /// Why, in words (the log line, and the backoff or failed state's reason).
    fn reason(&self) -> String {
        match self {
            LivenessKill::Unresponsive => "unresponsive to liveness pings".into(),
            LivenessKill::Protocol(why) => format!("broke the protocol ({why})"),
            LivenessKill::Stuck { busy, limit } => format!(
                "engine stuck in one step for {} (limit {})",
                secs(*busy),
                secs(*limit)
            ),
        }
    }

    /// The model's `last_exit`.
    fn last_exit(&self) -> String {
        match self {
            LivenessKill::Unresponsive => "killed: unresponsive".into(),
            LivenessKill::Protocol(why) => {
                let why: String = why.chars().take(200).collect();
                format!("killed: broke the protocol ({why})")
            }
            LivenessKill::Stuck { busy, .. } => {
                format!("killed: engine stuck in one step for {}", secs(*busy))
            }
        }
    }
}

/// "312 s", or "2001 ms" under 10 s (so a short limit and the step that
/// passed it never print alike).
fn secs(d: Duration) -> String {
    match d.as_secs() {
        0..10 => format!("{} ms", d.as_millis()),
        n => format!("{n} s"),
    }
}

/// "exit code 1", "signal 9 (SIGKILL)", ...
fn describe_exit(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "unknown status".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map_or("?", |s| s.as_str());
                format!("signal {sig} ({name})")
            }
            _ => s.to_string(),
        },
    }
}

impl Actor for ModelActor {
    type Context = Context<Self>;
}

/// A client of the ready worker for one request, counted in flight from now on
/// (the guard): the state check and the count are one step.
#[derive(Message)]
#[rtype(result = "Result<Acquired, ModelUnavailable>")]
pub struct Acquire;

/// What a request needs from a ready model: its client, the lease guard, and
/// the figures admission decides on.
#[derive(Debug)]
pub struct Acquired {
    pub client: WorkerClient,
    pub slots: usize,
    /// Requests in flight before this one.
    pub in_flight: usize,
    pub(crate) guard: LeaseGuard,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("model {model} is {}", state.label())]
pub struct ModelUnavailable {
    pub model: String,
    pub state: ModelState,
}

/// How long a request woken by its model's `Ready` keeps the model counted as
/// in flight before its `Acquire` arrives (normally microseconds later).
const RESERVATION: Duration = Duration::from_secs(5);

impl ModelActor {
    /// In flight: leases held, or requests in the worker when more (calls
    /// made on a client without a lease, as tests do).
    fn in_flight(&self) -> usize {
        let in_worker = self.client.as_ref().map_or(0, WorkerClient::in_flight);
        let reserved = if Instant::now() < self.reserved_until {
            self.reserved
        } else {
            0
        };
        (self.leases.count() + reserved).max(in_worker)
    }
}

impl Handler<Acquire> for ModelActor {
    type Result = Result<Acquired, ModelUnavailable>;

    fn handle(&mut self, _: Acquire, _: &mut Self::Context) -> Self::Result {
        match (&self.state, &self.client) {
            (ModelState::Ready, Some(client)) if client.is_alive() && !self.retired => {
                self.last_used = Instant::now();
                self.reserved = self.reserved.saturating_sub(1);
                let in_flight = self.in_flight();
                Ok(Acquired {
                    client: client.clone(),
                    slots: self.info.as_ref().map_or(1, |i| i.parallel as usize),
                    in_flight,
                    guard: self.leases.take(),
                })
            }
            _ => Err(ModelUnavailable {
                model: self.name.clone(),
                state: self.state.clone(),
            }),
        }
    }
}

/// Stop and retire the model if it is idle, in one step: refused (`false`) while
/// a request holds it or it is starting, draining or stopping. A retired model
/// takes no new request or load; the registry then forgets it.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveIfIdle;

impl Handler<RemoveIfIdle> for ModelActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, _: RemoveIfIdle, _: &mut Self::Context) -> Self::Result {
        let changing = matches!(
            self.state,
            ModelState::Starting | ModelState::Draining | ModelState::Stopping
        );
        if self.in_flight() > 0 || changing {
            return Box::pin(actix::fut::ready(false));
        }
        self.retired = true;
        if self.state == ModelState::Ready {
            // Idle: nothing to drain, so this stops at once.
            return Box::pin(
                self.stop_then(false, AfterStop::StayStopped)
                    .map(|_, _, _| true),
            );
        }
        self.generation += 1; // cancels a pending restart
        self.set_state(ModelState::Stopped);
        Box::pin(actix::fut::ready(true))
    }
}

/// Start the worker if it is not running (on demand, at boot, or by an admin).
/// `gpus` replaces the pinning when given. A failed model is given a fresh start.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Load {
    pub gpus: Option<Vec<u32>>,
}

impl Handler<Load> for ModelActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Load, ctx: &mut Self::Context) -> Self::Result {
        if self.retired {
            return Err(format!("model {} is being removed", self.name));
        }
        if let Some(gpus) = msg.gpus {
            self.gpus = gpus;
        }
        match self.state {
            ModelState::Stopped | ModelState::Failed { .. } | ModelState::Backoff { .. } => {
                if matches!(self.state, ModelState::Failed { .. }) {
                    self.crashes.clear();
                    self.consecutive_failures = 0;
                }
                self.start_worker(ctx);
                Ok(())
            }
            ModelState::Starting | ModelState::Ready => Ok(()),
            ModelState::Draining | ModelState::Stopping => {
                Err(format!("model {} is {}", self.name, self.state.label()))
            }
        }
    }
}

/// Drain (unless `force`) and stop the worker; the model stays stopped.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Unload {
    pub force: bool,
}

impl Handler<Unload> for ModelActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Unload, _: &mut Self::Context) -> Self::Result {
        match self.state {
            ModelState::Stopped => Box::pin(actix::fut::ready(Ok(()))),
            ModelState::Backoff { .. } | ModelState::Failed { .. } => {
                self.generation += 1; // cancels a pending restart
                self.set_state(ModelState::Stopped);
                Box::pin(actix::fut::ready(Ok(())))
            }
            ModelState::Draining | ModelState::Stopping => Box::pin(actix::fut::ready(Err(
                format!("model {} is already {}", self.name, self.state.label()),
            ))),
            ModelState::Starting | ModelState::Ready => {
                self.stop_then(msg.force, AfterStop::StayStopped)
            }
        }
    }
}

/// Drain (unless `force`), stop and start again. Clears the crash history.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Restart {
    pub force: bool,
}

impl Handler<Restart> for ModelActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Restart, ctx: &mut Self::Context) -> Self::Result {
        self.crashes.clear();
        self.consecutive_failures = 0;
        match self.state {
            ModelState::Stopped | ModelState::Failed { .. } | ModelState::Backoff { .. } => {
                self.restarts += 1;
                self.shared
                    .metrics
                    .restarts
                    .with_label_values(&[&self.name])
                    .inc();
                self.start_worker(ctx);
                Box::pin(actix::fut::ready(Ok(())))
            }
            ModelState::Draining | ModelState::Stopping => Box::pin(actix::fut::ready(Err(
                format!("model {} is already {}", self.name, self.state.label()),
            ))),
            ModelState::Starting | ModelState::Ready => self.stop_then(msg.force, AfterStop::Start),
        }
    }
}

/// A configuration reload changed how this model's worker starts: take the
/// new spawn settings and GPU pins, and, when a worker is loaded, drain it
/// and restart with them (as [`Restart`] does). A stopped model only keeps
/// them for its next start.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reconfigure {
    pub spawn: SpawnOptions,
    /// Empty: placement decides at the next load.
    pub gpus: Vec<u32>,
}

impl Handler<Reconfigure> for ModelActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Self::Context) -> Self::Result {
        match &mut self.launch {
            Launch::Process { spawn, .. } => *spawn = msg.spawn,
            #[cfg(test)]
            Launch::Attached { .. } => {}
        }
        self.gpus = msg.gpus;
        match self.state {
            ModelState::Starting | ModelState::Ready => {
                <Self as Handler<Restart>>::handle(self, Restart { force: false }, ctx)
            }
            // Stopped, failed or backing off: the next start uses the new
            // settings; draining or stopping: it stops, then does so too.
            _ => Box::pin(actix::fut::ready(Ok(()))),
        }
    }
}

/// Stop now for node shutdown (the node drained already).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for ModelActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _: &mut Self::Context) -> Self::Result {
        if !self.state.is_loaded() || matches!(self.state, ModelState::Backoff { .. }) {
            self.generation += 1;
            if self.state != ModelState::Stopped {
                self.set_state(ModelState::Stopped);
            }
            return Box::pin(actix::fut::ready(()));
        }
        if matches!(self.state, ModelState::Stopping) {
            return Box::pin(actix::fut::ready(()));
        }
        // A starting worker has nothing to drain or shut down politely.
        let force = self.state == ModelState::Starting;
        Box::pin(
            self.stop_then(force, AfterStop::StayStopped)
                .map(|_, _, _| ()),
        )
    }
}

/// The workers' log filter set at run time ([`SetLogLevel`]), for workers
/// that become ready later; `None`: they keep the `RUST_LOG` they started with.
static WORKER_LOG_FILTER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn worker_log_filter() -> Option<String> {
    WORKER_LOG_FILTER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Replaces the log filter of this model's worker (and, through the shared
/// setting, of every worker that becomes ready later).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLogLevel(pub String);

impl Handler<SetLogLevel> for ModelActor {
    type Result = ();

    fn handle(&mut self, msg: SetLogLevel, _: &mut Self::Context) {
        *WORKER_LOG_FILTER.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.0.clone());
        if let Some(client) = &self.client {
            let _ = client.set_log_level(&msg.0);
        }
    }
}

/// Resolves once the model is not starting (ready, backing off, failed, ...).
#[derive(Message)]
#[rtype(result = "ModelState")]
pub struct WaitReady;

impl Handler<WaitReady> for ModelActor {
    type Result = ResponseFuture<ModelState>;

    fn handle(&mut self, _: WaitReady, _: &mut Self::Context) -> Self::Result {
        if !matches!(self.state, ModelState::Starting) {
            let state = self.state.clone();
            return Box::pin(async move { state });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or(ModelState::Stopped) })
    }
}

/// What `/admin/models`, `/v1/models` and the metrics show.
#[derive(Message)]
#[rtype(result = "ModelStatus")]
pub struct GetStatus;

#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    pub state: ModelState,
    pub pid: Option<u32>,
    pub info: Option<ModelInfo>,
    pub uptime: Option<Duration>,
    pub in_flight: usize,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub gpus: Vec<u32>,
    pub idle_for: Duration,
    /// Resident memory of the worker process, bytes.
    pub rss_bytes: Option<u64>,
    /// A client's `keep_alive` in force, replacing the configured idle TTL.
    pub keep_alive: Option<KeepAlive>,
}

impl ModelStatus {
    /// Requests beyond the worker's slots (waiting inside the worker).
    pub fn queued(&self) -> usize {
        let slots = self.info.as_ref().map_or(0, |i| i.parallel as usize);
        self.in_flight.saturating_sub(slots)
    }
}

/// Resident set size of `pid` from `/proc`, in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Handler<GetStatus> for ModelActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let running = self.process.as_ref().filter(|p| !p.has_exited());
        let pid = running.map(WorkerProcess::pid);
        MessageResult(ModelStatus {
            name: self.name.clone(),
            state: self.state.clone(),
            pid,
            info: self.info.clone(),
            uptime: self.ready_since.map(|t| t.elapsed()),
            in_flight: self.in_flight(),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            gpus: self.gpus.clone(),
            idle_for: self.last_used.elapsed(),
            rss_bytes: pid.and_then(rss_bytes),
            keep_alive: self.keep_alive,
        })
    }
}

/// How long a loaded model stays after its last request, as a client asked
/// (Ollama's `keep_alive`); "unload now" is an [`Unload`], not this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unloaded for being idle.
    Forever,
    /// Unloaded once idle this long.
    For(Duration),
}

impl KeepAlive {
    /// As the eviction policy's TTL: whole seconds, at least 1; 0 = never.
    pub fn ttl_secs(self) -> u64 {
        match self {
            KeepAlive::Forever => 0,
            KeepAlive::For(d) => d.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}

/// Sets the loaded worker's [`KeepAlive`] (ignored while none is loaded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetKeepAlive(pub KeepAlive);

impl Handler<SetKeepAlive> for ModelActor {
    type Result = ();

    fn handle(&mut self, msg: SetKeepAlive, _: &mut Self::Context) {
        if self.state.is_loaded() {
            self.keep_alive = Some(msg.0);
        }
    }
}

/// Pins the model to GPUs from its next start on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetGpus(pub Vec<u32>);

impl Handler<SetGpus> for ModelActor {
    type Result = ();

    fn handle(&mut self, msg: SetGpus, _: &mut Self::Context) {
        self.gpus = msg.0;
    }
}

#[cfg(test)]
mod tests {
    use llm_node_protocol::{Prompt, SamplingParams};

    use super::*;
    use crate::testing::model_info as info;
    use crate::worker::fake::FakeWorker;

    fn spawn_opts(bin: std::path::PathBuf) -> SpawnOptions {
        SpawnOptions {
            bin,
            config: crate::config::Args::default_for_tests().worker_config(
                &crate::models::ModelSpec {
                    name: "m".into(),
                    path: "/m.gguf".into(),
                },
            ),
            ready_timeout: Duration::from_secs(10),
            env: Vec::new(),
            lanes: None,
            stream_buffer: crate::worker::client::DEFAULT_STREAM_BUFFER,
        }
    }

    use super::test_shared as shared;

    #[actix_rt::test]
    async fn attached_worker_serves_and_stops() {
        let fake = FakeWorker::start();
        let addr = ModelActor::attached("m", fake.client.clone(), info("m")).start();
        addr.send(Load { gpus: None }).await.unwrap().unwrap();
        assert_eq!(addr.send(WaitReady).await.unwrap(), ModelState::Ready);
        let client = addr.send(Acquire).await.unwrap().unwrap().client;
        let mut stream = client
            .generate(Prompt::Text("hi".into()), SamplingParams::default())
            .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        let status = addr.send(GetStatus).await.unwrap();
        assert_eq!(status.state, ModelState::Ready);
        assert!(status.uptime.is_some());
        addr.send(Stop).await.unwrap();
        let err = addr.send(Acquire).await.unwrap().unwrap_err();
        assert_eq!(err.state, ModelState::Stopped);
    }

    #[actix_rt::test]
    async fn a_missing_binary_crash_loops_into_failed() {
        let addr = ModelActor::new(
            spawn_opts("/no/such/llm-node-worker".into()),
            Duration::from_secs(1),
            shared(3),
        )
        .start();
        addr.send(Load { gpus: None }).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = addr.send(GetStatus).await.unwrap();
            if let ModelState::Failed { reason } = &status.state {
                assert!(reason.contains("crash loop"), "{reason}");
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", status.state);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = addr.send(Acquire).await.unwrap().unwrap_err();
        assert_eq!(err.state.label(), "failed");
    }

    /// Backoff on virtual time: five failed starts with the default restart
    /// policy (500 ms doubling, jitter in [½, 1)) take at least
    /// 250 + 500 + 1000 + 2000 ms of backoff — and no real time, because the
    /// runtime's clock is paused and jumps to each pending timer.
    #[actix_rt::test]
    async fn failed_starts_back_off_exponentially_on_virtual_time() {
        tokio::time::pause();
        let mut supervision = super::super::supervision::test_supervision();
        supervision.restart = crate::policy::backoff::RestartPolicy {
            max_crashes: 5,
            ..Default::default()
        };
        let shared = Shared {
            supervision: Arc::new(supervision),
            metrics: Metrics::new(),
            changed: Arc::new(Notify::new()),
            vendor: None,
        };
        let addr = ModelActor::new(
            spawn_opts("/no/such/llm-node-worker".into()),
            Duration::from_secs(1),
            shared,
        )
        .start();
        let (virtual_start, real_start) = (tokio::time::Instant::now(), Instant::now());
        addr.send(Load { gpus: None }).await.unwrap().unwrap();
        loop {
            let status = addr.send(GetStatus).await.unwrap();
            if let ModelState::Failed { .. } = status.state {
                assert_eq!(
                    status.restarts, 4,
                    "five starts: the first and four restarts"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = virtual_start.elapsed();
        assert!(waited >= Duration::from_millis(3750), "{waited:?}");
        assert!(waited < Duration::from_millis(7600), "{waited:?}");
        assert!(
            real_start.elapsed() < Duration::from_secs(3),
            "virtual, not real, time"
        );
    }

    #[actix_rt::test]
    async fn a_worker_dying_during_start_reports_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("w");
        std::fs::write(&bin, "#!/bin/sh\necho 'ERROR no gpu' >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let addr = ModelActor::new(spawn_opts(bin), Duration::from_secs(1), shared(1)).start();
        addr.send(Load { gpus: None }).await.unwrap().unwrap();
        match addr.send(WaitReady).await.unwrap() {
            ModelState::Failed { reason } => assert!(reason.contains("no gpu"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        let status = addr.send(GetStatus).await.unwrap();
        assert_eq!(status.pid, None);
    }

    #[test]
    fn liveness_kills_are_reported_as_what_happened() {
        let stuck = LivenessKill::Stuck {
            busy: Duration::from_millis(312_400),
            limit: Duration::from_secs(300),
        };
        assert_eq!(
            stuck.reason(),
            "engine stuck in one step for 312 s (limit 300 s)"
        );
        assert_eq!(
            stuck.last_exit(),
            "killed: engine stuck in one step for 312 s"
        );
        let short = LivenessKill::Stuck {
            busy: Duration::from_millis(2001),
            limit: Duration::from_secs(2),
        };
        assert_eq!(
            short.reason(),
            "engine stuck in one step for 2001 ms (limit 2000 ms)"
        );
        assert_eq!(
            LivenessKill::Unresponsive.reason(),
            "unresponsive to liveness pings"
        );
        assert_eq!(
            LivenessKill::Unresponsive.last_exit(),
            "killed: unresponsive"
        );
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(Some(std::process::ExitStatus::from_raw(256))),
            "exit code 1"
        );
        assert_eq!(
            describe_exit(Some(std::process::ExitStatus::from_raw(9))),
            "signal 9 (SIGKILL)"
        );
        assert_eq!(describe_exit(None), "unknown status");
    }
}
