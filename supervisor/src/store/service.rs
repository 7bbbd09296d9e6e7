//! The store inside a running node: the one pull runner, the one hot add,
//! startup registration and `rm`.
//!
//! Every pull goes through here: Ollama's `/api/pull` (a store name, pulled
//! again to update it) and the router's `/pull` and model sync (a file into the
//! router's named directories, [`super::file_pull`], or a store name). A pulled
//! model must be served by an actor that lives on the node's main arbiter (an
//! HTTP worker thread may go away), so callers only queue a [`PullOrder`]
//! ([`Service::submit`]); the runner started by [`Service::start`] on the main
//! arbiter pulls, registers the model with
//! [`Models::add`](crate::models::Models::add) and reports back over the
//! order's channel: progress lines, then the served id or the error.
//!
//! The runner runs at most [`CONCURRENT_PULLS`] pulls at once, pulls one id
//! once (an order for an id already being pulled joins that pull and hears its
//! end), and answers at once an order that wants nothing when the id is served.
//! Removal needs no new actor and runs in the handler.
//!
//! # Bounds
//! At most `--max-queued-pulls` distinct pulls wait for a turn; one more is
//! refused at once ([`StoreError::Busy`]) until a pull ends. An order that
//! joins a pull under way is not counted again. Each order's events are a
//! [`pull_events`](super::pull_events) channel: progress coalesced, the end kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};

use super::file_pull::{FilePull, PulledFile};
pub use super::pull_events::PullEvent;
use super::pull_events::{self, PullEvents, PullSender};
use super::{jinja_template, ModelRef, Progress, Store, StoreError};
use crate::models::manifest_params;
use crate::models::profile::ModelProfile;
use crate::models::{AddModelError, ModelSpec, Models, ModelsError};

/// Pulls running at once; more wait their turn.
pub const CONCURRENT_PULLS: usize = 2;

/// Distinct pulls that may wait for a turn unless configured (`--max-queued-pulls`):
/// far more models than a node holds, few enough that a flood of distinct
/// names is refused instead of queued for days.
pub const DEFAULT_MAX_QUEUED_PULLS: usize = 64;

/// Where a pulled model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PullSource {
    /// A store name, into the Ollama layout; `refresh` pulls it again when
    /// present; `insecure` reaches a registry named by host over plain HTTP.
    Store {
        name: ModelRef,
        refresh: bool,
        insecure: bool,
    },
    /// A file into the router's named directories.
    File(FilePull),
}

/// One pull to run.
#[derive(Debug, Clone, PartialEq)]
pub struct PullOrder {
    /// The id to serve the model under.
    pub id: String,
    pub source: PullSource,
    /// Done at once, pulling nothing, when a model of this id (any case) is served.
    pub unless_served: bool,
    /// Start loading it once added (the router hears "done" when it can route to it).
    pub load: bool,
}

impl PullOrder {
    /// Ollama's `/api/pull`: pull `name` again, serve it under its `name:tag`, load on demand.
    /// (Set `insecure` in [`PullSource::Store`] for `"insecure": true`.)
    pub fn refresh(name: ModelRef) -> Self {
        Self {
            id: name.to_string(),
            source: PullSource::Store {
                name,
                refresh: true,
                insecure: false,
            },
            unless_served: false,
            load: false,
        }
    }

    /// This order, reaching a registry named by host over plain HTTP when
    /// `insecure` (Ollama's `"insecure": true`).
    pub fn insecure(mut self, insecure: bool) -> Self {
        if let PullSource::Store { insecure: i, .. } = &mut self.source {
            *i = insecure;
        }
        self
    }
}

/// A pull for the runner.
struct Job {
    order: PullOrder,
    events: PullSender,
}

/// Pulls queued or running, by lowercased id, with the listeners of the orders
/// that joined each. Shared by [`Service::submit`] (which counts, joins and
/// refuses) and the runner (which removes a pull when it ends, and tells its
/// joiners under the same lock, so no order joins a pull that has already told).
#[derive(Clone, Default)]
struct Pulls(Arc<Mutex<HashMap<String, Vec<PullSender>>>>);

