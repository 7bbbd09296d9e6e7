//! One generation from admission to its last event: the tokens it has been
//! given, and the way from each sampled token to what the client sees
//! (UTF-8 reassembly, stop strings, log-probabilities, token counts) and to
//! the reason it finishes.
//!
//! The engine does the llama.cpp side (sampling, turning a token into bytes,
//! reading logits) and hands the results to [`Sequence::on_token`]; every
//! event a sequence produces comes back from here, so the order of a
//! request's events (`Piece`s carrying their token counts and logprobs, then
//! exactly one `Finished`) is decided in one place.

use crate::draft::Pace;
use crate::sampling::Sampler;
#[cfg(test)]
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::{Event, FinishReason, RequestId, SamplingParams, TokenLogprob, Usage};

use crate::text::{StopMatcher, StopScan, Utf8Assembler};

/// A request waiting for a slot, already tokenized.
pub struct Waiting {
    pub id: RequestId,
    pub trace: String,
    pub tokens: Vec<LlamaToken>,
    pub params: SamplingParams,
    pub sampler: Sampler,
    /// A chat: generated text keeps its special tokens for the output parser.
    pub chat: bool,
    pub reasoning_open: bool,
}

/// One running generation.
pub struct Sequence {
    pub id: RequestId,
    pub trace: String,
    /// Render special tokens into the text (chat requests).
    pub special: bool,
    pub prompt: Vec<LlamaToken>,
    pub params: SamplingParams,
    pub sampler: Sampler,
    pub usage: Usage,
    /// Sampled but not yet decoded (the input of the next step).
    pub next: Option<LlamaToken>,
    /// Tokens guessed to follow `next` (speculative decoding), decoded with it.
    pub draft: Vec<LlamaToken>,
    /// How long its drafts may be, from how the earlier ones fared.
    pub pace: Pace,
    /// Log-probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<TokenLogprob>,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    /// Tokens sampled since the last `Piece` was sent.
    unreported: u32,
    /// Reusable text buffer (no per-token allocation for decoding).
    text: String,
}

/// One sampled token, as the engine read it from llama.cpp.
pub struct Sampled<'a> {
    pub token: LlamaToken,
    /// Its bytes (special tokens rendered when [`Sequence::special`]).
    pub piece: &'a [u8],
    /// Present when the request asked for logprobs.
    pub logprob: Option<TokenLogprob>,
}

/// What a sampled token did to its sequence.
#[derive(Debug, PartialEq)]
pub struct Step {
    /// Text to stream now.
    pub piece: Option<Event>,
    /// `Some` when the sequence is done; call [`Sequence::finish`].
    pub finish: Option<FinishReason>,
}

impl Sequence {
    /// Starts `w` in a slot that already holds `cached` of its prompt tokens.
    pub fn start(w: Waiting, cached: u32) -> Self {
        Self {
            id: w.id,
            trace: w.trace,
            special: w.chat,
            usage: Usage {
                prompt_tokens: w.tokens.len() as u32,
                completion_tokens: 0,
                cached_tokens: cached,
            },
            prompt: w.tokens,
            stop: StopMatcher::new(w.params.stop.clone()),
            params: w.params,
            sampler: w.sampler,
            logprobs: Vec::new(),
            utf8: Utf8Assembler::default(),
            next: None,
            draft: Vec::new(),
            pace: Pace::default(),
            unreported: 0,
            text: String::new(),
        }
    }

    /// Whether an end-of-generation token ends this sequence (`ignore_eos` unset).
    pub fn stops_at_eog(&self) -> bool {
        !self.params.ignore_eos
    }

    /// Counts an end-of-generation token that ends the sequence.
    pub fn on_eog(&mut self) -> Step {
        self.count();
        Step {
            piece: None,
            finish: Some(FinishReason::Stop),
        }
    }

    /// Takes a sampled token: streams its text (minus anything a stop string
    /// may still claim) and decides whether the sequence goes on. `cached` is
    /// the number of tokens in the slot's KV, `ctx` what the slot holds.
    pub fn on_token(&mut self, t: Sampled<'_>, cached: usize, ctx: usize) -> Step {
        self.count();
        if let Some(lp) = t.logprob {
            self.logprobs.push(lp);
        }
        self.text.clear();
        self.utf8.push(t.piece, &mut self.text);
        let (emit, stopped) = match self.stop.push(&self.text) {
            StopScan::Emit(t) => (t, false),
            StopScan::Stopped(t) => (t, true),
        };
        let piece = (!emit.is_empty()).then(|| self.piece(emit));
        let max = self.params.max_tokens.unwrap_or(u32::MAX);
        let finish = if stopped {
            Some(FinishReason::Stop)
        } else if self.usage.completion_tokens >= max || cached >= ctx {
            Some(FinishReason::Length)
        } else {
            self.next = Some(t.token);
            None
        };
        Step { piece, finish }
    }

    /// The last events of a sequence that ends for `reason`: text still held
    /// back (only on `Length`: a stop string can no longer complete), then
    /// `Finished`.
    pub fn finish(mut self, reason: FinishReason) -> Vec<Event> {
        let mut tail = String::new();
        self.utf8.finish(&mut tail);
        let mut rest = String::new();
        if reason == FinishReason::Length {
            match self.stop.push(&tail) {
                StopScan::Emit(t) | StopScan::Stopped(t) => rest = t,
            }
            rest.push_str(&self.stop.finish());
        }
        let mut events = Vec::with_capacity(2);
        if !rest.is_empty() {
            events.push(self.piece(rest));
        }
        tracing::debug!(
            trace = self.trace,
            ?reason,
            tokens = self.usage.completion_tokens,
            "finished"
        );
        events.push(Event::Finished {
            id: self.id,
            reason,
            usage: self.usage,
        });
        events
    }

