//! The host-RAM prompt cache: sequence states saved when their slot is
//! reassigned, so that a conversation that comes back after losing its slot
//! restores its KV instead of prefilling its whole transcript again.
//!
//! # Contract
//! - An entry is the KV state of one sequence (`S`, opaque here: the engine
//!   stores llama.cpp's `state_seq_get` bytes) together with the tokens it
//!   holds, in position order, and its size in bytes.
//! - The sum of the entries' sizes never exceeds the capacity; inserting
//!   evicts least recently used entries first (an insert or a restore counts
//!   as a use). A state larger than the whole capacity is not kept. Capacity
//!   0 turns the cache off.
//! - No entry's tokens are a prefix of another entry's: saving a longer
//!   state of the same conversation replaces the shorter one, and a state
//!   already covered by a longer entry is not saved again
//!   ([`PromptCache::covers`] lets the engine skip the copy out of llama.cpp).
//! - [`PromptCache::best`] finds the entry sharing the longest prefix with a
//!   prompt; restoring it keeps it (other conversations share prefixes).
//!
//! - Part of the capacity can be reserved ([`PromptCache::reserve`]) for
//!   states the engine keeps outside the cache (sequences prefilled ahead
//!   and parked, see `engine::ahead`): a reservation evicts entries as an
//!   insert does, is never evicted itself, and counts in the bytes reported.
//!
//! Pure bookkeeping without llama.cpp, tested here. A `Vec` with linear scans:
//! entries are few (hundreds at most: each holds a whole conversation's KV,
//! megabytes), and the prefix search has to look at every entry anyway, which
//! an LRU crate (`lru`) would not save.

/// One saved sequence state.
struct Entry<S> {
    tokens: Vec<i32>,
    state: S,
    bytes: usize,
    /// Use clock value of its last insert or restore.
    used: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
    /// Restores since the worker started.
    pub hits: u64,
}

/// A bounded, least-recently-used set of saved sequence states.
pub struct PromptCache<S> {
    capacity: usize,
    entries: Vec<Entry<S>>,
    /// Bytes reserved for states kept outside the cache.
    reserved: usize,
    clock: u64,
    hits: u64,
}

