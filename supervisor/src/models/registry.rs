//! The set of models the node serves, and the decisions that involve more
//! than one of them: on-demand loading, the loaded-models limit (eviction),
//! GPU placement, admission, and idle unloading.
//!
//! Each model is a [`ModelActor`]; this module only asks actors to act. Loads
//! are serialised by one lock so two loads never evict for each other, and a
//! load that finds no model it may evict waits for one to become idle
//! (woken by [`Shared::changed`], never by polling) until its deadline.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use futures_util::future::join_all;
use tokio::sync::Notify;

use super::actor::{
    Acquire, Acquired, GetStatus, KeepAlive, Load, ModelActor, ModelStatus, Reconfigure,
    RemoveIfIdle, Restart, SetGpus, SetKeepAlive, Shared, Stop, Unload, WaitReady,
};
use super::error::ModelsError;
use super::lease::Lease;
use super::names::canonical;
use super::profile::ModelProfile;
use super::reload::{self, ConfigSource, ReloadReport};
use super::spec::ModelSpec;
use super::state::ModelState;
use super::supervision::Supervision;
use super::ModelSettings;
use crate::gpu::GpuProbe;
#[cfg(test)]
use crate::gpu::NoGpu;
use crate::metrics::Metrics;
use crate::policy::admission::{self, Admission};
use crate::policy::eviction::{self, Candidate};
use crate::policy::memory;
use crate::policy::placement::{self, GpuState, ModelSize, Placement};
use crate::worker::SpawnOptions;
use llm_node_protocol::WorkerConfig;

/// KV-cache bytes per token assumed by placement when the GGUF header cannot
/// be read: 128 KiB, what a 7–8B model
/// with grouped-query attention and an f16 cache needs (conservative for smaller ones).
const KV_BYTES_PER_TOKEN_ESTIMATE: u64 = 128 << 10;

/// Reads a GGUF's shape for the memory estimate. Set by the node at start
/// (`store::gguf::shape_of`): `store` uses this module, so this module must
/// not import `store` (tests/layers.rs). Unset, placement falls back to the
/// file-size guess and `/admin/models` shows no estimate.
static SHAPE_READER: std::sync::OnceLock<fn(&std::path::Path) -> Option<memory::ModelShape>> =
    std::sync::OnceLock::new();

/// Installs the GGUF shape reader (once per process).
pub fn set_shape_reader(reader: fn(&std::path::Path) -> Option<memory::ModelShape>) {
    let _ = SHAPE_READER.set(reader);
}

/// The memory estimate of the GGUF at `path` run with `worker`'s settings
/// (see [`memory`]), its draft model's (same context, F16 KV, as the worker
/// makes it) added; `None` when a header cannot be read.
pub fn estimate(path: &std::path::Path, worker: &WorkerConfig) -> Option<memory::Estimate> {
    let reader = SHAPE_READER.get()?;
    let shape = reader(path)?;
    let settings = memory::Settings {
        ctx_per_slot: u64::from(worker.ctx_per_slot),
        parallel: u64::from(worker.parallel),
        n_ubatch: u64::from(worker.batch_size.clamp(16, 512)),
        cache_k_bytes: worker.cache_type_k.bytes_per_element(),
        cache_v_bytes: worker.cache_type_v.bytes_per_element(),
        n_gpu_layers: worker.n_gpu_layers,
    };
    let model = memory::estimate(&shape, &settings);
    let Some(draft) = &worker.draft_model_path else {
        return Some(model);
    };
    let f16 = llm_node_protocol::KvCacheType::F16.bytes_per_element();
    let draft_settings = memory::Settings {
        cache_k_bytes: f16,
        cache_v_bytes: f16,
        ..settings
    };
    let draft = memory::estimate(&reader(std::path::Path::new(draft))?, &draft_settings);
    Some(model.plus(&draft))
}

/// GPU bytes placement must find for the model at `path`: the estimate's
/// device part, or (header unreadable) the file size plus a KV guess.
fn device_need(path: &std::path::Path, worker: Option<&WorkerConfig>) -> u64 {
    if let Some(e) = worker.and_then(|w| estimate(path, w)) {
        return e.device();
    }
    placement::estimate_need(ModelSize {
        weights_bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        ctx_per_slot: worker.map_or(4096, |w| u64::from(w.ctx_per_slot)),
        parallel: worker.map_or(1, |w| u64::from(w.parallel)),
        kv_bytes_per_token: KV_BYTES_PER_TOKEN_ESTIMATE,
    })
}

