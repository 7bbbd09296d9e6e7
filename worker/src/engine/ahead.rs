//! Prefill ahead: a request that would wait for a slot is started at once in
//! a borrowed one, and parked in host RAM until a slot is its own.
//!
//! With every slot busy, a queued request waits for a sequence to end; on
//! agent workloads (many conversations over one long shared prefix, more of
//! them than slots) that wait is most of its time to first token, while its
//! own prefill, the shared prefix being cached, is a few dozen tokens. So,
//! between two steps, the engine:
//! 1. picks a decoding slot to lend ([`plan::plan_ahead`]: the one whose KV
//!    shares the longest prefix with the queued prompt, or a host-RAM cache
//!    entry that shares more) and saves that slot's sequence state;
//! 2. cuts the slot's KV back to the shared prefix (or restores the host
//!    entry into it), evaluates the rest of the queued prompt in one decode
//!    and samples its first token, which is streamed at once;
//! 3. saves the new sequence's state (its prompt's KV) to host RAM, where it
//!    waits *parked*, and restores the lender's state, which goes on with
//!    its next step as if nothing had happened.
//!
//! A parked sequence takes the next free slot before any queued request
//! (oldest first), its state restored, and decodes from its second token on
//! ([`Engine::resume_parked`]). The work is the same prefill, only earlier:
//! the running streams pay one extra decode per early start, the parked
//! request's second token waits for a slot as its first one used to.
//!
//! Bounds: one early start per turn; only when at most one prefill chunk
//! (`--prefill-chunk`, by default the batch) of the
//! prompt is left to evaluate; the parked states' bytes are reserved in the
//! host-RAM prompt cache (evicting its least recently used entries) and may
//! take at most half of it; off with `prefill_ahead = false` or a cache of 0.
//! Greedy output is the same as without it (the KV moved is bytes, the
//! sampler the sequence's own), which a real-model test checks.

use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use llm_node_protocol::{Event, FailureKind, RequestId};

use super::Engine;
use crate::plan::{self, Feed, Lender, Source, Work};
use crate::sequence::Sequence;

/// A started sequence waiting for a slot, its KV in host RAM.
pub(super) struct Parked {
    pub(super) seq: Sequence,
    /// The tokens its state holds (its prompt), in position order.
    tokens: Vec<LlamaToken>,
    state: SeqState,
    /// Bytes reserved for it in the prompt cache.
    reserved: usize,
}

