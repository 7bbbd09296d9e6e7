//! Preparing requests off the engine thread: rendering chat templates,
//! tokenizing prompts and building sampler chains (a JSON schema grammar can
//! take a while to compile).
//!
//! # Why a thread of its own
//! Rendering and tokenizing a multi-megabyte prompt takes seconds. On the
//! engine thread that stalled every running stream and every `Ping` (and so
//! the supervisor's liveness check) for as long. The prep thread does that
//! work instead; the engine only forwards `Generate` and `CountTokens` to it
//! and receives the results on its own input channel, in the order the
//! requests were sent. It borrows the model (`LlamaModel` is `Sync`;
//! tokenizing is a read-only vocabulary call) from a scoped thread in
//! `main`, and owns the chat template, which nothing else uses.
//!
//! # Cancelling a request in prep
//! The engine remembers which requests are in prep. A `Cancel` for one is
//! answered at once (`Finished { Cancelled }`) and the prepared request is
//! dropped when it arrives; the prep thread itself never looks at cancels.
//!
//! # The byte cap
//! A prompt whose text is too long to fit the context in any tokenization is
//! refused with `PromptTooLong` before it is tokenized: see
//! [`max_prompt_bytes`].

use std::sync::mpsc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use llm_node_chat::template::ChatTemplate;
use llm_node_protocol::{FailureKind, Prompt, RequestId, SamplingParams};

use crate::sampling::build_sampler;
use crate::sequence::Waiting;

/// Work for the prep thread.
pub enum Job {
    Generate {
        id: RequestId,
        trace: String,
        prompt: Prompt,
        params: SamplingParams,
    },
    /// `CountTokens`: tokenized without the byte cap (the caller asked for a
    /// count, not a generation).
    Count { id: RequestId, prompt: Prompt },
}

/// A job's result, for the engine.
// Sent once per request over a channel; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    Generate {
        id: RequestId,
        result: Result<Waiting, Refusal>,
    },
    Count {
        id: RequestId,
        result: Result<u32, Refusal>,
    },
}

/// Why a request is refused before it reaches a slot.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: FailureKind,
    pub message: String,
}

impl Refusal {
    fn new(kind: FailureKind, message: String) -> Self {
        Self { kind, message }
    }
}

/// The longest text, in bytes, that can still be at most `tokens` tokens.
///
/// `bytes_per_token` is the most input bytes one token can stand for, or
/// `None` when the tokenizer may drop input (WordPiece and Unigram
/// normalisers remove or fold characters): then there is no safe cap. A
/// text longer than the result needs more than `tokens` tokens, so refusing
/// it refuses nothing that would have fit.
pub fn max_prompt_bytes(tokens: usize, bytes_per_token: Option<usize>) -> usize {
    bytes_per_token.map_or(usize::MAX, |b| tokens.saturating_mul(b.max(1)))
}

/// The most input bytes one token of `vocab` can stand for: its longest
/// piece (special tokens included, since prompts are parsed with them), and
/// at least 4 (an unknown character becomes one token whatever its length).
/// `None` for tokenizers that may drop input bytes.
///
/// The tokenizer kind is read from the GGUF's `tokenizer.ggml.model`, not
/// from `LlamaVocab::vocab_type`, which panics on kinds llama-cpp-2 does not
/// know (WordPiece, type 3: every BERT embedding model crashed the worker at
/// load).
pub fn bytes_per_token(model: &LlamaModel) -> Option<usize> {
    let kind = model.meta_val_str("tokenizer.ggml.model").ok();
    if !keeps_every_byte(kind.as_deref()) {
        return None;
    }
    let vocab = model.vocab();
    let mut buf = Vec::with_capacity(256);
    let longest = (0..vocab.n_tokens())
        .map(|t| {
            buf.clear();
            vocab.token_to_piece_into(LlamaToken(t), &mut buf, true, None);
            buf.len()
        })
        .max()
        .unwrap_or(0);
    Some(longest.max(4))
}

