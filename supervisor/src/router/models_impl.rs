//! [`NodeModels`] for the node's model registry ([`crate::models::Models`]).

use futures_util::future::BoxFuture;

use super::{ModelSnapshot, NodeModels};
use crate::models::{ModelState, Models};

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
}
