//! The batch plan: which slot puts which tokens into the next decode step,
//! which slot a new request takes, and how much of its cached KV it reuses.
//!
//! Pure decisions over plain numbers, no llama.cpp: the engine describes its
//! slots as [`SlotState`]s, asks [`plan_step`] for a [`Work`] list and then
//! only carries it out (fills the batch, decodes, samples where
//! [`Work::logits_at`] says). That keeps the scheduling rules, the part most
//! likely to be tuned, readable and tested here by table.
//!
//! # The rules
//! - Every decoding slot (one sampled token waiting to be evaluated) gets its
//!   token first, in slot order, as long as the batch has room; then its
//!   draft tokens (speculative decoding, see `draft`) right after its token.
//!   **Every decoding slot drafts the same number of tokens**: the shortest
//!   of their drafts (none when one of them has none), cut so that all fit
//!   in the batch less what a waiting prompt needs of its prefill chunk (at
//!   most half the batch): drafts never starve a prefill. Why even: with
//!   per-sequence KV (the worker's `kv_unified = false`) llama.cpp cuts a
//!   batch into ubatches that take the same number of tokens from each of
//!   a run of consecutive sequences (`llama_batch_allocr::split_equal`), so
//!   sequences putting 3, 5, 7 and 10 tokens into one step cost four graph
//!   evaluations, each reading all the weights, where 4 × 6 tokens cost
//!   one (`worker/examples/step_shape.rs` measures it; docs/benchmarks.md).
//! - Then prefilling slots, in slot order, get prompt chunks within a budget:
//!   the whole batch when nothing decodes, else at most `prefill_chunk`
//!   prompt tokens on top of the decode tokens, so a long prompt never stalls
//!   the running streams for more than one chunk.
//! - Logits are wanted for a decode token and each of its draft tokens, and
//!   for the last prompt token of a
//!   prompt that the chunk completes.
//! - A new request takes the free slot whose cached tokens share the longest
//!   prefix with its prompt (ties: the lowest index), and reuses that prefix,
//!   minus the last prompt token, which is always evaluated again so there
//!   are fresh logits to sample from.
//! - Where its KV comes from ([`pick_source`]): the slot's own cache, unless
//!   another slot (busy or not: its KV is copied) or a host-RAM prompt cache
//!   entry (restored) shares at least [`MIN_GAIN`] more tokens with the
//!   prompt; the longest wins, a slot before a host entry on a tie (a copy
//!   within llama.cpp's buffers is cheaper than a restore from host RAM).
//! - A request waits in the queue, a free slot notwithstanding, while a busy
//!   slot is still prefilling a prompt that shares at least [`MIN_GAIN`]
//!   more tokens with it than any KV it could reuse now
//!   ([`wait_for_prefill`]): once that slot has evaluated the shared part,
//!   the request copies it instead of evaluating it a second time (or
//!   copying the half done so far and evaluating the rest). The wait is
//!   bounded by that prefill: the slot advances every step, and the wait
//!   ends as soon as it has passed the shared part, finished, or gone.

use std::ops::Range;

/// One slot as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotState {
    /// A sequence runs in this slot.
    pub active: bool,
    /// Tokens whose KV is in the slot (prompt tokens evaluated so far, then
    /// generated ones).
    pub cached: usize,
    /// Length of the running sequence's prompt.
    pub prompt: usize,
    /// A sampled token waits to be decoded: the prompt is done.
    pub decoding: bool,
    /// Draft tokens proposed to follow that token.
    pub draft: usize,
}

/// Token limits of one decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The batch size (`n_batch`).
    pub batch: usize,
    /// Prompt tokens per step while other sequences decode.
    pub prefill_chunk: usize,
}

/// What a slot adds to the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Its sampled token, at position `cached`, then the first `draft`
    /// tokens of its draft, all with logits (consecutive batch indices from
    /// [`Work::logits_at`]).
    Decode { draft: usize },
    /// These prompt tokens, at their own positions.
    Prompt(Range<usize>),
}

/// One slot's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub slot: usize,
    pub feed: Feed,
    /// Batch index of the logits to sample from, when this step ends the
    /// slot's prompt or decodes its token.
    pub logits_at: Option<usize>,
}

