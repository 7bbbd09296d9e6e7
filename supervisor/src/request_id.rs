//! The id of the HTTP request being served, for the whole of its handling.
//!
//! `api::request_id` gives every request an id (the client's `x-request-id`, or
//! a fresh one), echoes it in the response, opens a `request` span carrying it
//! and runs the handler inside [`scope`]. Below the faces nobody passes the id
//! by hand: [`WorkerClient`](crate::worker::WorkerClient) reads [`current`] when
//! it builds `Generate`/`Embed`, so the worker's log lines name the request
//! (protocol field `trace`). A leaf, so any layer may read it.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The current request id, or `""` outside a request (startup, tests).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A new request id: 32 hex digits.
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_id_is_visible_inside_its_scope_only() {
        assert_eq!(current(), "");
        let seen = scope("req-1".into(), async { current() }).await;
        assert_eq!(seen, "req-1");
        assert_eq!(current(), "");
        assert_eq!(generate().len(), 32);
    }
}
