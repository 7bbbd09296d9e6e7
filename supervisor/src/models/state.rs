//! A model's lifecycle state, typed. Only the HTTP layer turns it into a string
//! ([`ModelState::label`]), for bodies and metrics.

/// Lifecycle states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Not loaded; loads on demand or by an admin.
    Stopped,
    /// Worker spawned, waiting for its `Ready`.
    Starting,
    Ready,
    /// Finishing in-flight requests before a stop or restart; admits nothing new.
    Draining,
    /// Worker being stopped (Shutdown, TERM, KILL).
    Stopping,
    /// Crashed; restarts after a delay.
    Backoff {
        attempt: u32,
        reason: String,
    },
    /// Crash loop or unrecoverable; parked until an admin acts.
    Failed {
        reason: String,
    },
}

impl ModelState {
    pub fn label(&self) -> &'static str {
        match self {
            ModelState::Stopped => "stopped",
            ModelState::Starting => "starting",
            ModelState::Ready => "ready",
            ModelState::Draining => "draining",
            ModelState::Stopping => "stopping",
            ModelState::Backoff { .. } => "backoff",
            ModelState::Failed { .. } => "failed",
        }
    }

    /// Whether a worker process exists or is about to (counts against the loaded limit).
    pub fn is_loaded(&self) -> bool {
        matches!(
            self,
            ModelState::Starting
                | ModelState::Ready
                | ModelState::Draining
                | ModelState::Stopping
                | ModelState::Backoff { .. }
        )
    }

    /// Whether the model is on its way to ready (spawned, not yet ready): the
    /// router's "initializing".
    pub fn is_starting(&self) -> bool {
        matches!(self, ModelState::Starting)
    }

    /// Whether a refusal in this state is brief (worth retrying within seconds).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelState::Starting | ModelState::Backoff { .. } | ModelState::Draining
        )
    }
}