/// One model: its spec and the actor that owns it (reached only through [`Models`]).
#[derive(Clone)]
pub struct ModelEntry {
    pub spec: ModelSpec,
    addr: Addr<ModelActor>,
    /// Loaded at startup and never evicted.
    pub preload: bool,
    /// Its own settings (aliases, worker settings, `max_tokens`, sampling
    /// defaults); the default profile for models served from flags alone.
    pub profile: Arc<ModelProfile>,
}

impl ModelEntry {
    /// Whether `key` (a [`canonical`] name) is this model's id or one of its aliases.
    fn answers_to(&self, key: &str) -> bool {
        canonical(&self.spec.name) == key
            || self.profile.aliases.iter().any(|a| canonical(a) == key)
    }
}

/// How new actors are made (for models added at run time).
#[derive(Clone)]
struct Factory {
    settings: ModelSettings,
}

impl Factory {
    fn actor(
        &self,
        spec: &ModelSpec,
        profile: &ModelProfile,
        chat_template: Option<String>,
        shared: Shared,
    ) -> ModelActor {
        let spawn = self.spawn_options(spec, profile, chat_template);
        ModelActor::new(spawn, self.settings.shutdown_timeout, shared)
    }

    /// How `spec`'s worker is spawned: the node's settings with `profile`'s
    /// applied; the template is the profile's, else `--chat-template`'s, else
    /// `chat_template` (the store's).
    fn spawn_options(
        &self,
        spec: &ModelSpec,
        profile: &ModelProfile,
        chat_template: Option<String>,
    ) -> SpawnOptions {
        let s = &self.settings;
        let mut config = s.worker_config_for(spec, profile);
        config.chat_template = profile
            .chat_template
            .clone()
            .or_else(|| s.chat_templates.get(&spec.key()).cloned())
            .or(chat_template);
        SpawnOptions {
            bin: s.bin.clone(),
            config,
            ready_timeout: s.ready_timeout,
            env: Vec::new(),
            lanes: s.lanes.clone(),
            stream_buffer: s.stream_buffer,
        }
    }
}

/// The node's models. Cheap to clone.
#[derive(Clone)]
pub struct Models {
    inner: Arc<Inner>,
}

struct Inner {
    /// In configuration order; few enough for linear lookups.
    entries: RwLock<Vec<ModelEntry>>,
    shared: Shared,
    factory: Option<Factory>,
    gpus: Arc<dyn GpuProbe>,
    /// Serialises load decisions.
    load_lock: tokio::sync::Mutex<()>,
    /// How long a request may wait for its model to load (capacity included).
    load_timeout: Duration,
    /// Where [`Models::reload`] reads the configured models from, and the
    /// keys of the models it configured last (models added by pulls are not
    /// among them, so a reload never removes them). The mutex also
    /// serialises reloads.
    config: tokio::sync::Mutex<Configured>,
    /// Whether the idle reaper runs.
    reaper: std::sync::atomic::AtomicBool,
}

/// The configuration a reload compares against.
#[derive(Default)]
struct Configured {
    source: Option<ConfigSource>,
    keys: Vec<String>,
}

/// Why a model could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddModelError {
    #[error("a model named {0} already exists")]
    Exists(String),
    #[error("model file {0:?} does not exist")]
    MissingFile(PathBuf),
    #[error("this node cannot start new models")]
    NoFactory,
}

impl Models {
    /// Creates one actor per spec and starts loading the preloaded ones.
    /// Must run inside an actix `System`.
    pub fn start(
        settings: ModelSettings,
        specs: Vec<(ModelSpec, ModelProfile)>,
        supervision: Arc<Supervision>,
        metrics: Metrics,
        gpus: Arc<dyn GpuProbe>,
    ) -> Self {
        let shared = Shared {
            supervision,
            metrics,
            changed: Arc::new(Notify::new()),
            vendor: gpus.devices().first().map(|d| d.vendor),
        };
        let load_timeout = settings.ready_timeout;
        let factory = Factory { settings };
        let models = Self::with_parts(Some(factory), shared, gpus, load_timeout);
        let keys = specs.iter().map(|(s, _)| s.key()).collect();
        for (spec, profile) in specs {
            let preload = models.preloads(&spec, &profile);
            let _ = models.insert(spec, None, profile, preload);
        }
        if let Ok(mut configured) = models.inner.config.try_lock() {
            configured.keys = keys;
        }
        models.preload();
        models.spawn_reaper();
        models
    }