/// The work of the next decode step, in batch order (decode tokens first).
/// Empty when no slot has anything to evaluate.
pub fn plan_step(slots: &[SlotState], budget: Budget) -> Vec<Work> {
    let mut plan = Vec::new();
    let decoding: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].active && slots[i].decoding)
        .take(budget.batch)
        .collect();
    // Drafts never take the whole room of the prefill chunk: a new
    // request's first token must not wait for other sequences' guesses.
    // At most half the batch is kept back, so drafts still ride along a
    // long prefill (with the default chunk, the whole batch).
    let pending: usize = slots
        .iter()
        .filter(|s| s.active && !s.decoding)
        .map(|s| s.prompt.saturating_sub(s.cached))
        .sum();
    let reserve = pending.min(budget.prefill_chunk).min(budget.batch / 2);
    let room = (budget.batch - decoding.len()).saturating_sub(reserve);
    // One draft length for every decoding slot (see the module's rules):
    // an even step is one ubatch, an uneven one several.
    let draft = decoding
        .iter()
        .map(|&slot| slots[slot].draft)
        .min()
        .unwrap_or(0)
        .min(room / decoding.len().max(1));
    let mut used = 0;
    for slot in decoding {
        plan.push(Work {
            slot,
            feed: Feed::Decode { draft },
            logits_at: Some(used),
        });
        used += 1 + draft;
    }
    let limit = match used {
        0 => budget.batch,
        decoding => budget.batch.min(decoding + budget.prefill_chunk),
    };
    for (slot, s) in slots.iter().enumerate() {
        if !s.active || s.decoding || s.cached >= s.prompt {
            continue;
        }
        if used >= limit {
            break;
        }
        let take = (s.prompt - s.cached).min(limit - used);
        let end = s.cached + take;
        plan.push(Work {
            slot,
            feed: Feed::Prompt(s.cached..end),
            logits_at: (end == s.prompt).then_some(used + take - 1),
        });
        used += take;
    }
    plan
}

/// The free slot (`Some(cached tokens)`; `None` is a busy slot) with the
/// longest cached prefix of `prompt`; ties go to the lowest index.
pub fn pick_slot<T: PartialEq>(slots: &[Option<&[T]>], prompt: &[T]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(i, cached)| cached.map(|c| (i, common_prefix(c, prompt))))
        .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

/// Fewer extra reused tokens than this are prefilled rather than copied or
/// restored: a copy moves a whole slot's buffer, a restore the whole saved
/// state, and a few dozen tokens of prefill cost about as much.
pub const MIN_GAIN: usize = 32;

/// Where a newly admitted request's reusable KV comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// What its slot holds already.
    Own,
    /// A copy of this other slot's sequence.
    Slot(usize),
    /// This host-RAM prompt cache entry.
    Host(usize),
}

/// Chooses the [`Source`], given the reusable lengths ([`reuse_len`]) of the
/// slot's own cache, of the best other slot `(index, reuse)` and of the
/// best host entry `(key, reuse)`.
pub fn pick_source(
    own: usize,
    slot: Option<(usize, usize)>,
    host: Option<(usize, usize)>,
) -> Source {
    let slot = slot.filter(|&(_, n)| n >= own + MIN_GAIN);
    let host = host.filter(|&(_, n)| n >= own + MIN_GAIN);
    match (slot, host) {
        (Some((i, s)), Some((_, h))) if s >= h => Source::Slot(i),
        (_, Some((k, _))) => Source::Host(k),
        (Some((i, _)), None) => Source::Slot(i),
        (None, None) => Source::Own,
    }
}

/// A slot still prefilling, as [`wait_for_prefill`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefilling {
    /// Its prompt tokens evaluated so far.
    pub cached: usize,
    /// Tokens its prompt shares with the waiting request's, as [`reuse_len`]
    /// counts them.
    pub shared: usize,
}

/// Whether a request that could reuse `now` tokens of KV at once should
/// rather wait for one of the `prefilling` slots: one that will, once its
/// prefill has passed them, hold at least [`MIN_GAIN`] more shared tokens
/// than `now` and does not hold them yet.
pub fn wait_for_prefill(now: usize, prefilling: &[Prefilling]) -> bool {
    prefilling
        .iter()
        .any(|p| p.shared >= now + MIN_GAIN && p.cached < p.shared)
}

/// A running slot, as [`plan_ahead`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lender {
    /// Its sequence is decoding (its prompt is evaluated): it can lend its
    /// slot between two steps; a prefilling one cannot.
    pub decoding: bool,
    /// Tokens in its KV (what saving and restoring it moves).
    pub cached: usize,
    /// Of them, those the queued prompt can reuse ([`reuse_len`]).
    pub shared: usize,
}

/// How a queued prompt is prefilled ahead, in a borrowed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    /// The slot lent.
    pub slot: usize,
    /// Where the reused prefix comes from: the lender's own KV, or a host entry.
    pub source: Source,
    /// Prompt tokens reused; the rest is evaluated.
    pub reuse: usize,
}

