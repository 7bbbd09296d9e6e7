//! Where a newly admitted request's reusable KV comes from: its slot's own
//! cache, a copy of another slot's sequence, or a state restored from the
//! host-RAM prompt cache (`prompt_cache`), chosen by [`plan::pick_source`];
//! and the saving of a slot's state to that cache before a request drops it.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::LlamaStateSeqFlags;

use super::Engine;
use crate::plan;

impl Engine<'_> {
    /// Brings the longest reusable KV for `prompt` into free slot `i`: its
    /// own, another slot's (copied) or a host-RAM cache entry's (restored),
    /// by [`plan::pick_source`]. Saves the slot's own KV to the host-RAM
    /// cache first when `prompt` would drop part of it. Returns whether a
    /// copy from another slot is pending (see [`Self::admit`]).
    pub(super) fn fill_slot(&mut self, i: usize, prompt: &[LlamaToken]) -> bool {
        let own = plan::reuse_len(&self.slots[i].cached, prompt);
        let other = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, s)| (j, plan::reuse_len(&s.cached, prompt)))
            .max_by_key(|&(j, n)| (n, std::cmp::Reverse(j)));
        let ids: Vec<i32> = prompt.iter().map(|t| t.0).collect();
        let host = self
            .cache
            .best(&ids)
            .map(|(key, shared)| (key, shared.min(prompt.len().saturating_sub(1))));
        let source = plan::pick_source(own, other, host);
        // Dropping only a few tokens leaves nearly the same state in the slot.
        let dropped = self.slots[i].cached.len() - own;
        if source != plan::Source::Own || dropped >= plan::MIN_GAIN {
            self.save(i);
        }
        let seq = self.slots[i].seq_id;
        let Some(ctx) = self.ctx.as_mut() else {
            return false;
        };
        match source {
            plan::Source::Own => false,
            plan::Source::Slot(j) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                let from = self.slots[j].seq_id;
                let copied = ctx.copy_kv_cache_seq(from, seq, None, None).is_ok();
                self.slots[i].cached = if copied {
                    self.slots[j].cached.clone()
                } else {
                    Vec::new()
                };
                self.copies += u64::from(copied);
                copied
            }
            plan::Source::Host(key) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                let (tokens, state) = self.cache.restore(key);
                let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
                match ctx.state_seq_set(state, seq) {
                    Ok(()) => self.slots[i].cached = tokens,
                    Err(e) => {
                        tracing::warn!(error = %e, "prompt cache restore failed; prefilling");
                        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                        self.slots[i].cached.clear();
                        self.cache.remove(key);
                    }
                }
                false
            }
        }
    }

    /// Whether `prompt`, which free slot `i` could take now, should rather
    /// wait for a busy slot's prefill to pass the prefix they share
    /// ([`plan::wait_for_prefill`]).
    pub(super) fn wait_for_prefill(&self, i: usize, prompt: &[LlamaToken]) -> bool {
        let prefilling: Vec<plan::Prefilling> = self
            .slots
            .iter()
            .filter_map(|s| {
                let seq = s
                    .active
                    .as_ref()
                    .filter(|q| s.cached.len() < q.prompt.len())?;
                Some(plan::Prefilling {
                    cached: s.cached.len(),
                    shared: plan::reuse_len(&seq.prompt, prompt),
                })
            })
            .collect();
        if prefilling.is_empty() {
            return false;
        }
        let slots = self
            .slots
            .iter()
            .map(|s| plan::reuse_len(&s.cached, prompt));
        let own = plan::reuse_len(&self.slots[i].cached, prompt);
        let ids: Vec<i32> = prompt.iter().map(|t| t.0).collect();
        let host = self.cache.best(&ids).map_or(0, |(_, n)| n);
        let now = slots.max().unwrap_or(0).max(own).max(host);
        plan::wait_for_prefill(now, &prefilling)
    }

    /// Saves free slot `i`'s KV to the host-RAM prompt cache, unless it is
    /// short, or an entry holds it already.
    pub(super) fn save(&mut self, i: usize) {
        let slot = &self.slots[i];
        if !self.cache.enabled() || slot.cached.len() < plan::MIN_GAIN {
            return;
        }
        let tokens: Vec<i32> = slot.cached.iter().map(|t| t.0).collect();
        if self.cache.covers(&tokens) {
            return;
        }
        let Some(ctx) = self.ctx.as_ref() else {
            return;
        };
        match ctx.state_seq_get(slot.seq_id, LlamaStateSeqFlags::empty()) {
            Ok(state) => {
                let bytes = state.byte_len();
                self.cache.insert(tokens, state, bytes);
            }
            Err(e) => tracing::warn!(error = %e, "could not save a sequence state"),
        }
    }
}