    fn with_parts(
        factory: Option<Factory>,
        shared: Shared,
        gpus: Arc<dyn GpuProbe>,
        load_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: RwLock::new(Vec::new()),
                shared,
                factory,
                gpus,
                load_lock: tokio::sync::Mutex::new(()),
                load_timeout,
                config: tokio::sync::Mutex::new(Configured::default()),
                reaper: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Models served by already connected clients (unit tests).
    #[cfg(test)]
    pub(crate) fn attached(entries: Vec<(ModelSpec, Addr<ModelActor>)>) -> Self {
        Self::attached_with(entries, true)
    }

    /// As [`Self::attached`]; `preload: false` leaves them stopped until asked for.
    #[cfg(test)]
    pub(crate) fn attached_with(
        entries: Vec<(ModelSpec, Addr<ModelActor>)>,
        preload: bool,
    ) -> Self {
        let shared = Shared {
            supervision: Arc::new(super::supervision::test_supervision()),
            metrics: Metrics::new(),
            changed: Arc::new(Notify::new()),
            vendor: None,
        };
        let models = Self::with_parts(None, shared, Arc::new(NoGpu), Duration::from_secs(5));
        {
            let mut map = models.write();
            for (spec, addr) in entries {
                map.push(ModelEntry {
                    spec,
                    addr,
                    preload,
                    profile: Arc::default(),
                });
            }
        }
        models.preload();
        models
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<ModelEntry>> {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<ModelEntry>> {
        self.inner.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    pub fn supervision(&self) -> &Supervision {
        &self.inner.shared.supervision
    }

    pub fn gpu_probe(&self) -> &Arc<dyn GpuProbe> {
        &self.inner.gpus
    }

    /// Whether `spec` loads at start: its profile's `preload`, else `--preload`.
    fn preloads(&self, spec: &ModelSpec, profile: &ModelProfile) -> bool {
        profile
            .preload
            .unwrap_or_else(|| self.inner.shared.supervision.preload.includes(&spec.key()))
    }

    /// The GPUs `spec` is pinned to: its profile's `pin`, else `--pin`'s.
    fn pins(&self, spec: &ModelSpec, profile: &ModelProfile) -> Option<Vec<u32>> {
        profile
            .pin
            .clone()
            .or_else(|| self.inner.shared.supervision.pins.get(&spec.key()).cloned())
    }

    fn insert(
        &self,
        spec: ModelSpec,
        chat_template: Option<String>,
        profile: ModelProfile,
        preload: bool,
    ) -> Result<ModelEntry, AddModelError> {
        let factory = self
            .inner
            .factory
            .as_ref()
            .ok_or(AddModelError::NoFactory)?;
        let mut map = self.write();
        let taken = std::iter::once(&spec.name).chain(&profile.aliases);
        for name in taken {
            let wanted = canonical(name);
            if map.iter().any(|e| e.answers_to(&wanted)) {
                return Err(AddModelError::Exists(name.clone()));
            }
        }
        let mut actor = factory.actor(&spec, &profile, chat_template, self.inner.shared.clone());
        if let Some(gpus) = self.pins(&spec, &profile) {
            actor.pin(gpus);
        }
        let entry = ModelEntry {
            spec,
            addr: actor.start(),
            preload,
            profile: Arc::new(profile),
        };
        map.push(entry.clone());
        Ok(entry)
    }

    /// Adds a model at run time (a pulled model) with its own `profile` (its
    /// manifest's defaults). With `load`, it starts loading now (respecting the
    /// loaded-models limit); otherwise on its first request.
    ///
    /// # Errors
    /// [`AddModelError`] for a duplicate name or a missing file.
    pub async fn add(
        &self,
        spec: ModelSpec,
        chat_template: Option<String>,
        profile: ModelProfile,
        load: bool,
    ) -> Result<(), AddModelError> {
        if !spec.path.is_file() {
            return Err(AddModelError::MissingFile(spec.path));
        }
        let entry = self.insert(spec, chat_template, profile, false)?;
        tracing::info!(model = %entry.spec.name, path = ?entry.spec.path, "model added");
        if load {
            let deadline = Instant::now() + self.inner.load_timeout;
            if let Err(e) = self.ensure_loaded(&entry, deadline).await {
                tracing::warn!(model = %entry.spec.name, "added but not loaded: {e}");
            }
        }
        Ok(())
    }

    /// Loads the preloaded models, up to the loaded-models limit.
    fn preload(&self) {
        let max = self.inner.shared.supervision.max_loaded;
        let preload: Vec<ModelEntry> = self.read().iter().filter(|e| e.preload).cloned().collect();
        for (i, entry) in preload.into_iter().enumerate() {
            if max > 0 && i >= max {
                tracing::warn!(model = %entry.spec.name, max, "not preloaded: loaded-models limit reached");
                continue;
            }
            let gpus = self.place(&entry, &[]).ok().flatten();
            entry.addr.do_send(Load { gpus });
        }
    }

    /// Stops serving `name` if it is idle, and forgets it: the actor decides
    /// "idle" and retires itself in one step, so no request can slip in between.
    ///
    /// # Errors
    /// [`ModelsError::NotFound`]; [`ModelsError::InUse`] while a request holds
    /// it or it is starting, draining or stopping.
    pub async fn remove_if_idle(&self, name: &str) -> Result<(), ModelsError> {
        let entry = self.entry(name)?;
        if !entry.addr.send(RemoveIfIdle).await? {
            return Err(ModelsError::InUse(entry.spec.name));
        }
        let key = entry.spec.key();
        self.write().retain(|e| e.spec.key() != key);
        let _ = entry.addr.send(Stop).await;
        tracing::info!(model = %entry.spec.name, "model no longer served");
        Ok(())
    }

    /// The entry of `name`.
    ///
    /// # Errors
    /// [`ModelsError::NotFound`].
    pub fn entry(&self, name: &str) -> Result<ModelEntry, ModelsError> {
        self.get(name)
            .ok_or_else(|| ModelsError::NotFound(name.to_string()))
    }

    /// The status of `entry`'s model.
    ///
    /// # Errors
    /// [`ModelsError::ActorGone`] at shutdown.
    pub async fn status(&self, entry: &ModelEntry) -> Result<ModelStatus, ModelsError> {
        Ok(entry.addr.send(GetStatus).await?)
    }

    /// Pins `entry` to `gpus` from its next start on.
    ///
    /// # Errors
    /// [`ModelsError::ActorGone`] at shutdown.
    pub async fn set_gpus(&self, entry: &ModelEntry, gpus: Vec<u32>) -> Result<(), ModelsError> {
        Ok(entry.addr.send(SetGpus(gpus)).await?)
    }

    /// Drains (unless `force`) and stops `entry`'s worker.
    ///
    /// # Errors
    /// [`ModelsError::Conflict`] while it is already draining or stopping.
    pub async fn unload(&self, entry: &ModelEntry, force: bool) -> Result<(), ModelsError> {
        entry
            .addr
            .send(Unload { force })
            .await?
            .map_err(ModelsError::Conflict)
    }

    /// Drains (unless `force`), stops and starts `entry`'s worker again.
    ///
    /// # Errors
    /// [`ModelsError::Conflict`] while it is already draining or stopping.
    pub async fn restart(&self, entry: &ModelEntry, force: bool) -> Result<(), ModelsError> {
        entry
            .addr
            .send(Restart { force })
            .await?
            .map_err(ModelsError::Conflict)
    }

    /// Waits until `entry` is not starting.
    ///
    /// # Errors
    /// [`ModelsError::Unavailable`] with the state it settled in, unless ready.
    pub async fn wait_settled(&self, entry: &ModelEntry) -> Result<(), ModelsError> {
        match entry.addr.send(WaitReady).await? {
            ModelState::Ready => Ok(()),
            state => Err(ModelsError::Unavailable {
                model: entry.spec.name.clone(),
                state,
            }),
        }
    }

    /// The model `name` names: its exact id (any case) first, else the one
    /// whose id or one of whose aliases resolves to the same model as Ollama
    /// resolves names ([`super::names::canonical`]: `tiny` is `tiny:latest`, …).
    pub fn get(&self, name: &str) -> Option<ModelEntry> {
        let key = name.to_lowercase();
        let entries = self.read();
        if let Some(e) = entries.iter().find(|e| e.spec.key() == key) {
            return Some(e.clone());
        }
        let wanted = canonical(name);
        entries.iter().find(|e| e.answers_to(&wanted)).cloned()
    }

    /// Remembers where [`Models::reload`] reads the configuration from.
    pub async fn set_config_source(&self, source: ConfigSource) {
        self.inner.config.lock().await.source = Some(source);
    }

    /// Reads the configuration again and applies it ([`reload::plan`]): new
    /// models are added (and loaded when preloaded), models whose worker
    /// settings changed are drained and restarted, models whose other settings
    /// changed take them at once, removed ones are drained and unloaded, the
    /// rest are untouched. Reloads are serialised.
    ///
    /// # Errors
    /// [`ModelsError::Config`] with the reason when the configuration cannot be
    /// read: nothing changes then.
    pub async fn reload(&self) -> Result<ReloadReport, ModelsError> {
        let mut configured = self.inner.config.lock().await;
        let source = configured.source.clone().ok_or_else(|| {
            ModelsError::Config("this node has no configuration to reload".into())
        })?;
        let next = source().map_err(ModelsError::Config)?;
        let current: Vec<(ModelSpec, Arc<ModelProfile>)> = self
            .read()
            .iter()
            .filter(|e| configured.keys.contains(&e.spec.key()))
            .map(|e| (e.spec.clone(), e.profile.clone()))
            .collect();
        let keys: Vec<String> = next.iter().map(|(s, _)| s.key()).collect();
        let plan = reload::plan(&current, next);
        let report = self.apply(plan).await;
        configured.keys = keys;
        tracing::info!(added = ?report.added, restarted = ?report.restarted,
            updated = ?report.updated, removed = ?report.removed, "configuration reloaded");
        Ok(report)
    }

    /// Carries out a reload's plan (see [`Models::reload`]).
    async fn apply(&self, plan: reload::Plan) -> ReloadReport {
        let mut report = ReloadReport {
            unchanged: plan.unchanged,
            ..ReloadReport::default()
        };
        for key in plan.remove {
            let Some(entry) = self.get(&key) else {
                continue;
            };
            self.write().retain(|e| e.spec.key() != key);
            // Drains its requests (up to the drain timeout), then stops it.
            let addr = entry.addr.clone();
            actix_rt::spawn(async move {
                let _ = addr.send(Unload { force: false }).await;
                let _ = addr.send(Stop).await;
            });
            report.removed.push(entry.spec.name);
        }
        for (spec, profile) in plan.update {
            let preload = self.preloads(&spec, &profile);
            if let Some(e) = self.write().iter_mut().find(|e| e.spec.key() == spec.key()) {
                e.spec = spec.clone();
                e.preload = preload;
                e.profile = Arc::new(profile);
            }
            report.updated.push(spec.name);
        }
        for (spec, profile) in plan.restart {
            let Some(factory) = self.inner.factory.as_ref() else {
                continue;
            };
            let spawn = factory.spawn_options(&spec, &profile, None);
            let gpus = self.pins(&spec, &profile).unwrap_or_default();
            let preload = self.preloads(&spec, &profile);
            let Some(entry) = self.get(&spec.name) else {
                continue;
            };
            if let Some(e) = self.write().iter_mut().find(|e| e.spec.key() == spec.key()) {
                e.spec = spec.clone();
                e.preload = preload;
                e.profile = Arc::new(profile);
            }
            let restarted = entry.addr.send(Reconfigure { spawn, gpus }).await;
            if !matches!(restarted, Ok(Ok(()))) {
                tracing::warn!(model = %spec.name, "reload: restart refused: {restarted:?}");
            }
            report.restarted.push(spec.name);
        }
        for (spec, profile) in plan.add {
            let preload = self.preloads(&spec, &profile);
            let name = spec.name.clone();
            match self.insert(spec, None, profile, preload) {
                Ok(entry) if preload => {
                    let gpus = self.place(&entry, &[]).ok().flatten();
                    entry.addr.do_send(Load { gpus });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(model = %name, "reload: not added: {e}");
                    continue;
                }
            }
            report.added.push(name);
        }
        self.spawn_reaper();
        self.inner.shared.changed.notify_waiters();
        report
    }

    /// Every model, in configuration order.
    pub fn entries(&self) -> Vec<ModelEntry> {
        self.read().clone()
    }

    /// The status of every model, in configuration order.
    pub async fn statuses(&self) -> Vec<(ModelEntry, ModelStatus)> {
        let entries = self.entries();
        let statuses = join_all(entries.iter().map(|e| e.addr.send(GetStatus))).await;
        entries
            .into_iter()
            .zip(statuses)
            .filter_map(|(e, s)| s.ok().map(|s| (e, s)))
            .collect()
    }

    /// Waits until no preloaded model is starting; returns each one's state.
    pub async fn wait_started(&self) -> Vec<(String, ModelState)> {
        let entries: Vec<ModelEntry> = self.entries().into_iter().filter(|e| e.preload).collect();
        let states = join_all(entries.iter().map(|e| e.addr.send(WaitReady))).await;
        entries
            .iter()
            .zip(states)
            .map(|(e, s)| (e.spec.name.clone(), s.unwrap_or(ModelState::Stopped)))
            .collect()
    }

    /// Sends `filter` (`RUST_LOG` syntax, already checked) to every running
    /// worker, and to those that become ready later.
    pub async fn set_worker_log_level(&self, filter: &str) {
        join_all(
            self.entries()
                .iter()
                .map(|e| e.addr.send(super::actor::SetLogLevel(filter.to_string()))),
        )
        .await;
    }

    /// Stops every worker now (node shutdown, after draining).
    pub async fn stop_all(&self) {
        join_all(self.entries().iter().map(|e| e.addr.send(Stop))).await;
    }

    /// Resolves on the next state change or end of a model's last request
    /// (call `enable()` on it before checking a condition, then await it).
    pub fn idle_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.shared.changed.notified()
    }

    /// Requests in flight over all models.
    pub async fn total_in_flight(&self) -> usize {
        self.statuses().await.iter().map(|(_, s)| s.in_flight).sum()
    }

    /// Lends `model` to one request, loading it first if needed. The lease
    /// counts the request in flight from now until it (and its streams) drop.
    ///
    /// # Errors
    /// [`ModelsError::NotFound`]; [`ModelsError::Unavailable`] when the model is
    /// failed, backing off or draining; [`ModelsError::NoCapacity`] when it cannot
    /// load in time; [`ModelsError::QueueFull`] when its queue is full.
    pub async fn acquire(&self, model: &str) -> Result<Lease, ModelsError> {
        let entry = self.entry(model)?;
        let deadline = Instant::now() + self.inner.load_timeout;
        loop {
            let unavailable = match entry.addr.send(Acquire).await? {
                Ok(acquired) => {
                    self.admit(&entry, &acquired)?;
                    let Acquired { client, guard, .. } = acquired;
                    return Ok(Lease::new(entry.spec.name.clone(), client, guard));
                }
                Err(u) => u,
            };
            let refused = ModelsError::Unavailable {
                model: unavailable.model,
                state: unavailable.state.clone(),
            };
            match unavailable.state {
                ModelState::Stopped => self.ensure_loaded(&entry, deadline).await?,
                ModelState::Starting => {
                    let wait = tokio::time::timeout_at(deadline.into(), entry.addr.send(WaitReady));
                    if wait.await.is_err() {
                        return Err(refused);
                    }
                }
                _ => return Err(refused),
            }
        }
    }

    /// Loads `entry` (admin): like an on-demand load, evicting if needed.
    ///
    /// # Errors
    /// [`ModelsError::NoCapacity`] when no capacity frees up in time.
    pub async fn load(&self, entry: &ModelEntry) -> Result<(), ModelsError> {
        let deadline = Instant::now() + self.inner.load_timeout;
        self.ensure_loaded(entry, deadline).await
    }

    /// Bounded queue: refuse when the worker's slots and the queue are full.
    fn admit(&self, entry: &ModelEntry, acquired: &Acquired) -> Result<(), ModelsError> {
        let slots = acquired.slots;
        let in_flight = acquired.in_flight;
        let load = admission::Load {
            in_flight,
            queued: in_flight.saturating_sub(slots),
            slots,
            max_queue: self.inner.shared.supervision.max_queue,
        };
        match admission::admit(load) {
            Admission::Reject => Err(ModelsError::QueueFull(entry.spec.name.clone())),
            Admission::Run | Admission::Queue => Ok(()),
        }
    }

    /// Starts loading `entry` once the loaded-models limit allows, evicting
    /// the least recently used idle model if needed.
    ///
    /// Waits are woken by `Shared::changed` (a state change, or a model's last
    /// request or lease ending); a request holding a lease is busy from the moment
    /// it was lent, so no timer is needed to cover its hand-off.
    async fn ensure_loaded(
        &self,
        entry: &ModelEntry,
        deadline: Instant,
    ) -> Result<(), ModelsError> {
        let _serial = tokio::time::timeout_at(deadline.into(), self.inner.load_lock.lock())
            .await
            .map_err(|_| capacity_error(&entry.spec.name))?;
        let max = self.inner.shared.supervision.max_loaded;
        loop {
            // Register for wake-ups before looking, so no change is missed.
            let changed = self.inner.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let statuses = self.statuses().await;
            let mine = statuses
                .iter()
                .find(|(e, _)| e.spec.key() == entry.spec.key());
            if mine.is_some_and(|(_, s)| s.state.is_loaded()) {
                return Ok(());
            }
            let loaded = statuses.iter().filter(|(_, s)| s.state.is_loaded()).count();
            if max == 0 || loaded < max {
                let pins = mine.map(|(_, s)| s.gpus.clone()).unwrap_or_default();
                return self.start_loading(entry, &pins).await;
            }
            let candidates = eviction_candidates(&statuses);
            if let Some(victim) = eviction::choose_victim(&candidates).and_then(|v| self.get(v)) {
                tracing::info!(model = %entry.spec.name, evicting = %victim.spec.name,
                    "loaded-models limit reached; unloading the least recently used idle model");
                let _ = victim.addr.send(Unload { force: false }).await?;
                continue;
            }
            tracing::info!(model = %entry.spec.name, "waiting for a loaded model to become idle");
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return Err(capacity_error(&entry.spec.name));
            }
        }
    }

    /// Places `entry` (on `pins` when it had GPUs) and tells its actor to load.
    async fn start_loading(&self, entry: &ModelEntry, pins: &[u32]) -> Result<(), ModelsError> {
        let gpus = self.place(entry, pins).map_err(|e| {
            tracing::error!(model = %entry.spec.name, "placement: {e}");
            capacity_error(&entry.spec.name)
        })?;
        entry
            .addr
            .send(Load { gpus })
            .await?
            .map_err(|_| capacity_error(&entry.spec.name))
    }

    /// GPUs for `entry` (`None`: CPU, or no pinning needed).
    fn place(
        &self,
        entry: &ModelEntry,
        pins: &[u32],
    ) -> Result<Option<Vec<u32>>, placement::PlacementError> {
        let devices = self.inner.gpus.devices();
        if devices.is_empty() {
            return Ok(None);
        }
        let worker = self
            .inner
            .factory
            .as_ref()
            .map(|f| f.settings.worker_config_for(&entry.spec, &entry.profile));
        let need = device_need(&entry.spec.path, worker.as_ref());
        let gpus: Vec<GpuState> = devices
            .iter()
            .map(|d| GpuState {
                index: d.index,
                total_bytes: d.total_bytes,
                free_bytes: d.free_bytes,
            })
            .collect();
        // A model may span GPUs unless its profile or its split mode says not.
        let split = entry.profile.allow_split != Some(false)
            && worker
                .as_ref()
                .is_none_or(|w| w.split_mode != llm_node_protocol::SplitMode::None);
        let policy = &self.inner.shared.supervision.placement;
        match placement::place(need, pins, split, &gpus, policy)? {
            Placement::Cpu => Ok(None),
            Placement::Gpus(list) => {
                tracing::info!(model = %entry.spec.name, gpus = ?list, need_mib = need >> 20,
                    simulated = devices.iter().any(|d| d.simulated), "placed");
                Ok(Some(list))
            }
        }
    }

    /// The memory estimate of `entry` with the node's worker settings (`None`
    /// when its GGUF header cannot be read), for `/admin/models`. Without a
    /// GPU nothing is offloaded, whatever `n_gpu_layers` says.
    pub fn estimate(&self, entry: &ModelEntry) -> Option<memory::Estimate> {
        let mut worker = self.worker_config(entry)?;
        if self.inner.gpus.devices().is_empty() {
            worker.n_gpu_layers = 0;
        }
        estimate(&entry.spec.path, &worker)
    }

    /// The settings `entry`'s worker runs with (the node's, with its profile
    /// applied); `None` in tests without a worker binary.
    pub fn worker_config(&self, entry: &ModelEntry) -> Option<WorkerConfig> {
        let f = self.inner.factory.as_ref()?;
        Some(f.settings.worker_config_for(&entry.spec, &entry.profile))
    }

    /// Unloads idle models whose TTL has passed (preloaded ones are kept).
    /// Runs once some TTL is configured (at start or by a reload), at most
    /// one per node.
    fn spawn_reaper(&self) {
        if self.inner.reaper.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let s = &self.inner.shared.supervision;
        let profiles: Vec<Duration> = self.read().iter().filter_map(|e| e.profile.ttl).collect();
        let shortest = s
            .ttls
            .values()
            .chain(std::iter::once(&s.default_ttl))
            .chain(&profiles)
            .filter(|d| !d.is_zero())
            .min()
            .copied();
        let Some(shortest) = shortest else {
            return;
        };
        let period = (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        self.inner
            .reaper
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let models = self.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                models.reap_idle().await;
            }
        });
    }

