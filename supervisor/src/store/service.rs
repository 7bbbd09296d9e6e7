//! The store inside a running node: hot add, startup registration and `rm`.
//!
//! A pulled model must be served by an actor that lives on the node's main
//! arbiter (an HTTP worker thread may go away; see `router::pull`), so HTTP
//! handlers only queue a [`Job`]; the runner started by [`Service::start`] on
//! the main arbiter pulls, registers the model with
//! [`Models::add`](crate::models::Models::add) and reports progress back over
//! the job's channel. Removal needs no new actor and runs in the handler.

use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;

use super::{jinja_template, LocalModel, ModelRef, Progress, Store, StoreError};
use crate::models::{AddModelError, ModelSpec, Models, ModelsError};

/// What a pull reports: progress lines, then `Ok` (served under that id) or the error.
#[derive(Debug)]
pub enum PullEvent {
    Progress(Progress),
    Done(Result<String, StoreError>),
}

/// A pull for the runner.
pub struct Job {
    pub name: ModelRef,
    pub events: mpsc::UnboundedSender<PullEvent>,
}

/// The node's store service; shared with handlers as `web::Data<Service>`.
pub struct Service {
    pub store: Store,
    models: OnceLock<Models>,
    tx: mpsc::UnboundedSender<Job>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
}

impl Service {
    pub fn new(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            store,
            models: OnceLock::new(),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Registers every stored model the node does not serve yet (loaded on first
    /// request, served under its `name:tag`) and starts the pull runner on the
    /// current arbiter, which must be the one owning the model actors. Once only.
    pub async fn start(&self, models: Models) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let _ = self.models.set(models.clone());
        for model in self.store.list() {
            if let Err(e) = add(&models, &model).await {
                tracing::warn!(model = %model.name, "stored model not served: {e}");
            }
        }
        actix_rt::spawn(run(self.store.clone(), models, rx));
    }

    /// Queues a pull; its events arrive on the returned channel.
    pub fn submit(&self, name: ModelRef) -> mpsc::UnboundedReceiver<PullEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        if let Err(e) = self.tx.send(Job { name, events }) {
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

/// Serves `model` (not loaded yet). Already served is fine.
async fn add(models: &Models, model: &LocalModel) -> Result<(), AddModelError> {
    let spec = ModelSpec {
        name: model.name.to_string(),
        path: model.gguf.clone(),
    };
    match models
        .add(spec, jinja_template(model.template.as_deref()), false)
        .await
    {
        Ok(()) | Err(AddModelError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn run(store: Store, models: Models, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        let (store, models) = (store.clone(), models.clone());
        actix_rt::spawn(async move {
            let events = job.events.clone();
            let on_progress = move |p: Progress| {
                let _ = events.send(PullEvent::Progress(p));
            };
            let result = match store.pull(&job.name, &on_progress).await {
                Ok(model) => add(&models, &model)
                    .await
                    .map(|()| model.name.to_string())
                    .map_err(|e| StoreError::Config(format!("cannot serve the model: {e}"))),
                Err(e) => {
                    tracing::error!(model = %job.name, "pull failed: {e}");
                    Err(e)
                }
            };
            if result.is_ok() {
                // Only now: a client may use the model as soon as it reads this.
                let _ = job
                    .events
                    .send(PullEvent::Progress(Progress::status("success")));
            }
            let _ = job.events.send(PullEvent::Done(result));
        });
    }
}