    /// The `Finished` event of a cancelled sequence (held text is dropped).
    pub fn cancelled(self) -> Event {
        Event::Finished {
            id: self.id,
            reason: FinishReason::Cancelled,
            usage: self.usage,
        }
    }

    fn count(&mut self) {
        self.usage.completion_tokens += 1;
        self.unreported += 1;
    }

    /// A `Piece` with `text` and everything counted since the last one.
    fn piece(&mut self, text: String) -> Event {
        Event::Piece {
            id: self.id,
            text,
            tokens: std::mem::take(&mut self.unreported),
            logprobs: std::mem::take(&mut self.logprobs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(stop: &[&str], max_tokens: Option<u32>) -> Sequence {
        let params = SamplingParams {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            max_tokens,
            ..SamplingParams::default()
        };
        let w = Waiting {
            id: 7,
            trace: String::new(),
            tokens: vec![LlamaToken(1), LlamaToken(2)],
            params,
            sampler: Sampler::plain(LlamaSampler::greedy()),
            chat: false,
            reasoning_open: false,
        };
        Sequence::start(w, 1)
    }

    fn token(piece: &[u8]) -> Sampled<'_> {
        Sampled {
            token: LlamaToken(42),
            piece,
            logprob: None,
        }
    }

    fn piece(text: &str, tokens: u32) -> Option<Event> {
        Some(Event::Piece {
            id: 7,
            text: text.into(),
            tokens,
            logprobs: Vec::new(),
        })
    }

    #[test]
    fn text_streams_with_its_token_count_and_the_token_goes_next() {
        let mut s = sequence(&[], None);
        let step = s.on_token(token(b"Hi"), 2, 100);
        assert_eq!(
            step,
            Step {
                piece: piece("Hi", 1),
                finish: None
            }
        );
        assert_eq!(s.next, Some(LlamaToken(42)));
        assert_eq!(s.usage.cached_tokens, 1);
        assert_eq!(s.usage.prompt_tokens, 2);
    }

    #[test]
    fn a_split_character_waits_and_its_tokens_are_counted_with_it() {
        let mut s = sequence(&[], None);
        let euro = "€".as_bytes();
        assert_eq!(s.on_token(token(&euro[..1]), 2, 100).piece, None);
        assert_eq!(s.on_token(token(&euro[1..]), 3, 100).piece, piece("€", 2));
    }

    #[test]
    fn a_stop_string_ends_the_sequence_and_is_never_emitted() {
        let mut s = sequence(&["END"], None);
        assert_eq!(s.on_token(token(b"ok E"), 2, 100).piece, piece("ok ", 1));
        let step = s.on_token(token(b"ND!"), 3, 100);
        assert_eq!(step.finish, Some(FinishReason::Stop));
        assert_eq!(step.piece, None);
        let events = s.finish(FinishReason::Stop);
        assert_eq!(
            events.len(),
            1,
            "held text before a stop is dropped: {events:?}"
        );
    }

    #[test]
    fn on_length_held_text_is_released_before_finished() {
        let mut s = sequence(&["END"], Some(2));
        assert_eq!(s.on_token(token(b"a"), 2, 100).finish, None);
        let step = s.on_token(token(b" E"), 3, 100);
        assert_eq!(
            step,
            Step {
                piece: piece(" ", 1),
                finish: Some(FinishReason::Length)
            }
        );
        let events = s.finish(FinishReason::Length);
        assert_eq!(
            events[0],
            piece("E", 0).unwrap(),
            "its token was counted with \" \""
        );
        assert!(matches!(
            events[1],
            Event::Finished { reason: FinishReason::Length, usage, .. } if usage.completion_tokens == 2
        ));
    }

    #[test]
    fn a_full_slot_ends_with_length() {
        let mut s = sequence(&[], None);
        assert_eq!(
            s.on_token(token(b"x"), 100, 100).finish,
            Some(FinishReason::Length)
        );
    }

    #[test]
    fn eog_counts_a_token_and_stops_unless_ignored() {
        let mut s = sequence(&[], None);
        assert!(s.stops_at_eog());
        assert_eq!(s.on_eog().finish, Some(FinishReason::Stop));
        assert_eq!(s.usage.completion_tokens, 1);
        s.params.ignore_eos = true;
        assert!(!s.stops_at_eog());
    }

    #[test]
    fn logprobs_travel_with_the_piece_that_carries_their_text() {
        let mut s = sequence(&[], None);
        let lp = |b: &[u8]| TokenLogprob {
            bytes: b.to_vec(),
            logprob: -0.5,
            top: Vec::new(),
        };
        let euro = "€".as_bytes();
        let first = Sampled {
            logprob: Some(lp(&euro[..1])),
            ..token(&euro[..1])
        };
        assert_eq!(s.on_token(first, 2, 100).piece, None);
        let second = Sampled {
            logprob: Some(lp(&euro[1..])),
            ..token(&euro[1..])
        };
        let Some(Event::Piece {
            logprobs, tokens, ..
        }) = s.on_token(second, 3, 100).piece
        else {
            panic!("expected a piece")
        };
        assert_eq!((logprobs.len(), tokens), (2, 2));
    }
}
