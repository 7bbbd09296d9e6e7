//! The HTTP request being served, for the whole of its handling: its id and
//! what it used (model, tokens, time to first token), for the access log.
//!
//! `api::request_id` gives every request an id (the client's `x-request-id`,
//! the trace id of its `traceparent`, or a fresh one), echoes it in the
//! response, opens a `request` span carrying it and runs the handler inside
//! [`scope`]. Below the faces nobody passes the id by hand:
//! [`WorkerClient`](crate::worker::WorkerClient) reads [`current`] when it
//! builds `Generate`/`Embed`, so the worker's log lines name the request
//! (protocol field `trace`), and a generation's meter fills the request's
//! [`Usage`] ([`usage`]), which the access log line reports once the response
//! is sent. A leaf, so any layer may read it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one request used, filled in as it runs (shared with the access log).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The model that served it.
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From the start of the generation to its first piece of text.
    pub ttft: Option<Duration>,
}

/// The usage record of one request; cheap to clone.
pub type UsageSlot = Arc<Mutex<Usage>>;

#[derive(Clone)]
struct Current {
    id: String,
    usage: UsageSlot,
}

tokio::task_local! {
    static REQUEST: Current;
}

/// Runs `fut` with `id` as the current request id and `usage` as its record.
pub async fn scope<F: Future>(id: String, usage: UsageSlot, fut: F) -> F::Output {
    REQUEST.scope(Current { id, usage }, fut).await
}

/// The current request id, or `""` outside a request (startup, tests).
pub fn current() -> String {
    REQUEST.try_with(|c| c.id.clone()).unwrap_or_default()
}

/// The current request's usage record, to fill in later (a stream is read
/// after its handler returned); `None` outside a request.
pub fn usage() -> Option<UsageSlot> {
    REQUEST.try_with(|c| c.usage.clone()).ok()
}

/// A new request id: 32 hex digits (also usable as a W3C trace id).
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_id_and_usage_are_visible_inside_their_scope_only() {
        assert_eq!(current(), "");
        assert!(usage().is_none());
        let slot = UsageSlot::default();
        let seen = scope("req-1".into(), slot.clone(), async {
            usage().unwrap().lock().unwrap().completion_tokens = 3;
            current()
        })
        .await;
        assert_eq!(seen, "req-1");
        assert_eq!(slot.lock().unwrap().completion_tokens, 3);
        assert_eq!(current(), "");
        assert_eq!(generate().len(), 32);
    }
}