/// Whether the tokenizer named by `tokenizer.ggml.model` keeps every input
/// byte: SentencePiece (`llama`), byte-level BPE (`gpt2`) and RWKV do; WordPiece
/// (`bert`), Unigram (`t5`) and unknown kinds may not.
fn keeps_every_byte(kind: Option<&str>) -> bool {
    matches!(kind, Some("llama" | "gpt2" | "rwkv"))
}

/// The prep thread's state: what turning a request into tokens needs.
pub struct Preparer<'m> {
    model: &'m LlamaModel,
    template: ChatTemplate,
    /// Tokens a prompt may have: one less than a slot holds.
    max_tokens: usize,
    max_bytes: usize,
}

impl<'m> Preparer<'m> {
    /// `ctx_per_slot` is what a slot holds; `bytes_per_token` comes from
    /// [`bytes_per_token`].
    pub fn new(
        model: &'m LlamaModel,
        template: ChatTemplate,
        ctx_per_slot: usize,
        bytes_per_token: Option<usize>,
    ) -> Self {
        Self {
            model,
            template,
            max_tokens: ctx_per_slot.saturating_sub(1),
            max_bytes: max_prompt_bytes(ctx_per_slot, bytes_per_token),
        }
    }

    /// Serves `jobs` until the engine drops its end, sending each result to
    /// `done` (the engine's input channel) in order.
    pub fn run<T: From<Prepared>>(self, jobs: mpsc::Receiver<Job>, done: mpsc::Sender<T>) {
        for job in jobs {
            if done.send(self.prepare(job).into()).is_err() {
                return; // the engine is gone
            }
        }
    }

    fn prepare(&self, job: Job) -> Prepared {
        match job {
            Job::Generate {
                id,
                trace,
                prompt,
                params,
            } => Prepared::Generate {
                id,
                result: self.generate(id, trace, &prompt, params),
            },
            Job::Count { id, prompt } => Prepared::Count {
                id,
                result: self
                    .tokenize(&prompt, usize::MAX)
                    .map(|(tokens, _)| tokens.len() as u32),
            },
        }
    }

    /// A `Generate` request, tokenized and checked, ready to wait for a slot.
    fn generate(
        &self,
        id: RequestId,
        trace: String,
        prompt: &Prompt,
        params: SamplingParams,
    ) -> Result<Waiting, Refusal> {
        let (tokens, reasoning_open) = self.tokenize(prompt, self.max_bytes).inspect_err(|e| {
            tracing::debug!(trace, message = %e, "prompt refused");
        })?;
        if tokens.is_empty() {
            let message = "the prompt is empty".into();
            return Err(Refusal::new(FailureKind::InvalidRequest, message));
        }
        if tokens.len() > self.max_tokens {
            let message = format!(
                "the prompt has {} tokens but the context of this model holds {} (prompt plus at least one generated token)",
                tokens.len(),
                self.max_tokens + 1
            );
            return Err(Refusal::new(FailureKind::PromptTooLong, message));
        }
        let sampler = build_sampler(self.model, &params)
            .map_err(|e| Refusal::new(FailureKind::InvalidRequest, e.to_string()))?;
        tracing::debug!(trace, prompt_tokens = tokens.len(), "queued");
        Ok(Waiting {
            id,
            trace,
            tokens,
            params,
            sampler,
            chat: matches!(prompt, Prompt::Chat(_)),
            reasoning_open,
        })
    }

