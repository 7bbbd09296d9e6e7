//! Speculative decoding's drafts: before each step, every decoding
//! sequence gets a draft as long as its `draft::Pace` allows: the draft
//! model's greedy continuation when the model has one (`drafter`), else the
//! n-gram draft of its own tokens (`draft::lookup`). The drafts are
//! verified in `Engine::after_decode`, which tells the pace how many were
//! kept.

use super::Engine;
use crate::draft;
use crate::drafter::Ask;

impl Engine<'_> {
    /// Gives every decoding sequence its draft, within its context and its
    /// `max_tokens`.
    pub(super) fn draft(&mut self) {
        if self.spec_ngram == 0 && self.drafter.is_none() {
            return;
        }
        // (slot, most draft tokens) of the sequences that may draft.
        let mut wanting = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            seq.draft.clear();
            if seq.next.is_none() {
                continue;
            }
            // Positions: `next` at cached.len(), the draft after it.
            let room = self.ctx_per_slot.saturating_sub(slot.cached.len() + 1);
            let left = seq.params.max_tokens.map_or(usize::MAX, |max| {
                (max.saturating_sub(seq.usage.completion_tokens) as usize).saturating_sub(1)
            });
            let max = seq.pace.allowed(self.spec_draft).min(room).min(left);
            if max > 0 {
                wanting.push((i, max));
            }
        }
        // Each drafting slot's `cached` holds its `next` token while drafting.
        for &(i, _) in &wanting {
            let slot = &mut self.slots[i];
            slot.cached
                .extend(slot.active.as_ref().and_then(|s| s.next));
        }
        let drafts: Vec<Vec<_>> = match self.drafter.as_mut() {
            Some(drafter) => {
                let asks: Vec<Ask> = wanting
                    .iter()
                    .map(|&(i, max)| Ask {
                        seq: i,
                        context: &self.slots[i].cached,
                        max,
                    })
                    .collect();
                drafter.draft(&asks)
            }
            None => wanting
                .iter()
                .map(|&(i, max)| {
                    draft::lookup(&self.slots[i].cached, self.spec_ngram, max).to_vec()
                })
                .collect(),
        };
        for (&(i, _), found) in wanting.iter().zip(drafts) {
            let slot = &mut self.slots[i];
            slot.cached.pop();
            if let Some(seq) = slot.active.as_mut() {
                seq.draft = found;
            }
        }
    }
}