impl Pulls {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<PullSender>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the pull of `key`: it, and every order that joined it, hear `result`.
    fn end(&self, key: &str, events: &PullSender, result: Result<String, StoreError>) {
        let joined = self.lock().remove(key).unwrap_or_default();
        for events in &joined {
            let shared = match &result {
                Ok(id) => Ok(id.clone()),
                Err(e) => Err(StoreError::Joined(e.to_string())),
            };
            finish(events, shared);
        }
        finish(events, result);
    }
}

/// The node's store service; shared with handlers as `web::Data<Service>`.
pub struct Service {
    pub store: Store,
    /// Where file pulls go (`--models-dir`, else the cache directory).
    models_dir: PathBuf,
    models: OnceLock<Models>,
    pulls: Pulls,
    /// Distinct pulls queued or running, at most.
    max_pulls: usize,
    /// Orders for the runner: one per entry of `pulls`, so never more than `max_pulls`.
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Service {
    /// A service whose runner lets `max_queued` distinct pulls wait for a turn.
    pub fn new(store: Store, models_dir: PathBuf, max_queued: usize) -> Self {
        let max_pulls = CONCURRENT_PULLS + max_queued;
        let (tx, rx) = mpsc::channel(max_pulls);
        Self {
            store,
            models_dir,
            models: OnceLock::new(),
            pulls: Pulls::default(),
            max_pulls,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Where file pulls go.
    pub fn models_dir(&self) -> &std::path::Path {
        &self.models_dir
    }

    /// Registers every stored model the node does not serve yet (loaded on first
    /// request, served under its `name:tag`) and starts the pull runner on the
    /// current arbiter, which must be the one owning the model actors. Once only;
    /// orders submitted before wait for it.
    pub async fn start(&self, models: Models) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let _ = self.models.set(models.clone());
        for model in self.store.list() {
            let id = model.name.to_string();
            let serving = Serving::of(&model);
            if let Err(e) = add(&models, id, model.gguf, serving, false).await {
                tracing::warn!(model = %model.name, "stored model not served: {e}");
            }
        }
        let runner = Runner {
            store: self.store.clone(),
            models,
            models_dir: self.models_dir.clone(),
            pulls: self.pulls.clone(),
            limit: Semaphore::new(CONCURRENT_PULLS),
        };
        actix_rt::spawn(Rc::new(runner).run(rx));
    }

    /// Queues a pull, or joins the pull of the same id under way; its events
    /// arrive on the returned channel.
    ///
    /// # Errors
    /// [`StoreError::Busy`] when `--max-queued-pulls` distinct pulls wait already.
    pub fn submit(&self, order: PullOrder) -> Result<PullEvents, StoreError> {
        let (events, rx) = pull_events::channel();
        let key = order.id.to_lowercase();
        let mut pulls = self.pulls.lock();
        if let Some(joined) = pulls.get_mut(&key) {
            tracing::info!(model = %order.id, "pull joins the one already under way");
            joined.retain(|l| !l.is_closed());
            joined.push(events);
            return Ok(rx);
        }
        let id = order.id.clone();
        let queued = pulls.len().saturating_sub(CONCURRENT_PULLS);
        let refused = || {
            tracing::warn!(model = %id, queued, "pull refused: the pull queue is full");
            StoreError::Busy { queued }
        };
        if pulls.len() >= self.max_pulls {
            return Err(refused());
        }
        match self.tx.try_send(Job { order, events }) {
            Ok(()) => {
                tracing::info!(model = %id, "model pull queued");
                pulls.insert(key, Vec::new());
            }
            // Not reached: the queue holds one order per entry of `pulls`.
            Err(TrySendError::Full(_)) => return Err(refused()),
            Err(TrySendError::Closed(job)) => finish(
                &job.events,
                Err(StoreError::Config("the node is not running".into())),
            ),
        }
        Ok(rx)
    }

    /// Stops serving `name` (refused while it has requests in flight or is
    /// loading; unloaded first when idle) and removes it from the store.
    ///
    /// # Errors
    /// [`StoreError::InUse`], [`StoreError::NotFound`], [`StoreError::ReadOnly`].
    pub async fn remove(&self, name: &ModelRef) -> Result<(), StoreError> {
        let id = name.to_string();
        if self.store.find(name)?.is_none() {
            return Err(StoreError::NotFound(id));
        }
        if let Some(models) = self.models.get() {
            match models.remove_if_idle(&id).await {
                Ok(()) | Err(ModelsError::NotFound(_)) => {}
                Err(_) => return Err(StoreError::InUse(id)),
            }
        }
        self.store.remove(name)
    }
}

impl Service {
    /// Gives the stored model `from` the name `to` (see [`super::copy`]) and
    /// serves it under `to`; a model served as `to` before is replaced
    /// (refused while it is in use).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::InUse`], [`StoreError::Layout`].
    pub async fn copy(&self, from: &ModelRef, to: &ModelRef) -> Result<(), StoreError> {
        let id = to.to_string();
        if self.store.find(from)?.is_none() {
            return Err(StoreError::NotFound(from.to_string()));
        }
        if let Some(models) = self.models.get() {
            match models.remove_if_idle(&id).await {
                Ok(()) | Err(ModelsError::NotFound(_)) => {}
                Err(_) => return Err(StoreError::InUse(id)),
            }
        }
        let (store, from2, to2) = (self.store.clone(), from.clone(), to.clone());
        let model = tokio::task::spawn_blocking(move || store.copy(&from2, &to2))
            .await
            .map_err(|e| StoreError::Config(format!("the copy stopped: {e}")))??;
        if let Some(models) = self.models.get() {
            let serving = Serving::of(&model);
            add(models, id, model.gguf, serving, false)
                .await
                .map_err(|e| StoreError::Config(format!("cannot serve the model: {e}")))?;
        }
        tracing::info!(from = %from, to = %to, "model copied");
        Ok(())
    }
}

/// How a stored model is served beyond its file: the Jinja template of its
/// manifest (a Go template is left to the GGUF's own), and the defaults of its
/// params layer ([`crate::models::manifest_params`]).
#[derive(Debug, Default)]
struct Serving {
    template: Option<String>,
    profile: ModelProfile,
}

impl Serving {
    fn of(model: &super::LocalModel) -> Self {
        let (profile, ignored) = manifest_params::profile_of(model.params.as_ref());
        if !ignored.is_empty() {
            tracing::info!(model = %model.name, ?ignored, "manifest parameters without a counterpart here are ignored");
        }
        Self {
            template: jinja_template(model.template.as_deref()),
            profile,
        }
    }
}

/// The one hot add: serves `path` as `id` (already served is fine).
async fn add(
    models: &Models,
    id: String,
    path: PathBuf,
    serving: Serving,
    load: bool,
) -> Result<(), AddModelError> {
    let spec = ModelSpec { name: id, path };
    match models
        .add(spec, serving.template, serving.profile, load)
        .await
    {
        Ok(()) | Err(AddModelError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs queued pulls on the main arbiter (see the module docs).
struct Runner {
    store: Store,
    models: Models,
    models_dir: PathBuf,
    /// Shared with [`Service::submit`], which has entered each job's id.
    pulls: Pulls,
    limit: Semaphore,
}

impl Runner {
    async fn run(self: Rc<Self>, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            let key = job.order.id.to_lowercase();
            if job.order.unless_served && self.serves(&job.order.id).await {
                tracing::info!(model = %job.order.id, "pull: model already served");
                self.pulls.end(&key, &job.events, Ok(job.order.id.clone()));
                continue;
            }
            actix_rt::spawn(self.clone().execute(job, key));
        }
    }

    async fn serves(&self, id: &str) -> bool {
        let statuses = self.models.statuses().await;
        statuses
            .iter()
            .any(|(entry, _)| entry.spec.name.eq_ignore_ascii_case(id))
    }

    /// Pulls and serves one order, then tells it and every order that joined it.
    async fn execute(self: Rc<Self>, job: Job, key: String) {
        let metrics = self.models.metrics().clone();
        let result = match self.limit.acquire().await {
            Ok(_permit) => {
                metrics.pulls_started.inc();
                self.pull_and_add(&job).await
            }
            Err(_) => Err(StoreError::Config("the pull runner stopped".into())),
        };
        metrics
            .pulls_finished
            .with_label_values(&[pull_outcome(&result)])
            .inc();
        match &result {
            Ok(_) => tracing::info!(model = %job.order.id, "model pulled and served"),
            Err(e) => tracing::error!(model = %job.order.id, "model pull failed: {e}"),
        }
        self.pulls.end(&key, &job.events, result);
    }

    async fn pull_and_add(&self, job: &Job) -> Result<String, StoreError> {
        let events = &job.events;
        let bytes = ByteMeter::new(self.models.metrics().pull_bytes.clone());
        let on_progress = move |p: Progress| {
            bytes.observe(&p);
            events.progress(p)
        };
        let order = &job.order;
        let pulled = match &order.source {
            PullSource::Store {
                name,
                refresh,
                insecure,
            } => {
                let model = match refresh {
                    true => self.store.pull_from(name, *insecure, &on_progress).await?,
                    false => self.store.ensure(name, &on_progress).await?,
                };
                (model.gguf.clone(), Serving::of(&model))
            }
            PullSource::File(file) => {
                let dir = &self.models_dir;
                let PulledFile { gguf, template } =
                    self.store.pull_file(file, dir, &on_progress).await?;
                let profile = ModelProfile::default();
                (gguf, Serving { template, profile })
            }
        };
        add(
            &self.models,
            order.id.clone(),
            pulled.0,
            pulled.1,
            order.load,
        )
        .await
        .map_err(|e| StoreError::Config(format!("cannot serve the model: {e}")))?;
        Ok(order.id.clone())
    }
}

/// A pull's outcome label: `ok`, or the failure's kind.
fn pull_outcome(result: &Result<String, StoreError>) -> &'static str {
    use super::StoreErrorKind as K;
    match result.as_ref().map_err(StoreError::kind) {
        Ok(_) => "ok",
        Err(K::NotFound) => "not_found",
        Err(K::InUse) => "in_use",
        Err(K::ReadOnly) => "read_only",
        Err(K::NoSpace) => "no_space",
        Err(K::Invalid) => "invalid",
        Err(K::Failed) => "failed",
        Err(K::Busy) => "busy",
    }
}

/// Turns a pull's progress lines (bytes completed so far, per digest) into
/// increments of the downloaded-bytes counter.
struct ByteMeter {
    counter: prometheus::IntCounter,
    /// Bytes already counted, per digest (or status line when it has none).
    seen: Mutex<HashMap<String, u64>>,
}

impl ByteMeter {
    fn new(counter: prometheus::IntCounter) -> Self {
        Self {
            counter,
            seen: Default::default(),
        }
    }

    fn observe(&self, p: &Progress) {
        let Some(completed) = p.completed else { return };
        let key = p.digest.clone().unwrap_or_else(|| p.status.clone());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.entry(key).or_default();
        // A resumed or restarted part may report less than before: only
        // growth is new bytes.
        if completed > *before {
            self.counter.inc_by(completed - *before);
            *before = completed;
        }
    }
}

/// The last events of an order: `success` (only once it is served: a client may
/// use the model as soon as it reads this), then the result.
fn finish(events: &PullSender, result: Result<String, StoreError>) {
    if result.is_ok() {
        events.progress(Progress::status("success"));
    }
    events.finish(result);
}
