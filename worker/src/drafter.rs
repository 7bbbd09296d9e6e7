//! Speculative decoding with a draft model: a second, smaller model that
//! shares the target model's vocabulary proposes each sequence's next
//! tokens by greedy decoding; the target verifies them in its continuous
//! batch exactly as it verifies n-gram drafts (see the engine's
//! `after_decode`), so which tokens come out never depends on the drafts.
//!
//! # Contract
//! - [`Drafter::new`] refuses (permanently) a draft model whose vocabulary
//!   does not match the target's the way llama.cpp's own check wants it
//!   (`common_speculative_are_compatible`: same vocabulary type, same
//!   BOS/EOS and add-BOS setting, sizes within [`MAX_VOCAB_DIFFERENCE`],
//!   the same text for every token from id [`CHECK_FROM`] on), and a
//!   recurrent or hybrid draft model (its memory cannot drop rejected
//!   tokens).
//! - The draft context has one KV sequence per slot (`seq_id` = slot), as
//!   the target's does. [`Drafter::draft`] keeps each of them in step with
//!   the tokens it is given: what the draft KV holds past their common
//!   prefix is removed, the rest is evaluated (at most `n_batch` tokens over
//!   all sequences per call, so a long new prompt never stalls a step for
//!   more than one batch; a sequence still catching up drafts nothing that
//!   step). No other bookkeeping: a slot that changed hands, restored a
//!   state or rejected a draft is just a different token list.
//! - A draft is the draft model's greedy continuation, one token a round for
//!   every drafting sequence in one batch, and stops at the sequence's
//!   `max`, at a token the draft model is less than [`P_MIN`] sure of
//!   (llama.cpp's default `--draft-p-min`), at an end-of-generation token or
//!   at one the target's vocabulary does not have.
//! - Nothing here fails a request: a draft decode that llama.cpp refuses
//!   clears that draft sequence and yields no draft.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::WorkerConfig;

use crate::load::{new_draft_context, LoadError};

/// Most a draft's vocabulary size may differ from the target's (llama.cpp's
/// `SPEC_VOCAB_MAX_SIZE_DIFFERENCE`).
pub const MAX_VOCAB_DIFFERENCE: i32 = 128;

/// First token id whose text must match (llama.cpp's
/// `SPEC_VOCAB_CHECK_START_TOKEN_ID`: the first few are special tokens that
/// models of one family name differently).
pub const CHECK_FROM: i32 = 5;

/// A draft stops at a token the draft model gives less probability than this.
pub const P_MIN: f32 = 0.75;

/// One sequence that wants a draft.
pub struct Ask<'a> {
    /// Its slot (the KV sequence in both contexts).
    pub seq: usize,
    /// Its tokens so far, the one the next step decodes included.
    pub context: &'a [LlamaToken],
    /// Most draft tokens it can take.
    pub max: usize,
}

/// The draft model's context and what each of its sequences holds.
pub struct Drafter<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// The tokens whose KV each draft sequence holds, in order.
    held: Vec<Vec<LlamaToken>>,
    /// The target's vocabulary size: a drafted id at or above it is cut.
    target_vocab: i32,
}

impl<'m> Drafter<'m> {
    /// A drafter for `target` with `draft`'s context sized as the target's
    /// (`parallel` sequences of `ctx_per_slot`).
    ///
    /// # Errors
    /// [`LoadError`]: permanent when the draft model cannot serve `target`
    /// (see the module's contract), else when its context cannot be made.
    pub fn new(
        backend: &LlamaBackend,
        draft: &'m LlamaModel,
        target: &LlamaModel,
        config: &WorkerConfig,
    ) -> Result<Self, LoadError> {
        let permanent = |message: String| LoadError {
            message,
            permanent: true,
        };
        if draft.is_recurrent() || draft.is_hybrid() {
            return Err(permanent(
                "the draft model is recurrent or hybrid: its memory cannot drop rejected \
                 draft tokens; use a transformer draft model"
                    .into(),
            ));
        }
        compatible(draft, target).map_err(|why| {
            permanent(format!(
                "the draft model cannot draft for this model: {why} (a draft model must share \
                 the model's tokenizer, e.g. a smaller model of the same family)"
            ))
        })?;
        let ctx = new_draft_context(backend, draft, config)?;
        let n_batch = config.batch_size.max(16) as usize;
        Ok(Self {
            model: draft,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            held: vec![Vec::new(); config.parallel.max(1) as usize],
            target_vocab: target.n_vocab(),
        })
    }

