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

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::{mpsc, Semaphore};

use super::file_pull::{FilePull, PulledFile};
use super::{jinja_template, ModelRef, Progress, Store, StoreError};
use crate::models::{AddModelError, ModelSpec, Models, ModelsError};

/// Pulls running at once; more wait their turn.
pub const CONCURRENT_PULLS: usize = 2;

/// What a pull reports: progress lines, then `Ok` (served under that id) or the error.
#[derive(Debug)]
pub enum PullEvent {
    Progress(Progress),
    Done(Result<String, StoreError>),
}

/// Where a pulled model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PullSource {
    /// A store name, into the Ollama layout; `refresh` pulls it again when present.
    Store { name: ModelRef, refresh: bool },
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
    pub fn refresh(name: ModelRef) -> Self {
        Self {
            id: name.to_string(),
            source: PullSource::Store {
                name,
                refresh: true,
            },
            unless_served: false,
            load: false,
        }
    }
}

/// A pull for the runner.
struct Job {
    order: PullOrder,
    events: mpsc::UnboundedSender<PullEvent>,
}

/// The node's store service; shared with handlers as `web::Data<Service>`.
pub struct Service {
    pub store: Store,
    /// Where file pulls go (`--models-dir`, else the cache directory).
    models_dir: PathBuf,
    models: OnceLock<Models>,
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

impl Service {
    pub fn new(store: Store, models_dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            store,
            models_dir,
            models: OnceLock::new(),
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
            let template = jinja_template(model.template.as_deref());
            let id = model.name.to_string();
            if let Err(e) = add(&models, id, model.gguf, template, false).await {
                tracing::warn!(model = %model.name, "stored model not served: {e}");
            }
        }
        let runner = Runner {
            store: self.store.clone(),
            models,
            models_dir: self.models_dir.clone(),
            active: RefCell::default(),
            limit: Semaphore::new(CONCURRENT_PULLS),
        };
        actix_rt::spawn(Rc::new(runner).run(rx));
    }

    /// Queues a pull; its events arrive on the returned channel.
    pub fn submit(&self, order: PullOrder) -> mpsc::UnboundedReceiver<PullEvent> {
        tracing::info!(model = %order.id, "model pull queued");
        let (events, rx) = mpsc::unbounded_channel();
        if let Err(e) = self.tx.send(Job { order, events }) {
            let _ = e.0.events.send(PullEvent::Done(Err(StoreError::Config(
                "the node is not running".into(),
            ))));
        }
        rx
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

/// The one hot add: serves `path` as `id` (already served is fine).
async fn add(
    models: &Models,
    id: String,
    path: PathBuf,
    template: Option<String>,
    load: bool,
) -> Result<(), AddModelError> {
    let spec = ModelSpec { name: id, path };
    match models.add(spec, template, load).await {
        Ok(()) | Err(AddModelError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs queued pulls on the main arbiter (see the module docs).
struct Runner {
    store: Store,
    models: Models,
    models_dir: PathBuf,
    /// Pulls under way: lowercased id → the channels of the orders that joined it.
    active: RefCell<HashMap<String, Vec<mpsc::UnboundedSender<PullEvent>>>>,
    limit: Semaphore,
}

impl Runner {
    async fn run(self: Rc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            let key = job.order.id.to_lowercase();
            if let Some(joined) = self.active.borrow_mut().get_mut(&key) {
                tracing::info!(model = %job.order.id, "pull joins the one already under way");
                joined.push(job.events);
                continue;
            }
            if job.order.unless_served && self.serves(&job.order.id).await {
                tracing::info!(model = %job.order.id, "pull: model already served");
                finish(&job.events, Ok(job.order.id.clone()));
                continue;
            }
            self.active.borrow_mut().insert(key.clone(), Vec::new());
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
        let result = match self.limit.acquire().await {
            Ok(_permit) => self.pull_and_add(&job).await,
            Err(_) => Err(StoreError::Config("the pull runner stopped".into())),
        };
        let joined = self.active.borrow_mut().remove(&key).unwrap_or_default();
        match &result {
            Ok(_) => tracing::info!(model = %job.order.id, "model pulled and served"),
            Err(e) => tracing::error!(model = %job.order.id, "model pull failed: {e}"),
        }
        for events in &joined {
            let shared = match &result {
                Ok(id) => Ok(id.clone()),
                Err(e) => Err(StoreError::Joined(e.to_string())),
            };
            finish(events, shared);
        }
        finish(&job.events, result);
    }

    async fn pull_and_add(&self, job: &Job) -> Result<String, StoreError> {
        let events = job.events.clone();
        let on_progress = move |p: Progress| {
            let _ = events.send(PullEvent::Progress(p));
        };
        let order = &job.order;
        let pulled = match &order.source {
            PullSource::Store { name, refresh } => {
                let model = match refresh {
                    true => self.store.pull(name, &on_progress).await?,
                    false => self.store.ensure(name, &on_progress).await?,
                };
                PulledFile {
                    gguf: model.gguf,
                    template: jinja_template(model.template.as_deref()),
                }
            }
            PullSource::File(file) => {
                let dir = &self.models_dir;
                self.store.pull_file(file, dir, &on_progress).await?
            }
        };
        add(
            &self.models,
            order.id.clone(),
            pulled.gguf,
            pulled.template,
            order.load,
        )
        .await
        .map_err(|e| StoreError::Config(format!("cannot serve the model: {e}")))?;
        Ok(order.id.clone())
    }
}

/// The last events of an order: `success` (only once it is served: a client may
/// use the model as soon as it reads this), then the result.
fn finish(events: &mpsc::UnboundedSender<PullEvent>, result: Result<String, StoreError>) {
    if result.is_ok() {
        let _ = events.send(PullEvent::Progress(Progress::status("success")));
    }
    let _ = events.send(PullEvent::Done(result));
}