impl Engine<'_> {
    /// Moves parked sequences into free slots, oldest first, restoring their
    /// state. A slot's own KV is saved to the host-RAM cache before, as on
    /// any admission that drops it.
    pub(super) fn resume_parked(&mut self) -> Result<(), super::Disconnected> {
        while !self.parked.is_empty() {
            let Some(i) = self.slots.iter().position(|s| s.active.is_none()) else {
                return Ok(());
            };
            let p = self.parked.pop_front().expect("not empty");
            self.cache.release(p.reserved);
            self.parked_bytes -= p.reserved;
            self.save(i);
            let seq_id = self.slots[i].seq_id;
            let Some(ctx) = self.ctx.as_mut() else {
                return Ok(());
            };
            let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            self.slots[i].cached.clear();
            if let Err(e) = ctx.state_seq_set(&p.state, seq_id) {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                let message = format!("could not restore a parked sequence: {e}");
                self.fail(p.seq.id, FailureKind::Internal, message)?;
                continue;
            }
            tracing::debug!(trace = p.seq.trace, slot = seq_id, "resumed");
            self.slots[i].cached = p.tokens;
            self.slots[i].active = Some(p.seq);
        }
        Ok(())
    }

    /// Starts the oldest queued request ahead in a borrowed slot, when every
    /// slot is busy and [`plan::plan_ahead`] finds a way (see the module).
    pub(super) fn prefill_ahead(&mut self) -> Result<(), super::Disconnected> {
        if !self.prefill_ahead || self.slots.iter().any(|s| s.active.is_none()) {
            return Ok(());
        }
        let Some(front) = self.waiting.front() else {
            return Ok(());
        };
        let lenders: Vec<Lender> = self
            .slots
            .iter()
            .map(|s| Lender {
                decoding: s.active.as_ref().is_some_and(|q| q.next.is_some()),
                cached: s.cached.len(),
                shared: plan::reuse_len(&s.cached, &front.tokens),
            })
            .collect();
        let ids: Vec<i32> = front.tokens.iter().map(|t| t.0).collect();
        let Some(ahead) = plan::plan_ahead(
            &lenders,
            self.host_match(&ids),
            ids.len(),
            self.budget.prefill_chunk,
        ) else {
            return Ok(());
        };
        let i = ahead.slot;
        let seq_id = self.slots[i].seq_id;
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(());
        };
        let lender_state = match ctx.state_seq_get(seq_id, LlamaStateSeqFlags::empty()) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "could not save a sequence state; no early start");
                return Ok(());
            }
        };
        // The new sequence's state is about as large, per token, as the lender's.
        let lender_len = self.slots[i].cached.len().max(1);
        let reserve = lender_state.byte_len() / lender_len * (ids.len() + 1) + 64 * 1024;
        if self.parked_bytes + reserve > self.cache.capacity() / 2 || !self.cache.reserve(reserve) {
            return Ok(());
        }
        self.parked_bytes += reserve;
        // The reservation may have evicted the host entry planned on (and
        // moved the others' keys): plan again; a change of lender is rare.
        let ahead = plan::plan_ahead(
            &lenders,
            self.host_match(&ids),
            ids.len(),
            self.budget.prefill_chunk,
        )
        .filter(|a| a.slot == i);
        let Some(ahead) = ahead else {
            self.cache.release(reserve);
            self.parked_bytes -= reserve;
            return Ok(());
        };
        let lender = std::mem::take(&mut self.slots[i].active);
        let lender_cached = std::mem::take(&mut self.slots[i].cached);
        let reuse = self.borrow_prefix(i, ahead.source, &lender_cached, ahead.reuse);
        if ids.len() - reuse > self.budget.prefill_chunk {
            // llama.cpp refused to cut the KV back: no early start.
            self.cache.release(reserve);
            self.parked_bytes -= reserve;
            return self.give_back(i, lender, lender_cached, &lender_state);
        }

        let w = self.waiting.pop_front().expect("front exists");
        self.sink.send(Event::Started {
            id: w.id,
            prompt_tokens: w.tokens.len() as u32,
            reasoning_open: w.reasoning_open,
        })?;
        tracing::debug!(
            trace = w.trace,
            slot = seq_id,
            cached = reuse,
            "started ahead"
        );
        self.ahead += 1;
        let len = w.tokens.len();
        self.slots[i].active = Some(Sequence::start(w, reuse as u32));
        let ran = self.prefill_alone(i, reuse, len);

        // The new sequence, if it did not end at its first token, is parked.
        let parked = match (ran, self.slots[i].active.take()) {
            (Ok(()), Some(seq)) => self.park(i, seq, reserve),
            (ran, _) => ran.map(|()| false),
        };
        if !matches!(parked, Ok(true)) {
            self.cache.release(reserve);
            self.parked_bytes -= reserve;
        }
        self.give_back(i, lender, lender_cached, &lender_state)?;
        parked.map(|_| ())
    }

    /// The host-RAM cache entry sharing the longest reusable prefix with
    /// `prompt`, as `(key, reuse)`.
    fn host_match(&self, prompt: &[i32]) -> Option<(usize, usize)> {
        self.cache
            .best(prompt)
            .map(|(key, shared)| (key, shared.min(prompt.len().saturating_sub(1))))
    }

    /// Fills borrowed slot `i` with the queued prompt's reused prefix:
    /// the lender's own KV cut back to `reuse` tokens, or a host entry's.
    /// Returns the tokens reused (0 when llama.cpp refused either).
    fn borrow_prefix(
        &mut self,
        i: usize,
        source: Source,
        lender: &[LlamaToken],
        reuse: usize,
    ) -> usize {
        let seq_id = self.slots[i].seq_id;
        let Some(ctx) = self.ctx.as_mut() else {
            return 0;
        };
        let kept = match source {
            Source::Host(key) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                let (tokens, state) = self.cache.restore(key);
                let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
                match ctx.state_seq_set(state, seq_id) {
                    Ok(()) => tokens,
                    Err(e) => {
                        tracing::warn!(error = %e, "prompt cache restore failed; prefilling");
                        self.cache.remove(key);
                        Vec::new()
                    }
                }
            }
            Source::Own | Source::Slot(_) => lender.to_vec(),
        };
        let reuse = reuse.min(kept.len());
        let cut = ctx
            .clear_kv_cache_seq(Some(seq_id as u32), Some(reuse as u32), None)
            .unwrap_or(false);
        self.slots[i].cached = kept;
        if cut {
            self.slots[i].cached.truncate(reuse);
            reuse
        } else {
            let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            self.slots[i].cached.clear();
            0
        }
    }

    /// Evaluates slot `i`'s prompt from `from` to `len` in decodes of its
    /// own (a batch each) and samples its first token.
    fn prefill_alone(
        &mut self,
        i: usize,
        from: usize,
        len: usize,
    ) -> Result<(), super::Disconnected> {
        let mut at = from;
        while at < len && self.slots[i].active.is_some() {
            let end = len.min(at + self.budget.batch);
            let work = Work {
                slot: i,
                feed: Feed::Prompt(at..end),
                logits_at: (end == len).then(|| end - at - 1),
            };
            self.fill_batch(std::slice::from_ref(&work));
            let Some(ctx) = self.ctx.as_mut() else {
                return Ok(());
            };
            if let Err(e) = ctx.decode(&mut self.batch) {
                let message = format!("llama.cpp decode failed: {e}");
                return self.abort_slot(i, FailureKind::Internal, message);
            }
            self.after_decode(&work)?;
            at = end;
        }
        Ok(())
    }

    /// Saves borrowed slot `i`'s new sequence `seq` to host RAM, parked
    /// (`reserved` bytes held for it). Returns whether it was parked; when
    /// its state cannot be saved, the sequence fails.
    fn park(
        &mut self,
        i: usize,
        seq: Sequence,
        reserved: usize,
    ) -> Result<bool, super::Disconnected> {
        let seq_id = self.slots[i].seq_id;
        let Some(ctx) = self.ctx.as_ref() else {
            return Ok(false);
        };
        match ctx.state_seq_get(seq_id, LlamaStateSeqFlags::empty()) {
            Ok(state) => {
                // Rare: the estimate fell short. Reserve the rest when the
                // cache has room; else the bound is off by that much while
                // the sequence is parked.
                let extra = state.byte_len().saturating_sub(reserved);
                let reserved = match extra > 0 && self.cache.reserve(extra) {
                    true => {
                        self.parked_bytes += extra;
                        reserved + extra
                    }
                    false => reserved,
                };
                let tokens = std::mem::take(&mut self.slots[i].cached);
                self.parked.push_back(Parked {
                    seq,
                    tokens,
                    state,
                    reserved,
                });
                Ok(true)
            }
            Err(e) => {
                let message = format!("could not park a sequence started ahead: {e}");
                self.fail(seq.id, FailureKind::Internal, message)
                    .map(|()| false)
            }
        }
    }

    /// Puts the lender back into slot `i`: its state, tokens and sequence.
    /// Should llama.cpp refuse the state, the lender's sequence fails.
    fn give_back(
        &mut self,
        i: usize,
        lender: Option<Sequence>,
        cached: Vec<LlamaToken>,
        state: &SeqState,
    ) -> Result<(), super::Disconnected> {
        let seq_id = self.slots[i].seq_id;
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(());
        };
        let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
        self.slots[i].cached.clear();
        match ctx.state_seq_set(state, seq_id) {
            Ok(()) => {
                self.slots[i].cached = cached;
                self.slots[i].active = lender;
                Ok(())
            }
            Err(e) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                match lender {
                    Some(seq) => {
                        let message = format!("could not restore a lent slot: {e}");
                        self.fail(seq.id, FailureKind::Internal, message)
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Cancels a parked sequence; `true` when `id` was one.
    pub(super) fn cancel_parked(&mut self, id: RequestId) -> Result<bool, super::Disconnected> {
        let Some(pos) = self.parked.iter().position(|p| p.seq.id == id) else {
            return Ok(false);
        };
        let p = self.parked.remove(pos).expect("found");
        self.cache.release(p.reserved);
        self.parked_bytes -= p.reserved;
        self.sink.send(p.seq.cancelled()).map(|()| true)
    }
}
