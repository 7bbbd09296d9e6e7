//! The set of served models: public id → the actor that owns it.
//!
//! Fixed at startup. Lookups are case-insensitive: the index is keyed by the
//! lowercased id, while responses show the id as configured.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use actix::{Actor, Addr};
use futures_util::future::join_all;

use crate::config::{Args, ModelSpec};
use crate::model::{ModelActor, ModelState, Stop, WaitReady};
use crate::worker::SpawnOptions;

/// One served model.
#[derive(Clone)]
pub struct ModelEntry {
    pub spec: ModelSpec,
    pub addr: Addr<ModelActor>,
}

/// All served models, in configuration order; cheap to clone.
#[derive(Clone, Default)]
pub struct Models {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: Vec<ModelEntry>,
    by_key: HashMap<String, usize>,
}

impl Models {
    /// Indexes already started actors.
    pub fn new(entries: Vec<ModelEntry>) -> Self {
        let by_key = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.spec.key(), i))
            .collect();
        Self {
            inner: Arc::new(Inner { entries, by_key }),
        }
    }

    /// Starts one [`ModelActor`] per spec on the current arbiter; each spawns its
    /// worker from `bin` at once.
    ///
    /// # Panics
    /// Outside a running actix `System`.
    pub fn start(args: &Args, specs: Vec<ModelSpec>, bin: &Path) -> Self {
        let entries = specs
            .into_iter()
            .map(|spec| {
                let spawn = SpawnOptions {
                    bin: bin.to_path_buf(),
                    config: args.worker_config(&spec),
                    ready_timeout: args.ready_timeout(),
                };
                let addr = ModelActor::new(spawn, args.shutdown_timeout()).start();
                ModelEntry { spec, addr }
            })
            .collect();
        Self::new(entries)
    }

    /// The model called `name`, ignoring case.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        let index = *self.inner.by_key.get(&name.to_lowercase())?;
        self.inner.entries.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ModelEntry> {
        self.inner.entries.iter()
    }

    /// Waits until no model is `Starting` and returns each model's state.
    pub async fn wait_started(&self) -> Vec<(String, ModelState)> {
        let states = join_all(self.iter().map(|e| e.addr.send(WaitReady))).await;
        self.iter()
            .zip(states)
            .map(|(e, s)| (e.spec.name.clone(), s.unwrap_or(ModelState::Stopped)))
            .collect()
    }

    /// Stops every model's worker, concurrently; resolves when all are gone.
    pub async fn stop_all(&self) {
        join_all(self.iter().map(|e| e.addr.send(Stop))).await;
    }
}
