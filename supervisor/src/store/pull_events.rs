//! The events of one pull for one listener, bounded: progress is coalesced,
//! the end is never lost.
//!
//! A download reports progress for every chunk it writes, far faster than a
//! slow client reads an NDJSON stream, and only the latest byte count of a
//! file matters. So a new line with the same `status` and `digest` as the
//! last one waiting replaces it, and at most [`MAX_WAITING`] lines wait (the
//! oldest go first). The result ([`PullEvent::Done`]) has a place of its own
//! and always arrives, after the lines still waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{Progress, StoreError};

/// Progress lines waiting per listener, at most.
pub const MAX_WAITING: usize = 16;

/// What a pull reports: progress lines, then `Ok` (served under that id) or the error.
#[derive(Debug)]
pub enum PullEvent {
    Progress(Progress),
    Done(Result<String, StoreError>),
}

/// A new listener: the pull's end and the listener's end.
pub fn channel() -> (PullSender, PullEvents) {
    let shared = Arc::new(Shared::default());
    (
        PullSender {
            shared: Arc::clone(&shared),
        },
        PullEvents { shared },
    )
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the listener; a wake-up with nobody waiting is kept for its next wait.
    changed: Notify,
}

#[derive(Default)]
struct State {
    progress: VecDeque<Progress>,
    done: Option<Result<String, StoreError>>,
    /// The sender is gone, or the listener has read `Done`: nothing more comes.
    over: bool,
    /// The listener is gone: sending is pointless.
    closed: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pull's end of one listener's events.
pub struct PullSender {
    shared: Arc<Shared>,
}

impl PullSender {
    /// Queues a progress line, replacing the last one waiting when it reports
    /// on the same thing. Never waits.
    pub fn progress(&self, p: Progress) {
        let mut state = self.shared.state();
        if state.closed {
            return;
        }
        match state.progress.back_mut() {
            Some(last) if last.status == p.status && last.digest == p.digest => *last = p,
            _ => state.progress.push_back(p),
        }
        if state.progress.len() > MAX_WAITING {
            state.progress.pop_front();
        }
        drop(state);
        self.shared.changed.notify_one();
    }

    /// Sends the result, after the progress lines waiting.
    pub fn finish(&self, result: Result<String, StoreError>) {
        self.shared.state().done = Some(result);
        self.shared.changed.notify_one();
    }

    /// Whether the listener is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.state().closed
    }
}

impl Drop for PullSender {
    fn drop(&mut self) {
        self.shared.state().over = true;
        self.shared.changed.notify_one();
    }
}

/// One listener's events of a pull.
pub struct PullEvents {
    shared: Arc<Shared>,
}

impl PullEvents {
    /// The next event; `None` after `Done`, or when the pull went away without one.
    pub async fn recv(&mut self) -> Option<PullEvent> {
        loop {
            {
                let mut state = self.shared.state();
                if let Some(p) = state.progress.pop_front() {
                    return Some(PullEvent::Progress(p));
                }
                if let Some(result) = state.done.take() {
                    state.over = true;
                    return Some(PullEvent::Done(result));
                }
                if state.over {
                    return None;
                }
            }
            self.shared.changed.notified().await;
        }
    }
}

impl Drop for PullEvents {
    fn drop(&mut self) {
        self.shared.state().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(digest: &str, completed: u64) -> Progress {
        Progress {
            status: format!("pulling {digest}"),
            digest: Some(digest.into()),
            total: Some(1000),
            completed: Some(completed),
        }
    }

    #[tokio::test]
    async fn progress_is_coalesced_and_bounded_and_the_end_is_never_lost() {
        let (tx, mut rx) = channel();
        tx.progress(Progress::status("pulling manifest"));
        for n in 0..100_000 {
            tx.progress(bytes("a", n));
        }
        tx.progress(bytes("b", 1));
        for i in 0..100 {
            tx.progress(Progress::status(format!("step {i}")));
        }
        tx.finish(Ok("m".into()));
        drop(tx);
        let mut lines = Vec::new();
        let done = loop {
            match rx.recv().await {
                Some(PullEvent::Progress(p)) => lines.push(p.status),
                Some(PullEvent::Done(result)) => break result.unwrap(),
                None => panic!("the end was lost"),
            }
        };
        assert_eq!(done, "m");
        assert_eq!(lines.len(), MAX_WAITING);
        assert_eq!(lines.last().map(String::as_str), Some("step 99"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_next_line_and_sees_a_silent_end() {
        let (tx, mut rx) = channel();
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            (first.is_some(), rx.recv().await.is_none())
        });
        tokio::task::yield_now().await;
        tx.progress(bytes("a", 10));
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(reader.await.unwrap(), (true, true));
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_closed());
    }
}
