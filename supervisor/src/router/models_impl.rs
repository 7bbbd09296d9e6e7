//! [`NodeModels`] for the node's model registry ([`crate::models::Models`]).

use std::path::PathBuf;

use futures_util::future::BoxFuture;

use super::{ModelSnapshot, NodeModels};
use crate::models::{AddModelError, ModelSpec, ModelState, Models};

impl NodeModels for Models {
    fn snapshot(&self) -> BoxFuture<'static, Vec<ModelSnapshot>> {
        let models = self.clone();
        Box::pin(async move {
            models
                .statuses()
                .await
                .into_iter()
                .map(|(entry, status)| ModelSnapshot {
                    name: entry.spec.name,
                    state: status.state.clone(),
                    // Stopped models load on demand; only a parked (failed) one cannot serve.
                    servable: !matches!(status.state, ModelState::Failed { .. }),
                    in_flight: status.in_flight,
                })
                .collect()
        })
    }

    fn add_model(
        &self,
        name: String,
        path: PathBuf,
        chat_template: Option<String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let models = self.clone();
        Box::pin(async move {
            // `load: true`: it starts loading now, so it is ready when the router hears 1.0.
            match models
                .add(ModelSpec { name, path }, chat_template, true)
                .await
            {
                Ok(()) | Err(AddModelError::Exists(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