    /// Applies a client's `keep_alive` to `entry`'s loaded worker: it then
    /// stays loaded that long after its last request (or forever), whatever
    /// the configured TTL; the idle reaper unloads it as it would at its TTL.
    ///
    /// # Errors
    /// [`ModelsError::ActorGone`] at shutdown.
    pub async fn keep_alive(&self, entry: &ModelEntry, keep: KeepAlive) -> Result<(), ModelsError> {
        entry.addr.send(SetKeepAlive(keep)).await?;
        if let KeepAlive::For(_) = keep {
            // The periodic reaper runs only when some TTL is configured: look
            // once more when this one runs out.
            let models = self.clone();
            actix_rt::spawn(async move {
                // A little past it: the request's end marks the model used.
                let margin = Duration::from_millis(250);
                tokio::time::sleep(Duration::from_secs(keep.ttl_secs()) + margin).await;
                models.reap_idle().await;
            });
        }
        Ok(())
    }

    async fn reap_idle(&self) {
        let now = Instant::now();
        let statuses = self.statuses().await;
        let candidates: Vec<Candidate> = statuses
            .iter()
            .filter(|(_, s)| s.state == ModelState::Ready)
            .map(|(e, s)| Candidate {
                name: e.spec.key(),
                busy_state: false,
                active_requests: s.in_flight,
                pinned: e.preload,
                last_used: now.checked_sub(s.idle_for).unwrap_or(now),
            })
            .collect();
        let s = &self.inner.shared.supervision;
        let ttl = |key: &str| {
            let kept = statuses.iter().find(|(e, _)| e.spec.key() == key);
            match kept.and_then(|(_, st)| st.keep_alive) {
                Some(keep) => keep.ttl_secs(),
                None => kept
                    .and_then(|(e, _)| e.profile.ttl)
                    .unwrap_or_else(|| s.ttl(key))
                    .as_secs(),
            }
        };
        for key in eviction::expired(&candidates, ttl, now) {
            if let Some(entry) = self.get(key) {
                tracing::info!(model = %entry.spec.name, "idle TTL reached; unloading");
                let _ = entry.addr.send(Unload { force: false }).await;
            }
        }
    }
}

