//! Speculative decoding's drafts: before each step, every decoding
//! sequence gets a draft as long as its `draft::Pace` allows: the draft
//! model's greedy continuation when the model has one (`drafter`), else the
//! n-gram draft of its own tokens (`draft::lookup`). The drafts are
//! verified in `Engine::after_decode`, which tells the pace how many were
//! kept.

use super::{Engine, Slot};
use crate::draft;
use crate::drafter::Ask;

impl Engine<'_> {
    /// Gives every decoding sequence its draft, within its context and its
    /// `max_tokens`.
    pub(super) fn draft(&mut self) {
        if self.drafter.is_some() {
            return self.draft_with_model();
        }
        if self.spec_ngram == 0 {
            return;
        }
        for slot in &mut self.slots {
            let max = allowed(slot, self.ctx_per_slot, self.spec_draft);
            let Some(seq) = slot.active.as_mut().filter(|_| max > 0) else {
                continue;
            };
            // The lookup sees the token the step decodes next.
            slot.cached.extend(seq.next);
            let found = draft::lookup(&slot.cached, self.spec_ngram, max);
            seq.draft.extend_from_slice(found);
            slot.cached.pop();
        }
    }

    /// [`Engine::draft`] with the draft model: one call for every sequence
    /// that may draft, so that its rounds batch them all.
    fn draft_with_model(&mut self) {
        let (ctx_per_slot, spec_draft) = (self.ctx_per_slot, self.spec_draft);
        // (slot, most draft tokens); each such slot's `cached` holds its
        // `next` token while the drafter reads it.
        let mut wanting = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let max = allowed(slot, ctx_per_slot, spec_draft);
            if let Some(seq) = slot.active.as_ref().filter(|_| max > 0) {
                slot.cached.extend(seq.next);
                wanting.push((i, max));
            }
        }
        let Some(drafter) = self.drafter.as_mut() else {
            return;
        };
        let asks: Vec<Ask> = wanting
            .iter()
            .map(|&(i, max)| Ask {
                seq: i,
                context: &self.slots[i].cached,
                max,
            })
            .collect();
        let drafts = drafter.draft(&asks);
        for (&(i, _), found) in wanting.iter().zip(drafts) {
            let slot = &mut self.slots[i];
            slot.cached.pop();
            if let Some(seq) = slot.active.as_mut() {
                seq.draft = found;
            }
        }
    }
}

/// Clears `slot`'s draft and returns how many draft tokens its sequence may
/// take this step: none when it is not decoding (no sequence, or its prompt
/// not done), else what its pace allows within its context (`next` goes at
/// `cached.len()`, the draft after it) and its `max_tokens`.
fn allowed(slot: &mut Slot, ctx_per_slot: usize, spec_draft: usize) -> usize {
    let Some(seq) = slot.active.as_mut() else {
        return 0;
    };
    seq.draft.clear();
    if seq.next.is_none() {
        return 0;
    }
    let room = ctx_per_slot.saturating_sub(slot.cached.len() + 1);
    let left = seq.params.max_tokens.map_or(usize::MAX, |max| {
        (max.saturating_sub(seq.usage.completion_tokens) as usize).saturating_sub(1)
    });
    seq.pace.allowed(spec_draft).min(room).min(left)
}
