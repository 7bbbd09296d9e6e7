//! Why the models subsystem refused: one enum, typed, with no HTTP in it.
//! The HTTP layer (`api::error`) maps each variant to a status and a body.

use super::state::ModelState;

/// Why a model could not be served, loaded, changed or removed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelsError {
    /// No model by that name.
    #[error("model {0} does not exist")]
    NotFound(String),
    /// The model exists but is not ready to serve (failed, backing off, draining, …).
    #[error("model {model} is {}", state.label())]
    Unavailable { model: String, state: ModelState },
    /// The model could not be loaded before the deadline: the loaded-models limit
    /// is reached and nothing became idle, or placement found no room.
    #[error("model {0} could not be loaded in time (capacity)")]
    NoCapacity(String),
    /// The model's queue is full.
    #[error("model {0} has too many requests waiting")]
    QueueFull(String),
    /// An action that does not fit the model's state (unload while draining, …).
    #[error("{0}")]
    Conflict(String),
    /// Removal refused: the model has requests in flight or is changing state.
    #[error("model {0} is in use")]
    InUse(String),
    /// A configuration reload was refused (a bad models file, …): the reason.
    #[error("configuration not reloaded: {0}")]
    Config(String),
    /// The model's actor is gone (only at shutdown).
    #[error("model actor unreachable: {0}")]
    ActorGone(String),
}

impl From<actix::MailboxError> for ModelsError {
    fn from(e: actix::MailboxError) -> Self {
        ModelsError::ActorGone(e.to_string())
    }
}
