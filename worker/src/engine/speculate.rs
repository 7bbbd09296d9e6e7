//! Speculative decoding's drafts: before each step, every decoding
//! sequence gets the n-gram draft of its own tokens (`draft::lookup`), as
//! long as its `draft::Pace` allows. The drafts are verified in
//! `Engine::after_decode`, which tells the pace how many were kept.

use super::Engine;
use crate::draft;

impl Engine<'_> {
    /// Gives every decoding sequence its n-gram draft, within its context
    /// and its `max_tokens`.
    pub(super) fn draft(&mut self) {
        if self.spec_ngram == 0 {
            return;
        }
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            seq.draft.clear();
            let Some(next) = seq.next else { continue };
            // Positions: `next` at cached.len(), the draft after it.
            let room = self.ctx_per_slot.saturating_sub(slot.cached.len() + 1);
            let left = seq.params.max_tokens.map_or(usize::MAX, |max| {
                (max.saturating_sub(seq.usage.completion_tokens) as usize).saturating_sub(1)
            });
            let max = seq.pace.allowed(self.spec_draft).min(room).min(left);
            if max == 0 {
                continue;
            }
            slot.cached.push(next);
            let found = draft::lookup(&slot.cached, self.spec_ngram, max);
            seq.draft.extend_from_slice(found);
            slot.cached.pop();
        }
    }
}
