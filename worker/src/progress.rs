//! The engine's progress, published for the command reader thread so that it
//! can answer liveness pings itself.
//!
//! Why: the engine thread spends most of its time inside llama.cpp, and one
//! call (a 2,048-token prompt batch of a big model on a slow CPU) can take
//! longer than the supervisor's ping timeout. When the engine answered pings
//! between two steps, such a step got a healthy worker killed and every
//! stream on it cut. Now the reader answers at once with this [`Meter`]'s
//! [`Progress`], and the supervisor tells a long step (turns advance from one
//! ping to the next, or `busy_ms` stays under its stall limit) from a stuck
//! one.
//!
//! The engine marks each turn of its loop, from taking its inputs to flushing
//! the step's events, with [`Meter::begin`] and [`Meter::end`]: everything
//! that can block it for long (a decode call, an embeddings input, an event
//! lane the supervisor does not read) lies inside a turn, and only its wait
//! for work lies outside.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use llm_node_protocol::Progress;

use crate::prompt_cache::CacheStats;

/// Turns completed and when the current one began, shared by the engine
/// (writer) and the reader thread (reader).
///
/// The two values are independent atomics, read with `Relaxed`: a ping that
/// races a turn boundary may pair the old count with the new turn's start or
/// the other way round, and either reads as "a turn just began or ended",
/// never as a long stall.
pub struct Meter {
    epoch: Instant,
    turns: AtomicU64,
    /// Milliseconds from `epoch` to the start of the current turn, plus one;
    /// 0 while the engine waits for work.
    busy_since: AtomicU64,
    /// Busy slots and KV cells in use at the end of the last turn.
    busy_slots: AtomicU64,
    kv_cells: AtomicU64,
    /// The host-RAM prompt cache's [`CacheStats`] and slot copies.
    cache_bytes: AtomicU64,
    cache_entries: AtomicU64,
    cache_hits: AtomicU64,
    cache_copies: AtomicU64,
    /// Speculative decoding: draft tokens decoded and accepted.
    spec_drafted: AtomicU64,
    spec_accepted: AtomicU64,
    /// Prefill ahead: sequences parked now, and requests started ahead.
    parked: AtomicU64,
    started_ahead: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            turns: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            busy_slots: AtomicU64::new(0),
            kv_cells: AtomicU64::new(0),
            cache_bytes: AtomicU64::new(0),
            cache_entries: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_copies: AtomicU64::new(0),
            spec_drafted: AtomicU64::new(0),
            spec_accepted: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            started_ahead: AtomicU64::new(0),
        }
    }
}

impl Meter {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The engine starts a turn's work.
    pub fn begin(&self) {
        self.busy_since.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// The engine's occupancy after a turn: slots holding a request and KV
    /// cells in use (reported by the next `Pong`s).
    pub fn occupancy(&self, busy_slots: usize, kv_cells: usize) {
        self.busy_slots.store(busy_slots as u64, Ordering::Relaxed);
        self.kv_cells.store(kv_cells as u64, Ordering::Relaxed);
    }

    /// The prompt cache's figures after a turn: the host-RAM cache's and
    /// the number of prompts that copied KV from another slot.
    pub fn cache(&self, stats: CacheStats, copies: u64) {
        self.cache_bytes.store(stats.bytes, Ordering::Relaxed);
        self.cache_entries.store(stats.entries, Ordering::Relaxed);
        self.cache_hits.store(stats.hits, Ordering::Relaxed);
        self.cache_copies.store(copies, Ordering::Relaxed);
    }

    /// Speculative decoding's totals after a turn: draft tokens decoded and
    /// accepted.
    pub fn speculation(&self, drafted: u64, accepted: u64) {
        self.spec_drafted.store(drafted, Ordering::Relaxed);
        self.spec_accepted.store(accepted, Ordering::Relaxed);
    }

    /// Prefill ahead after a turn: sequences parked now, and requests
    /// started ahead since start.
    pub fn ahead(&self, parked: usize, started: u64) {
        self.parked.store(parked as u64, Ordering::Relaxed);
        self.started_ahead.store(started, Ordering::Relaxed);
    }

    /// The engine finished a turn and may now wait for work.
    pub fn end(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The progress a `Pong` reports now.
    pub fn progress(&self) -> Progress {
        let turns = self.turns.load(Ordering::Relaxed);
        let busy_ms = match self.busy_since.load(Ordering::Relaxed) {
            0 => 0,
            since => (self.now_ms() + 1).saturating_sub(since),
        };
        Progress {
            turns,
            busy_ms,
            busy_slots: self.busy_slots.load(Ordering::Relaxed) as u32,
            kv_cells: self.kv_cells.load(Ordering::Relaxed),
            cache_bytes: self.cache_bytes.load(Ordering::Relaxed),
            cache_entries: self.cache_entries.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_copies: self.cache_copies.load(Ordering::Relaxed),
            spec_drafted: self.spec_drafted.load(Ordering::Relaxed),
            spec_accepted: self.spec_accepted.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            started_ahead: self.started_ahead.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn busy_time_grows_inside_a_turn_and_resets_when_it_ends() {
        let meter = Meter::default();
        assert_eq!(meter.progress(), Progress::default(), "idle at start");
        meter.begin();
        std::thread::sleep(Duration::from_millis(30));
        let inside = meter.progress();
        assert_eq!(inside.turns, 0);
        assert!(inside.busy_ms >= 30, "{inside:?}");
        meter.end();
        assert_eq!(
            meter.progress(),
            Progress {
                turns: 1,
                ..Progress::default()
            }
        );
        meter.begin();
        assert!(meter.progress().busy_ms < 30, "a new turn starts from 0");
    }

    #[test]
    fn occupancy_is_reported_until_the_next_turn_changes_it() {
        let meter = Meter::default();
        meter.begin();
        meter.occupancy(2, 300);
        meter.end();
        let p = meter.progress();
        assert_eq!((p.busy_slots, p.kv_cells), (2, 300));
        meter.begin();
        assert_eq!(meter.progress().busy_slots, 2, "kept while a turn runs");
        meter.occupancy(0, 120);
        meter.end();
        let p = meter.progress();
        assert_eq!(
            (p.busy_slots, p.kv_cells),
            (0, 120),
            "a cached prefix keeps cells"
        );
    }
}