impl<S> PromptCache<S> {
    /// An empty cache holding at most `capacity` bytes (0: off).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Vec::new(),
            reserved: 0,
            clock: 0,
            hits: 0,
        }
    }

    /// The bound, in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether an entry already holds `tokens` (as a prefix of its own).
    pub fn covers(&self, tokens: &[i32]) -> bool {
        self.entries.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Keeps `state` (`bytes` long) of a sequence holding `tokens`. Returns
    /// whether it was kept: not when it exceeds the capacity or an entry
    /// covers it already.
    pub fn insert(&mut self, tokens: Vec<i32>, state: S, bytes: usize) -> bool {
        if bytes + self.reserved > self.capacity || tokens.is_empty() || self.covers(&tokens) {
            return false;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.make_room(bytes);
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            state,
            bytes,
            used: self.clock,
        });
        true
    }

    /// Reserves `bytes` of the capacity for a state kept outside the cache,
    /// evicting least recently used entries to make room. Returns `false`
    /// (and reserves nothing) when even an empty cache could not: the other
    /// reservations hold too much, or the cache is off.
    pub fn reserve(&mut self, bytes: usize) -> bool {
        if bytes == 0 || bytes + self.reserved > self.capacity {
            return false;
        }
        self.make_room(bytes);
        self.reserved += bytes;
        true
    }

    /// Gives back `bytes` reserved by [`Self::reserve`].
    pub fn release(&mut self, bytes: usize) {
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    /// Evicts least recently used entries until `bytes` more fit.
    fn make_room(&mut self, bytes: usize) {
        while self.bytes() + bytes > self.capacity {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
                .expect("a reservation plus what fits leaves entries to evict");
            self.entries.swap_remove(oldest);
        }
    }

    /// The entry sharing the longest prefix with `prompt`, as (its key, the
    /// number of shared tokens); `None` when no entry shares any.
    pub fn best(&self, prompt: &[i32]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .filter(|&(_, shared)| shared > 0)
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)))
    }

    /// Entry `key` (from [`Self::best`]) for a restore: its tokens and state.
    /// Counts a hit and a use.
    ///
    /// # Panics
    /// When `key` is not an entry: keys are only valid until the next insert.
    pub fn restore(&mut self, key: usize) -> (&[i32], &S) {
        self.clock += 1;
        self.hits += 1;
        let e = &mut self.entries[key];
        e.used = self.clock;
        (&e.tokens, &e.state)
    }

    /// Drops entry `key` (a state llama.cpp refused to restore).
    pub fn remove(&mut self, key: usize) {
        if key < self.entries.len() {
            self.entries.swap_remove(key);
        }
    }

    /// Bytes held: the entries' and the reservations.
    fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum::<usize>() + self.reserved
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.bytes() as u64,
            entries: self.entries.len() as u64,
            hits: self.hits,
        }
    }
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: i32) -> Vec<i32> {
        (1..=n).collect()
    }

    #[test]
    fn the_byte_bound_holds_and_the_least_recently_used_goes_first() {
        let mut c = PromptCache::new(100);
        assert!(c.insert(vec![1, 2], "a", 40));
        assert!(c.insert(vec![3, 4], "b", 40));
        // A restore of "a" makes "b" the least recently used.
        let (key, _) = c.best(&[1, 2, 9]).unwrap();
        assert_eq!(c.restore(key).1, &"a");
        assert!(c.insert(vec![5, 6], "c", 40));
        assert!(c.stats().bytes <= 100);
        assert_eq!(c.best(&[3, 4]), None, "b was evicted");
        assert!(c.best(&[1, 2]).is_some() && c.best(&[5, 6]).is_some());
        assert_eq!(
            c.stats(),
            CacheStats {
                bytes: 80,
                entries: 2,
                hits: 1
            }
        );
    }

    #[test]
    fn a_state_larger_than_the_capacity_is_not_kept() {
        let mut c = PromptCache::new(10);
        assert!(!c.insert(vec![1], (), 11));
        assert_eq!(c.stats().entries, 0);
        let mut off = PromptCache::new(0);
        assert!(!off.enabled());
        assert!(!off.insert(vec![1], (), 1));
    }

    #[test]
    fn a_longer_state_of_the_same_conversation_replaces_the_shorter() {
        let mut c = PromptCache::new(1000);
        assert!(c.insert(toks(3), "short", 30));
        assert!(c.insert(toks(5), "long", 50));
        assert_eq!(c.stats().entries, 1);
        assert!(c.covers(&toks(4)));
        assert!(
            !c.insert(toks(4), "covered", 40),
            "a covered state is not saved again"
        );
        let (key, shared) = c.best(&toks(9)).unwrap();
        assert_eq!((shared, *c.restore(key).1), (5, "long"));
    }

    #[test]
    fn a_reservation_evicts_entries_counts_in_the_bytes_and_is_never_evicted() {
        let mut c = PromptCache::new(100);
        assert!(c.insert(vec![1], "a", 40));
        assert!(c.insert(vec![2], "b", 40));
        assert!(c.reserve(50), "room made by evicting the oldest entry");
        assert_eq!(c.best(&[1]), None);
        assert_eq!((c.stats().bytes, c.stats().entries), (90, 1));
        assert!(!c.reserve(60), "50 reserved + 60 > 100");
        assert!(c.reserve(50), "b goes");
        assert_eq!((c.stats().bytes, c.stats().entries), (100, 0));
        assert!(!c.insert(vec![3], "c", 1), "all of it reserved");
        c.release(50);
        assert!(c.insert(vec![3], "c", 40));
        assert!(c.stats().bytes <= 100);
        c.release(50);
        assert_eq!(c.stats().bytes, 40);
        assert!(
            !PromptCache::<()>::new(0).reserve(1),
            "off: nothing to reserve"
        );
    }

    #[test]
    fn the_entry_sharing_the_longest_prefix_is_found() {
        let mut c = PromptCache::new(1000);
        c.insert(vec![1, 2, 3, 7], 'a', 1);
        c.insert(vec![1, 2, 3, 4, 8], 'b', 1);
        c.insert(vec![9], 'c', 1);
        let (key, shared) = c.best(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!((shared, *c.restore(key).1), (4, 'b'));
        assert_eq!(c.best(&[6]), None);
        c.remove(key);
        assert_eq!(c.best(&[1, 2, 3, 4, 5]).map(|(_, s)| s), Some(3));
    }
}