    /// The prompt's tokens, and whether a rendered chat prompt ends inside
    /// a reasoning block. A text longer than `max_bytes` is refused untokenized.
    fn tokenize(
        &self,
        prompt: &Prompt,
        max_bytes: usize,
    ) -> Result<(Vec<LlamaToken>, bool), Refusal> {
        let vocab = self.model.vocab();
        let rendered;
        let (text, add_bos, reasoning_open) = match prompt {
            Prompt::Text(text) => (text, true, false),
            Prompt::Infill { prefix, suffix } => {
                let bytes = prefix.len() + suffix.len();
                if bytes > max_bytes {
                    return Err(too_many_bytes(bytes, self.max_tokens));
                }
                return Ok((infill_tokens(&vocab, prefix, suffix)?, false));
            }
            Prompt::Chat(chat) => {
                rendered = self
                    .template
                    .render(chat)
                    .map_err(|e| Refusal::new(FailureKind::InvalidRequest, e.to_string()))?;
                // Templates that write the BOS text themselves must not get a second one.
                let bos = vocab.text(vocab.bos()).map(|c| c.to_bytes().to_vec());
                let has_bos =
                    bos.is_some_and(|b| !b.is_empty() && rendered.as_bytes().starts_with(&b));
                (&rendered, !has_bos, ends_in_open_reasoning(&rendered))
            }
        };
        if text.len() > max_bytes {
            return Err(too_many_bytes(text.len(), self.max_tokens));
        }
        let tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
        Ok((tokens, reasoning_open))
    }
}

fn too_many_bytes(bytes: usize, max_tokens: usize) -> Refusal {
    let message = format!(
        "the prompt has {bytes} bytes, more than the {} tokens the context of this model holds can cover",
        max_tokens + 1
    );
    Refusal::new(FailureKind::PromptTooLong, message)
}

/// A fill-in-the-middle prompt as llama-server builds it (prefix-suffix-middle
/// order): `[BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID`; the model then
/// writes the middle. Special-token text inside the code is not parsed.
fn infill_tokens(
    vocab: &LlamaVocab,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<LlamaToken>, Refusal> {
    let (pre, suf, mid) = (vocab.fim_pre(), vocab.fim_suf(), vocab.fim_mid());
    if [pre, suf, mid].iter().any(|t| t.0 < 0) {
        let message = "this model has no fill-in-the-middle tokens, so suffix is not supported";
        return Err(Refusal::new(FailureKind::InvalidRequest, message.into()));
    }
    // The model's own start (BOS where it wants one).
    let mut tokens = vocab.tokenize(b"", true, false);
    tokens.push(pre);
    tokens.extend(vocab.tokenize(prefix.as_bytes(), false, false));
    tokens.push(suf);
    tokens.extend(vocab.tokenize(suffix.as_bytes(), false, false));
    tokens.push(mid);
    Ok(tokens)
}

/// Whether a rendered chat prompt ends inside a reasoning block that the
/// template opened itself (DeepSeek R1, QwQ, some Qwen3 variants): the
/// model's first tokens are then reasoning, and no `<think>` will be generated.
fn ends_in_open_reasoning(prompt: &str) -> bool {
    let tail = prompt.trim_end();
    tail.ends_with("<think>") || tail.ends_with("<|channel|>analysis<|message|>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_byte_keeping_tokenizers_get_a_byte_cap() {
        let cases = [
            (Some("llama"), true),
            (Some("gpt2"), true),
            (Some("rwkv"), true),
            (Some("bert"), false),
            (Some("t5"), false),
            (Some("plamo2"), false),
            (Some("no_vocab"), false),
            (None, false),
        ];
        for (kind, want) in cases {
            assert_eq!(keeps_every_byte(kind), want, "{kind:?}");
        }
    }

    #[test]
    fn a_prompt_that_opens_think_starts_in_reasoning() {
        assert!(ends_in_open_reasoning("<|Assistant|><think>\n"));
        assert!(!ends_in_open_reasoning("<think>\n\n</think>\n\n"));
        assert!(!ends_in_open_reasoning("<|im_start|>assistant\n"));
    }

    #[test]
    fn the_byte_cap_is_tokens_times_the_longest_piece_or_none() {
        assert_eq!(max_prompt_bytes(1024, Some(16)), 16 * 1024);
        assert_eq!(max_prompt_bytes(1024, None), usize::MAX);
        assert_eq!(max_prompt_bytes(usize::MAX, Some(8)), usize::MAX);
        assert_eq!(max_prompt_bytes(3, Some(0)), 3);
    }
}
