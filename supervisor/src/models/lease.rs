//! A model lent to one request.
//!
//! A [`Lease`] is what [`Models::acquire`](super::Models::acquire) returns. It
//! counts its request as in flight from the moment the actor hands it out until
//! the lease, and every stream it started, is dropped. Eviction, idle TTL,
//! draining and heartbeats read that count (through `GetStatus`), so a request
//! between "acquired" and "first command sent" is already busy: no grace timer
//! is needed to protect it (llama-swap counts a request at entry the same way).
//!
//! # The count
//! [`Leases`] is one `watch` channel per model, written only by taking a guard
//! (in the actor's `Acquire` handler, so the count and the state decision are one
//! step) and by dropping it (anywhere). When the count returns to 0 the models'
//! `changed` notifier fires, waking loads that wait for an idle model.

use std::sync::Arc;

use llm_node_protocol::{Prompt, SamplingParams};
use tokio::sync::{watch, Notify};

use crate::worker::{EmbedInput, Embedded, GenerationStream, WorkerClient, WorkerError};

/// One model's count of outstanding leases. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Leases {
    count: Arc<watch::Sender<usize>>,
    changed: Arc<Notify>,
}

impl Leases {
    pub(crate) fn new(changed: Arc<Notify>) -> Self {
        Self {
            count: Arc::new(watch::Sender::new(0)),
            changed,
        }
    }

    /// Counts one more request in flight until the guard drops.
    pub(crate) fn take(&self) -> LeaseGuard {
        self.count.send_modify(|n| *n += 1);
        LeaseGuard {
            leases: self.clone(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves to the count on each change.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

/// One request in flight; dropping it ends the count.
pub(crate) struct LeaseGuard {
    leases: Leases,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseGuard")
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let mut now = 0;
        self.leases.count.send_modify(|n| {
            *n = n.saturating_sub(1);
            now = *n;
        });
        if now == 0 {
            self.leases.changed.notify_waiters();
        }
    }
}

/// A ready model, lent to one request. Drop it (and the streams it started)
/// when the request is over.
pub struct Lease {
    model: String,
    client: WorkerClient,
    guard: Arc<LeaseGuard>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("model", &self.model).finish()
    }
}

impl Lease {
    pub(crate) fn new(model: String, client: WorkerClient, guard: LeaseGuard) -> Self {
        Self {
            model,
            client,
            guard: Arc::new(guard),
        }
    }

    /// The model's configured id (its case, whatever the request's).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Starts a generation; the stream keeps the request counted until it is dropped.
    ///
    /// # Errors
    /// As [`WorkerClient::generate`].
    pub fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<GenerationStream, WorkerError> {
        let mut stream = self.client.generate(prompt, params)?;
        stream.hold(self.guard.clone());
        Ok(stream)
    }

    /// Embeds each input (see [`WorkerClient::embed`]).
    ///
    /// # Errors
    /// As [`WorkerClient::embed`].
    pub async fn embed(&self, inputs: Vec<EmbedInput>) -> Result<(Embedded, u32), WorkerError> {
        self.client.embed(inputs).await
    }

    /// Embeds each input, cutting those longer than the context when
    /// `truncate` (see [`WorkerClient::embed_with`]).
    ///
    /// # Errors
    /// As [`WorkerClient::embed`].
    pub async fn embed_with(
        &self,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    ) -> Result<(Embedded, u32), WorkerError> {
        self.client.embed_with(inputs, truncate).await
    }

    /// The model's output syntax (from its chat template).
    pub fn chat_format(&self) -> llm_node_chat::format::ChatFormat {
        self.client.chat_format()
    }

    /// The worker's slots (requests decoded together), once known.
    pub fn slots(&self) -> Option<u32> {
        self.client.slots()
    }

    /// The worker's client, for calls the lease does not wrap. What it starts is
    /// counted only while this lease lives.
    pub fn client(&self) -> &WorkerClient {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_ends_with_the_last_guard_and_wakes_waiters() {
        let changed = Arc::new(Notify::new());
        let leases = Leases::new(changed.clone());
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let a = leases.take();
        let b = leases.take();
        assert_eq!(leases.count(), 2);
        drop(a);
        assert_eq!(leases.count(), 1);
        drop(b);
        assert_eq!(leases.count(), 0);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::future::Future::poll(woken.as_mut(), &mut cx).is_ready());
    }
}