/// Whether and where a queued prompt of `prompt_len` tokens, with every slot
/// busy, is prefilled ahead (see `engine::ahead`): in the decoding slot whose
/// KV shares the longest prefix with it (ties: the one holding fewer tokens,
/// cheaper to save and restore), or, when a host entry `(key, reuse)` shares
/// at least [`MIN_GAIN`] more, from that entry in the decoding slot holding
/// the fewest tokens. `None` when no slot is decoding or more than `max_new`
/// tokens would be left to evaluate (a long prefill waits for a slot of its
/// own instead of stalling every stream for its whole length).
pub fn plan_ahead(
    lenders: &[Lender],
    host: Option<(usize, usize)>,
    prompt_len: usize,
    max_new: usize,
) -> Option<Ahead> {
    let decoding = || lenders.iter().enumerate().filter(|(_, l)| l.decoding);
    let (own, lender) = decoding()
        .max_by_key(|(i, l)| (l.shared, std::cmp::Reverse(l.cached), std::cmp::Reverse(*i)))?;
    let cheapest = decoding()
        .min_by_key(|(i, l)| (l.cached, *i))
        .map_or(own, |(i, _)| i);
    let ahead = match host.filter(|&(_, n)| n >= lender.shared + MIN_GAIN) {
        Some((key, reuse)) => Ahead {
            slot: cheapest,
            source: Source::Host(key),
            reuse,
        },
        None => Ahead {
            slot: own,
            source: Source::Own,
            reuse: lender.shared,
        },
    };
    (prompt_len.saturating_sub(ahead.reuse) <= max_new).then_some(ahead)
}

/// How many cached tokens a prompt keeps: the common prefix, but never the
/// last prompt token (it must be evaluated to get logits).
pub fn reuse_len<T: PartialEq>(cached: &[T], prompt: &[T]) -> usize {
    common_prefix(cached, prompt).min(prompt.len().saturating_sub(1))
}

fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: SlotState = SlotState {
        active: false,
        cached: 0,
        prompt: 0,
        decoding: false,
        draft: 0,
    };

    fn decoding(cached: usize) -> SlotState {
        SlotState {
            active: true,
            cached,
            prompt: 1,
            decoding: true,
            draft: 0,
        }
    }

    fn drafting(cached: usize, draft: usize) -> SlotState {
        SlotState {
            draft,
            ..decoding(cached)
        }
    }

    fn prefilling(cached: usize, prompt: usize) -> SlotState {
        SlotState {
            active: true,
            cached,
            prompt,
            decoding: false,
            draft: 0,
        }
    }

    fn decode(slot: usize, at: usize) -> Work {
        speculate(slot, at, 0)
    }

    fn speculate(slot: usize, at: usize, draft: usize) -> Work {
        Work {
            slot,
            feed: Feed::Decode { draft },
            logits_at: Some(at),
        }
    }

    fn prompt(slot: usize, range: Range<usize>, logits_at: Option<usize>) -> Work {
        Work {
            slot,
            feed: Feed::Prompt(range),
            logits_at,
        }
    }

    /// Tokens a work puts into the batch.
    fn len(w: &Work) -> usize {
        match &w.feed {
            Feed::Decode { draft } => 1 + draft,
            Feed::Prompt(range) => range.len(),
        }
    }

    const BUDGET: Budget = Budget {
        batch: 16,
        prefill_chunk: 4,
    };

    #[test]
    fn plans_follow_the_rules() {
        let table: Vec<(&str, Vec<SlotState>, Budget, Vec<Work>)> = vec![
            ("nothing to do", vec![FREE, FREE], BUDGET, vec![]),
            (
                "a short prompt alone: all of it, logits on its last token",
                vec![prefilling(0, 5)],
                BUDGET,
                vec![prompt(0, 0..5, Some(4))],
            ),
            (
                "a long prompt alone: the whole batch, no logits yet",
                vec![prefilling(0, 40)],
                BUDGET,
                vec![prompt(0, 0..16, None)],
            ),
            (
                "the rest of a chunked prompt",
                vec![prefilling(32, 40)],
                BUDGET,
                vec![prompt(0, 32..40, Some(7))],
            ),
            (
                "decode tokens first, in slot order",
                vec![FREE, decoding(9), decoding(3)],
                BUDGET,
                vec![decode(1, 0), decode(2, 1)],
            ),
            (
                "while others decode, at most prefill_chunk prompt tokens",
                vec![prefilling(0, 40), decoding(9)],
                BUDGET,
                vec![decode(1, 0), prompt(0, 0..4, None)],
            ),
            (
                "the chunk is shared by prefilling slots in slot order",
                vec![decoding(9), prefilling(0, 3), prefilling(0, 3)],
                BUDGET,
                vec![
                    decode(0, 0),
                    prompt(1, 0..3, Some(3)),
                    prompt(2, 0..1, None),
                ],
            ),
            (
                "a prompt that is fully cached is not planned",
                vec![prefilling(5, 5), prefilling(0, 2)],
                BUDGET,
                vec![prompt(1, 0..2, Some(1))],
            ),
            (
                "a chunk larger than the batch is capped by the batch",
                vec![decoding(1), prefilling(0, 40)],
                Budget {
                    batch: 8,
                    prefill_chunk: 64,
                },
                vec![decode(0, 0), prompt(1, 0..7, None)],
            ),
            (
                "drafts follow their token, in slot order, one length for all: the shortest",
                vec![drafting(9, 3), drafting(4, 20), FREE, drafting(2, 5)],
                BUDGET,
                vec![speculate(0, 0, 3), speculate(1, 4, 3), speculate(3, 8, 3)],
            ),
            (
                "a decoding slot without a draft keeps every draft out of the step",
                vec![drafting(9, 3), drafting(4, 20), decoding(2)],
                BUDGET,
                vec![decode(0, 0), decode(1, 1), decode(2, 2)],
            ),
            (
                "drafts share the batch evenly",
                vec![drafting(9, 20), drafting(4, 20), drafting(2, 20)],
                BUDGET,
                vec![speculate(0, 0, 4), speculate(1, 5, 4), speculate(2, 10, 4)],
            ),
            (
                "drafts take room from the prefill chunk, not the reverse",
                vec![drafting(9, 2), prefilling(0, 40)],
                BUDGET,
                vec![speculate(0, 0, 2), prompt(1, 0..4, None)],
            ),
            (
                "drafts leave the prefill chunk to a waiting prompt",
                vec![drafting(9, 20), prefilling(0, 40)],
                Budget {
                    batch: 8,
                    prefill_chunk: 4,
                },
                vec![speculate(0, 0, 3), prompt(1, 0..4, None)],
            ),
            (
                "a short prompt reserves only what it needs",
                vec![drafting(9, 20), prefilling(0, 2)],
                Budget {
                    batch: 8,
                    prefill_chunk: 4,
                },
                vec![speculate(0, 0, 5), prompt(1, 0..2, Some(7))],
            ),
            (
                "at most half the batch is kept back for a prompt",
                vec![drafting(9, 20), prefilling(0, 40)],
                Budget {
                    batch: 8,
                    prefill_chunk: 8,
                },
                vec![speculate(0, 0, 3), prompt(1, 0..4, None)],
            ),
            (
                "more decoding slots than batch room: the first ones decode",
                vec![decoding(1), decoding(1), decoding(1), prefilling(0, 4)],
                Budget {
                    batch: 2,
                    prefill_chunk: 4,
                },
                vec![decode(0, 0), decode(1, 1)],
            ),
        ];
        for (why, slots, budget, want) in table {
            assert_eq!(plan_step(&slots, budget), want, "{why}");
        }
    }

    #[test]
    fn a_plan_never_exceeds_the_batch() {
        for batch in 1..12 {
            for chunk in 1..12 {
                let slots = [
                    prefilling(0, 9),
                    drafting(2, 5),
                    prefilling(3, 20),
                    drafting(1, 7),
                ];
                let budget = Budget {
                    batch,
                    prefill_chunk: chunk,
                };
                let plan = plan_step(&slots, budget);
                let total: usize = plan.iter().map(len).sum();
                assert!(total <= batch, "batch {batch} chunk {chunk}: {plan:?}");
                assert!(plan.iter().all(|w| len(w) > 0));
                let drafts: Vec<usize> = plan
                    .iter()
                    .filter_map(|w| match w.feed {
                        Feed::Decode { draft } => Some(draft),
                        Feed::Prompt(_) => None,
                    })
                    .collect();
                assert!(drafts.windows(2).all(|d| d[0] == d[1]), "uneven: {plan:?}");
            }
        }
    }

    #[test]
    fn the_free_slot_with_the_longest_cached_prefix_is_chosen() {
        let (a, b, c) = ([9, 9], [1, 2, 3], [1, 2]);
        let slots: [Option<&[i32]>; 3] = [Some(&a), Some(&b), Some(&c)];
        assert_eq!(pick_slot(&slots, &[1, 2, 3, 4]), Some(1));
        assert_eq!(pick_slot(&slots, &[5]), Some(0), "ties: the lowest index");
        let busy: [Option<&[i32]>; 3] = [Some(&a), None, Some(&c)];
        assert_eq!(pick_slot(&busy, &[1, 2, 3, 4]), Some(2));
        assert_eq!(pick_slot::<i32>(&[None, None], &[1]), None);
    }

    #[test]
    fn the_source_with_the_longest_reuse_wins_by_at_least_min_gain() {
        let g = MIN_GAIN;
        let table = [
            ("nothing better", 10, None, None, Source::Own),
            (
                "a slot, not enough gain",
                10,
                Some((1, 10 + g - 1)),
                None,
                Source::Own,
            ),
            (
                "a slot, enough gain",
                10,
                Some((1, 10 + g)),
                None,
                Source::Slot(1),
            ),
            ("a host entry", 0, None, Some((3, 500)), Source::Host(3)),
            (
                "the longer of the two",
                0,
                Some((2, 400)),
                Some((3, 500)),
                Source::Host(3),
            ),
            (
                "a tie goes to the slot",
                0,
                Some((2, 500)),
                Some((3, 500)),
                Source::Slot(2),
            ),
            (
                "own cache long enough",
                480,
                Some((2, 500)),
                Some((3, 500)),
                Source::Own,
            ),
        ];
        for (why, own, slot, host, want) in table {
            assert_eq!(pick_source(own, slot, host), want, "{why}");
        }
    }

    #[test]
    fn a_request_waits_for_a_prefill_that_will_give_it_a_longer_prefix() {
        let g = MIN_GAIN;
        let p = |cached, shared| Prefilling { cached, shared };
        let table: [(&str, usize, &[Prefilling], bool); 7] = [
            ("nothing prefilling", 0, &[], false),
            ("a shared prefix half evaluated", 0, &[p(512, 1600)], true),
            (
                "the shared part evaluated: copy now",
                0,
                &[p(1600, 1600)],
                false,
            ),
            ("evaluated past it", 0, &[p(2000, 1600)], false),
            (
                "too little to gain over what is here",
                1600 - g + 1,
                &[p(0, 1600)],
                false,
            ),
            ("just enough to gain", 1600 - g, &[p(0, 1600)], true),
            ("any of several", 100, &[p(0, 50), p(10, 900)], true),
        ];
        for (why, now, prefilling, want) in table {
            assert_eq!(wait_for_prefill(now, prefilling), want, "{why}");
        }
    }

    #[test]
    fn ahead_borrows_the_slot_sharing_most_or_restores_a_longer_host_entry() {
        let l = |decoding, cached, shared| Lender {
            decoding,
            cached,
            shared,
        };
        let ahead = |slot, source, reuse| {
            Some(Ahead {
                slot,
                source,
                reuse,
            })
        };
        // Slot 1 shares the most; slot 0 is prefilling and cannot lend.
        let slots = [l(false, 900, 900), l(true, 1800, 1611), l(true, 1700, 1500)];
        assert_eq!(
            plan_ahead(&slots, None, 1660, 512),
            ahead(1, Source::Own, 1611)
        );
        // A host entry sharing 1,650 tokens: restored into the cheapest lender.
        assert_eq!(
            plan_ahead(&slots, Some((7, 1650)), 1660, 512),
            ahead(2, Source::Host(7), 1650)
        );
        // Not enough more than the lender's own prefix: the lender's KV.
        assert_eq!(
            plan_ahead(&slots, Some((7, 1620)), 1660, 512),
            ahead(1, Source::Own, 1611)
        );
        // Equal shares: the lender holding fewer tokens.
        let tie = [l(true, 2000, 100), l(true, 300, 100)];
        assert_eq!(plan_ahead(&tie, None, 150, 512), ahead(1, Source::Own, 100));
        // Too much left to evaluate, or no decoding slot: wait.
        assert_eq!(plan_ahead(&slots, None, 1611 + 513, 512), None);
        assert_eq!(plan_ahead(&slots[..1], None, 10, 512), None);
        assert_eq!(plan_ahead(&[], None, 10, 512), None);
    }

    #[test]
    fn common_prefix_counts_matching_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix::<i32>(&[], &[1]), 0);
    }

    #[test]
    fn reuse_keeps_the_common_prefix_but_never_the_last_prompt_token() {
        let table: [(&[i32], &[i32], usize); 5] = [
            (&[1, 2, 3], &[1, 2, 4], 2),
            (&[], &[1], 0),
            (&[1, 2, 3], &[1, 2, 3], 2),
            (&[1, 2, 3, 4, 5], &[1, 2, 3], 2),
            (&[7], &[1, 2], 0),
        ];
        for (cached, prompt, want) in table {
            assert_eq!(reuse_len(cached, prompt), want, "{cached:?} / {prompt:?}");
        }
    }
}