    /// Drafts for every ask, in their order (an empty draft for one that is
    /// still catching up, or whose draft model is unsure at once).
    pub fn draft(&mut self, asks: &[Ask]) -> Vec<Vec<LlamaToken>> {
        let mut drafts = vec![Vec::new(); asks.len()];
        // Catch up: every sequence's tokens past what its KV holds, within
        // one batch over all sequences.
        let mut budget = self.n_batch;
        let mut catching: Vec<(usize, usize, usize)> = Vec::new(); // (ask, from, to)
        for (a, ask) in asks.iter().enumerate() {
            if ask.max == 0 || ask.context.is_empty() || ask.seq >= self.held.len() {
                continue;
            }
            let from = self.sync(ask.seq, ask.context);
            let to = ask.context.len().min(from + budget);
            if to > from {
                budget -= to - from;
                catching.push((a, from, to));
            }
        }
        if catching.is_empty() {
            return drafts;
        }
        self.batch.clear();
        let mut firsts: Vec<(usize, i32)> = Vec::new(); // (ask, batch index)
        for &(a, from, to) in &catching {
            let ask = &asks[a];
            for pos in from..to {
                let last = pos + 1 == ask.context.len();
                if last {
                    firsts.push((a, self.batch.n_tokens()));
                }
                let added = self
                    .batch
                    .add(ask.context[pos], pos as i32, &[ask.seq as i32], last);
                debug_assert!(added.is_ok(), "catch-up exceeds the batch");
            }
        }
        if !self.decode(catching.iter().map(|&(a, ..)| asks[a].seq)) {
            return drafts;
        }
        for &(a, from, to) in &catching {
            let held = &mut self.held[asks[a].seq];
            debug_assert_eq!(held.len(), from);
            held.extend_from_slice(&asks[a].context[from..to]);
        }
        // Draft rounds: each drafting sequence's best token, then one batch
        // evaluating all of them for the next round.
        let mut live: Vec<(usize, LlamaToken, f32)> = firsts
            .iter()
            .map(|&(a, idx)| {
                let (token, p) = best(self.ctx.get_logits_ith(idx));
                (a, token, p)
            })
            .collect();
        while !live.is_empty() {
            self.batch.clear();
            let mut next = Vec::with_capacity(live.len());
            for &(a, token, p) in &live {
                if !self.usable(token, p) {
                    continue;
                }
                let ask = &asks[a];
                drafts[a].push(token);
                // At its most (no need to evaluate its last token), or the
                // round's batch is full (more slots than `n_batch`): done.
                if drafts[a].len() >= ask.max || self.batch.n_tokens() as usize >= self.n_batch {
                    continue;
                }
                let pos = ask.context.len() + drafts[a].len() - 1;
                next.push((a, self.batch.n_tokens()));
                let added = self.batch.add(token, pos as i32, &[ask.seq as i32], true);
                debug_assert!(added.is_ok(), "one token per sequence fits");
            }
            if next.is_empty() || !self.decode(next.iter().map(|&(a, _)| asks[a].seq)) {
                break;
            }
            live = next
                .iter()
                .map(|&(a, idx)| {
                    let drafted = *drafts[a].last().expect("it drafted this round");
                    self.held[asks[a].seq].push(drafted);
                    let (token, p) = best(self.ctx.get_logits_ith(idx));
                    (a, token, p)
                })
                .collect();
        }
        drafts
    }

    /// Whether a drafted token may go to the target.
    fn usable(&self, token: LlamaToken, p: f32) -> bool {
        p >= P_MIN && token.0 < self.target_vocab && !self.model.vocab().is_eog(token)
    }

    /// Cuts draft sequence `seq` back to its common prefix with `context`
    /// (keeping at least the last token to evaluate, whose logits start the
    /// draft); returns how many tokens it keeps.
    fn sync(&mut self, seq: usize, context: &[LlamaToken]) -> usize {
        let held = &self.held[seq];
        let common = held.iter().zip(context).take_while(|(a, b)| a == b).count();
        let keep = common.min(context.len().saturating_sub(1));
        if keep < held.len() {
            let cut = self
                .ctx
                .clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None)
                .unwrap_or(false);
            if !cut {
                self.clear(seq);
                return 0;
            }
            self.held[seq].truncate(keep);
        }
        keep
    }

    /// Decodes the batch; when llama.cpp refuses, clears the draft
    /// sequences in it (they catch up afresh next time) and says so.
    fn decode(&mut self, seqs: impl Iterator<Item = usize>) -> bool {
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "draft model decode failed; no drafts this step");
                for seq in seqs {
                    self.clear(seq);
                }
                false
            }
        }
    }

    fn clear(&mut self, seq: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.held[seq].clear();
    }
}

/// The most likely token of `logits` and its probability.
fn best(logits: &[f32]) -> (LlamaToken, f32) {
    let Some((i, &max)) = logits
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.total_cmp(b))
    else {
        return (LlamaToken(-1), 0.0);
    };
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    (LlamaToken(i as i32), 1.0 / sum)
}

/// Why `draft` cannot draft for `target`, if it cannot (llama.cpp's
/// `common_speculative_are_compatible`).
fn compatible(draft: &LlamaModel, target: &LlamaModel) -> Result<(), String> {
    let (d, t) = (draft.vocab(), target.vocab());
    if d.vocab_type() != t.vocab_type() {
        return Err("its vocabulary type differs".into());
    }
    if (d.should_add_bos(), d.bos(), d.eos()) != (t.should_add_bos(), t.bos(), t.eos()) {
        return Err("its BOS/EOS tokens differ".into());
    }
    let (nd, nt) = (draft.n_vocab(), target.n_vocab());
    if (nd - nt).abs() > MAX_VOCAB_DIFFERENCE {
        return Err(format!(
            "its vocabulary has {nd} tokens, the model's {nt} (at most \
             {MAX_VOCAB_DIFFERENCE} apart)"
        ));
    }
    for id in CHECK_FROM..nd.min(nt) {
        let token = LlamaToken(id);
        if d.text(token) != t.text(token) {
            return Err(format!("token {id} differs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_the_argmax_with_its_softmax_probability() {
        let (t, p) = best(&[0.0, 2.0, 0.0]);
        assert_eq!(t, LlamaToken(1));
        let want = 2f32.exp() / (2f32.exp() + 2.0);
        assert!((p - want).abs() < 1e-6, "{p} vs {want}");
        let (t, p) = best(&[5.0]);
        assert_eq!((t, p), (LlamaToken(0), 1.0));
        assert_eq!(best(&[]).0, LlamaToken(-1));
    }
}