/// The loaded models, as the eviction policy sees them.
fn eviction_candidates(statuses: &[(ModelEntry, ModelStatus)]) -> Vec<Candidate> {
    let now = Instant::now();
    statuses
        .iter()
        .filter(|(_, s)| s.state.is_loaded())
        .map(|(e, s)| Candidate {
            name: e.spec.key(),
            busy_state: s.state != ModelState::Ready,
            active_requests: s.in_flight,
            pinned: e.preload,
            last_used: now.checked_sub(s.idle_for).unwrap_or(now),
        })
        .collect()
}

fn capacity_error(model: &str) -> ModelsError {
    ModelsError::NoCapacity(model.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::testing::fake_models;

    /// The robustness issue asked whether admission reads and increments the
    /// count non-atomically. It does not: the actor's `Acquire` handler reads
    /// the count and takes the lease in one message, so each acquire sees a
    /// different count, and the one that would exceed the limit sees the limit.
    #[actix_rt::test]
    async fn concurrent_acquires_from_many_threads_never_exceed_the_queue_limit() {
        let (models, _fakes) = fake_models(&["m"]);
        let limit = 4 + models.supervision().max_queue; // the fake's slots, then the queue
        let held = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let arbiters: Vec<_> = (0..4).map(|_| actix::Arbiter::new()).collect();
        let per_thread = limit; // 4 × the limit in all
        for arbiter in &arbiters {
            let (models, held, done_tx) = (models.clone(), held.clone(), done_tx.clone());
            arbiter.spawn(async move {
                let tries = (0..per_thread).map(|_| models.acquire("m"));
                for result in join_all(tries).await {
                    let refused = match result {
                        Ok(lease) => {
                            held.lock().unwrap().push(lease);
                            false
                        }
                        Err(ModelsError::QueueFull(_)) => true,
                        Err(e) => panic!("unexpected {e}"),
                    };
                    let _ = done_tx.send(refused);
                }
            });
        }
        let (mut admitted, mut refused) = (0, 0);
        for _ in 0..4 * per_thread {
            match done_rx.recv().await.unwrap() {
                true => refused += 1,
                false => admitted += 1,
            }
        }
        assert!(admitted <= limit, "{admitted} admitted, limit {limit}");
        assert!(refused >= 3 * limit, "{refused} refused");
        assert_eq!(models.total_in_flight().await, admitted);
        held.lock().unwrap().clear();
        assert_eq!(models.total_in_flight().await, 0);
        assert!(models.acquire("m").await.is_ok());
        for arbiter in arbiters {
            arbiter.stop();
        }
    }
}
