//! The batching engine: one thread owns the llama.cpp model and contexts and
//! serves every request of this worker with continuous batching.
//!
//! # The loop
//! Each turn of [`Engine::run`]:
//! 1. takes every pending command (blocking only when nothing is running);
//! 2. admits waiting requests into free slots: each slot is one KV sequence
//!    (`seq_id` = slot index) with its own sampler chain; the slot whose cached
//!    tokens share the longest prefix with the new prompt is chosen and only
//!    the rest of the prompt is evaluated (prompt caching);
//! 3. builds one batch: first the single pending token of every generating
//!    sequence, then prompt chunks of prefilling sequences up to `n_batch`,
//!    so a long prompt never stalls running streams for more than one chunk;
//! 4. decodes it, samples for every sequence whose logits were requested,
//!    and streams the new text out.
//!
//! A finished sequence returns its slot at once; its KV stays as a prefix
//! cache for the next request, while a cancelled or failed one is cleared.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llm_node_chat::template::{ChatTemplate, CHATML};
use llm_node_protocol::{
    Command, Event, FailureKind, FinishReason, ModelInfo, Prompt, RequestId, SamplingParams,
    TokenLogprob, Usage, WorkerConfig,
};

use crate::ipc::{Disconnected, EventSink, Inbound};
use crate::sampling::{build_sampler, logprobs};
use crate::text::{StopMatcher, StopScan, Utf8Assembler};

/// The model or its context could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
    /// Trying again cannot help (a missing file, a template that does not compile).
    pub permanent: bool,
}

/// Loads the model described by `config`.
///
/// # Errors
/// [`LoadError`] when the file is missing (permanent) or llama.cpp refuses
/// it (permanent too: the same file fails the same way; running out of
/// memory shows up at context creation instead).
pub fn load_model(backend: &LlamaBackend, config: &WorkerConfig) -> Result<LlamaModel, LoadError> {
    if !std::path::Path::new(&config.model_path).is_file() {
        return Err(LoadError {
            message: format!("model file not found: {}", config.model_path),
            permanent: true,
        });
    }
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(config.n_gpu_layers)
        .with_main_gpu(config.main_gpu);
    LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|e| LoadError {
        message: format!("llama.cpp could not load {}: {e}", config.model_path),
        permanent: true,
    })
}

fn threads(config: &WorkerConfig) -> i32 {
    let n = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        config.threads
    };
    n as i32
}

/// A request waiting for a slot, already tokenized.
struct Waiting {
    id: RequestId,
    trace: String,
    tokens: Vec<LlamaToken>,
    params: SamplingParams,
    sampler: LlamaSampler,
    /// A chat: generated text keeps its special tokens for the output parser.
    chat: bool,
    reasoning_open: bool,
}

/// One running generation.
struct Sequence {
    id: RequestId,
    trace: String,
    /// Render special tokens into the text (chat requests).
    special: bool,
    /// Log-probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<TokenLogprob>,
    prompt: Vec<LlamaToken>,
    params: SamplingParams,
    sampler: LlamaSampler,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    usage: Usage,
    /// Sampled but not yet decoded (the input of the next step).
    next: Option<LlamaToken>,
    /// Tokens added to the current batch, and the batch index of the logits to sample.
    in_batch: usize,
    logits_at: Option<i32>,
    /// Tokens sampled since the last `Piece` was sent.
    unreported: u32,
    /// Reusable text buffer (no per-token allocation for decoding).
    text: String,
}

/// One KV sequence of the context.
struct Slot {
    seq_id: i32,
    /// Tokens whose KV is in this sequence, in position order.
    cached: Vec<LlamaToken>,
    active: Option<Sequence>,
}

/// How a turn of the loop ended for a sequence.
enum Outcome {
    Continue,
    Finish(FinishReason),
}

/// What [`Engine::prepare`] sets up before the engine exists.
struct Parts<'m> {
    ctx: LlamaContext<'m>,
    embed_params: Option<LlamaContextParams>,
    template: ChatTemplate,
    template_source: String,
    has_template: bool,
    ctx_per_slot: u32,
    n_batch: u32,
}

pub struct Engine<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// Made on the first embeddings request (its micro-batch holds a whole
    /// input, so its buffers are large): a model only used for chat never
    /// pays for it.
    embed_ctx: Option<LlamaContext<'m>>,
    embed_params: Option<LlamaContextParams>,
    template: ChatTemplate,
    template_source: String,
    has_template: bool,
    ctx_per_slot: usize,
    n_batch: usize,
    /// Prompt tokens per step while others decode (`WorkerConfig::prefill_chunk`).
    prefill_chunk: usize,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    waiting: VecDeque<Waiting>,
    sink: EventSink,
    piece_buf: Vec<u8>,
}

impl<'m> Engine<'m> {
    /// Creates the generation context; the embeddings context, when enabled,
    /// comes with the first embeddings request.
    ///
    /// # Errors
    /// [`LoadError`] when llama.cpp cannot allocate a context, or (permanent)
    /// when the chat template does not compile.
    pub fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        config: &WorkerConfig,
        sink: EventSink,
    ) -> Result<Self, (LoadError, EventSink)> {
        match Self::prepare(backend, model, config) {
            Ok(parts) => Ok(Self::assemble(backend, model, config, sink, parts)),
            Err(e) => Err((e, sink)),
        }
    }

    /// The fallible part of [`Engine::new`]: the context and the template.
    fn prepare(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        config: &WorkerConfig,
    ) -> Result<Parts<'m>, LoadError> {
        let parallel = config.parallel.max(1);
        let ctx_per_slot = config.ctx_per_slot.max(16);
        let n_batch = config.batch_size.max(16);
        let n_threads = threads(config);
        // Per-sequence KV (kv_unified = false): each slot owns exactly
        // ctx_per_slot cells, so one long conversation can never starve another
        // and a retained prefix cache costs nothing extra.
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(ctx_per_slot * parallel))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch.min(512))
            .with_n_seq_max(parallel)
            .with_kv_unified(false)
            .with_n_threads(n_threads)
            .with_n_threads_batch(n_threads);
        let ctx = model.new_context(backend, params).map_err(|e| LoadError {
            message: format!("could not create context: {e}"),
            permanent: false,
        })?;
        // Pooled embeddings need a whole input in one micro-batch.
        let embed_params = config.embeddings.then(|| {
            LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(ctx_per_slot))
                .with_n_batch(ctx_per_slot)
                .with_n_ubatch(ctx_per_slot)
                .with_n_seq_max(1)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean)
                .with_n_threads(n_threads)
                .with_n_threads_batch(n_threads)
        });

        let vocab = model.vocab();
        let special_text = |t: LlamaToken| {
            vocab
                .text(t)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (bos, eos) = (special_text(vocab.bos()), special_text(vocab.eos()));
        let gguf_template = model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        let source = config.chat_template.clone().or(gguf_template);
        let has_template = source.is_some();
        if !has_template {
            tracing::warn!("model has no chat template; falling back to ChatML");
        }
        let template_source = source.unwrap_or_else(|| CHATML.to_owned());
        let template = ChatTemplate::new(&template_source, &bos, &eos).map_err(|e| LoadError {
            message: format!("the chat template does not compile: {e}"),
            permanent: true,
        })?;

        Ok(Parts {
            ctx,
            embed_params,
            template,
            template_source,
            has_template,
            ctx_per_slot,
            n_batch,
        })
    }

    fn assemble(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        config: &WorkerConfig,
        sink: EventSink,
        p: Parts<'m>,
    ) -> Self {
        let slots = (0..config.parallel.max(1) as i32)
            .map(|seq_id| Slot {
                seq_id,
                cached: Vec::new(),
                active: None,
            })
            .collect();
        Self {
            backend,
            model,
            ctx: p.ctx,
            embed_ctx: None,
            embed_params: p.embed_params,
            template: p.template,
            template_source: p.template_source,
            has_template: p.has_template,
            ctx_per_slot: p.ctx_per_slot as usize,
            n_batch: p.n_batch as usize,
            prefill_chunk: match config.prefill_chunk {
                0 => p.n_batch as usize,
                n => n as usize,
            },
            batch: LlamaBatch::new(p.n_batch as usize, 1),
            slots,
            waiting: VecDeque::new(),
            sink,
            piece_buf: Vec::with_capacity(32),
        }
    }

    /// Facts for the `Ready` handshake message.
    pub fn info(&self, config: &WorkerConfig) -> ModelInfo {
        ModelInfo {
            model_name: config.model_name.clone(),
            ctx_per_slot: self.ctx_per_slot as u32,
            n_ctx_train: self.model.n_ctx_train(),
            parallel: self.slots.len() as u32,
            embedding_size: if self.embed_params.is_some() {
                self.model.n_embd() as u32
            } else {
                0
            },
            has_chat_template: self.has_template,
            chat_template: self.template_source.clone(),
            vocab_size: self.model.n_vocab() as u32,
            model_size_bytes: self.model.size(),
            n_params: self.model.n_params(),
        }
    }

    /// Sends the `Ready` handshake message.
    ///
    /// # Errors
    /// [`Disconnected`] when the supervisor is gone.
    pub fn send_ready(&self, info: ModelInfo) -> Result<(), Disconnected> {
        self.sink.send(Event::Ready(info))?;
        self.sink.flush()
    }

    /// Serves until `Shutdown` or until the supervisor goes away.
    ///
    /// # Errors
    /// [`Disconnected`] when the supervisor's event channel is closed.
    pub fn run(&mut self, inbound: &mpsc::Receiver<Inbound>) -> Result<(), Disconnected> {
        loop {
            let idle = self.waiting.is_empty() && self.slots.iter().all(|s| s.active.is_none());
            if idle {
                match inbound.recv() {
                    Ok(msg) => {
                        if !self.handle(msg)? {
                            return self.sink.flush();
                        }
                    }
                    Err(_) => return Ok(()),
                }
            }
            while let Ok(msg) = inbound.try_recv() {
                if !self.handle(msg)? {
                    return self.sink.flush();
                }
            }
            self.admit()?;
            // Answers to commands (pongs, embeddings, failures, starts) go out
            // before the decode step, the step's tokens right after it.
            self.sink.flush()?;
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step()?;
                self.sink.flush()?;
            }
        }
    }

    /// Applies one inbound message; `false` means stop serving.
    fn handle(&mut self, msg: Inbound) -> Result<bool, Disconnected> {
        let cmd = match msg {
            Inbound::Command(cmd) => cmd,
            Inbound::Closed(why) => {
                tracing::info!(%why, "command channel closed; exiting");
                return Ok(false);
            }
        };
        match cmd {
            Command::Generate {
                id,
                trace,
                prompt,
                params,
            } => self.enqueue(id, trace, &prompt, params)?,
            Command::Embed { id, trace, inputs } => {
                tracing::debug!(trace, inputs = inputs.len(), "embed");
                self.embed(id, &inputs)?
            }
            Command::CountTokens { id, prompt } => match self.tokenize_prompt(&prompt) {
                Ok((tokens, _)) => self.sink.send(Event::TokenCount {
                    id,
                    count: tokens.len() as u32,
                })?,
                Err(message) => self.fail(id, FailureKind::InvalidRequest, message)?,
            },
            Command::Cancel { id } => self.cancel(id)?,
            Command::Ping { id } => self.sink.send(Event::Pong { id })?,
            Command::Shutdown => return Ok(false),
            Command::Init { .. } => {
                tracing::warn!("ignoring a second Init");
            }
        }
        Ok(true)
    }

    fn fail(&self, id: RequestId, kind: FailureKind, message: String) -> Result<(), Disconnected> {
        self.sink.send(Event::Failed { id, kind, message })
    }

    /// The prompt's tokens, and whether a rendered chat prompt ends inside
    /// a reasoning block.
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<(Vec<LlamaToken>, bool), String> {
        let vocab = self.model.vocab();
        let text = match prompt {
            Prompt::Text(text) => return Ok((vocab.tokenize(text.as_bytes(), true, true), false)),
            Prompt::Chat(chat) => self.template.render(chat).map_err(|e| e.to_string())?,
        };
        // Templates that write the BOS text themselves must not get a second one.
        let bos = vocab.text(vocab.bos()).map(|c| c.to_bytes().to_vec());
        let has_bos = bos.is_some_and(|b| !b.is_empty() && text.as_bytes().starts_with(&b));
        let reasoning_open = ends_in_open_reasoning(&text);
        Ok((
            vocab.tokenize(text.as_bytes(), !has_bos, true),
            reasoning_open,
        ))
    }

    fn enqueue(
        &mut self,
        id: RequestId,
        trace: String,
        prompt: &Prompt,
        params: SamplingParams,
    ) -> Result<(), Disconnected> {
        let (tokens, reasoning_open) = match self.tokenize_prompt(prompt) {
            Ok(t) => t,
            Err(message) => {
                tracing::debug!(trace, %message, "prompt refused");
                return self.fail(id, FailureKind::InvalidRequest, message);
            }
        };
        if tokens.is_empty() {
            return self.fail(
                id,
                FailureKind::InvalidRequest,
                "the prompt is empty".into(),
            );
        }
        if tokens.len() >= self.ctx_per_slot {
            let message = format!(
                "the prompt has {} tokens but the context of this model holds {} (prompt plus at least one generated token)",
                tokens.len(),
                self.ctx_per_slot
            );
            return self.fail(id, FailureKind::PromptTooLong, message);
        }
        let sampler = match build_sampler(self.model, &params) {
            Ok(s) => s,
            Err(e) => return self.fail(id, FailureKind::InvalidRequest, e.to_string()),
        };
        tracing::debug!(trace, prompt_tokens = tokens.len(), "queued");
        self.waiting.push_back(Waiting {
            id,
            trace,
            tokens,
            params,
            sampler,
            chat: matches!(prompt, Prompt::Chat(_)),
            reasoning_open,
        });
        Ok(())
    }

    /// Moves waiting requests into free slots.
    fn admit(&mut self) -> Result<(), Disconnected> {
        while !self.waiting.is_empty() {
            let Some(waiting) = self.waiting.front() else {
                break;
            };
            let Some(slot_idx) = pick_slot(&self.slots, &waiting.tokens) else {
                break;
            };
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let slot = &mut self.slots[slot_idx];
            // Reuse the common prefix, but always evaluate the last prompt
            // token so there are fresh logits to sample from.
            let reuse = common_prefix(&slot.cached, &w.tokens).min(w.tokens.len() - 1);
            if reuse < slot.cached.len() {
                let ok = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq_id as u32), Some(reuse as u32), None)
                    .unwrap_or(false);
                if ok {
                    slot.cached.truncate(reuse);
                } else {
                    // Partial removal is refused by some memory types: start afresh.
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq_id as u32), None, None);
                    slot.cached.clear();
                }
            }
            let cached = slot.cached.len() as u32;
            self.sink.send(Event::Started {
                id: w.id,
                prompt_tokens: w.tokens.len() as u32,
                reasoning_open: w.reasoning_open,
            })?;
            tracing::debug!(trace = w.trace, slot = slot.seq_id, cached, "started");
            slot.active = Some(Sequence {
                id: w.id,
                trace: w.trace,
                special: w.chat,
                logprobs: Vec::new(),
                usage: Usage {
                    prompt_tokens: w.tokens.len() as u32,
                    completion_tokens: 0,
                    cached_tokens: cached,
                },
                prompt: w.tokens,
                stop: StopMatcher::new(w.params.stop.clone()),
                params: w.params,
                sampler: w.sampler,
                utf8: Utf8Assembler::default(),
                next: None,
                in_batch: 0,
                logits_at: None,
                unreported: 0,
                text: String::new(),
            });
        }
        Ok(())
    }

    /// One decode step over every active sequence.
    fn step(&mut self) -> Result<(), Disconnected> {
        self.fill_batch();
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "decode failed; failing the sequences of this batch");
            for i in 0..self.slots.len() {
                if self.slots[i]
                    .active
                    .as_ref()
                    .is_some_and(|s| s.in_batch > 0)
                {
                    self.abort_slot(
                        i,
                        FailureKind::Internal,
                        format!("llama.cpp decode failed: {e}"),
                    )?;
                }
            }
            return Ok(());
        }
        for i in 0..self.slots.len() {
            self.after_decode(i)?;
        }
        Ok(())
    }

    /// Decoding tokens first, then prompt chunks within the batch budget: the
    /// whole batch when nothing is decoding, at most `prefill_chunk` prompt
    /// tokens when something is (those streams advance every step instead of
    /// waiting out a long prefill).
    fn fill_batch(&mut self) {
        self.batch.clear();
        let mut used = 0usize;
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            seq.in_batch = 0;
            seq.logits_at = None;
            if let Some(token) = seq.next {
                let pos = slot.cached.len() as i32;
                if self.batch.add(token, pos, &[slot.seq_id], true).is_ok() {
                    seq.in_batch = 1;
                    seq.logits_at = Some(used as i32);
                    used += 1;
                }
            }
        }
        let budget = match used {
            0 => self.n_batch,
            decoding => self.n_batch.min(decoding + self.prefill_chunk),
        };
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            let done = slot.cached.len();
            if seq.next.is_some() || done >= seq.prompt.len() {
                continue;
            }
            if used >= budget {
                break;
            }
            let take = (seq.prompt.len() - done).min(budget - used);
            for j in 0..take {
                let pos = done + j;
                let last = pos == seq.prompt.len() - 1;
                if self
                    .batch
                    .add(seq.prompt[pos], pos as i32, &[slot.seq_id], last)
                    .is_err()
                {
                    break;
                }
                seq.in_batch += 1;
                if last {
                    seq.logits_at = Some(used as i32);
                }
                used += 1;
            }
        }
    }

    /// Records what the last decode stored, samples, and streams text.
    fn after_decode(&mut self, i: usize) -> Result<(), Disconnected> {
        let slot = &mut self.slots[i];
        let Some(seq) = slot.active.as_mut() else {
            return Ok(());
        };
        if seq.in_batch == 0 {
            return Ok(());
        }
        match seq.next.take() {
            Some(token) => slot.cached.push(token),
            None => {
                let start = slot.cached.len();
                slot.cached
                    .extend_from_slice(&seq.prompt[start..start + seq.in_batch]);
            }
        }
        seq.in_batch = 0;
        let Some(idx) = seq.logits_at.take() else {
            return Ok(()); // prompt not fully evaluated yet
        };
        let token = seq.sampler.sample(&self.ctx, idx);
        seq.usage.completion_tokens += 1;
        seq.unreported += 1;
        let vocab = self.model.vocab();
        let outcome = if vocab.is_eog(token) && !seq.params.ignore_eos {
            Outcome::Finish(FinishReason::Stop)
        } else {
            self.piece_buf.clear();
            vocab.token_to_piece_into(token, &mut self.piece_buf, seq.special, None);
            if let Some(top) = seq.params.logprobs {
                let (logprob, best) =
                    logprobs(self.ctx.get_logits_ith(idx), token.0 as usize, top.into());
                let mut bytes = Vec::new();
                let top = best
                    .into_iter()
                    .map(|(t, lp)| {
                        bytes.clear();
                        vocab.token_to_piece_into(
                            LlamaToken(t as i32),
                            &mut bytes,
                            seq.special,
                            None,
                        );
                        (bytes.clone(), lp)
                    })
                    .collect();
                seq.logprobs.push(TokenLogprob {
                    bytes: self.piece_buf.clone(),
                    logprob,
                    top,
                });
            }
            seq.text.clear();
            seq.utf8.push(&self.piece_buf, &mut seq.text);
            let (emit, stopped) = match seq.stop.push(&seq.text) {
                StopScan::Emit(t) => (t, false),
                StopScan::Stopped(t) => (t, true),
            };
            if !emit.is_empty() {
                self.sink.send(Event::Piece {
                    id: seq.id,
                    text: emit,
                    tokens: std::mem::take(&mut seq.unreported),
                    logprobs: std::mem::take(&mut seq.logprobs),
                })?;
            }
            let max = seq.params.max_tokens.unwrap_or(u32::MAX);
            if stopped {
                Outcome::Finish(FinishReason::Stop)
            } else if seq.usage.completion_tokens >= max || slot.cached.len() >= self.ctx_per_slot {
                Outcome::Finish(FinishReason::Length)
            } else {
                seq.next = Some(token);
                Outcome::Continue
            }
        };
        if let Outcome::Finish(reason) = outcome {
            self.finish_slot(i, reason)?;
        }
        Ok(())
    }

    /// Ends a sequence normally: flush held text, report, keep its KV as a prefix cache.
    fn finish_slot(&mut self, i: usize, reason: FinishReason) -> Result<(), Disconnected> {
        let Some(mut seq) = self.slots[i].active.take() else {
            return Ok(());
        };
        let mut tail = String::new();
        seq.utf8.finish(&mut tail);
        let mut rest = if reason == FinishReason::Length {
            // A stop string can no longer complete: release what was held back.
            match seq.stop.push(&tail) {
                StopScan::Emit(t) | StopScan::Stopped(t) => t,
            }
        } else {
            String::new()
        };
        if reason == FinishReason::Length {
            rest.push_str(&seq.stop.finish());
        }
        if !rest.is_empty() {
            self.sink.send(Event::Piece {
                id: seq.id,
                text: rest,
                tokens: std::mem::take(&mut seq.unreported),
                logprobs: std::mem::take(&mut seq.logprobs),
            })?;
        }
        tracing::debug!(
            trace = seq.trace,
            ?reason,
            tokens = seq.usage.completion_tokens,
            "finished"
        );
        self.sink.send(Event::Finished {
            id: seq.id,
            reason,
            usage: seq.usage,
        })
    }

    /// Ends a sequence abnormally and clears its KV.
    fn abort_slot(
        &mut self,
        i: usize,
        kind: FailureKind,
        message: String,
    ) -> Result<(), Disconnected> {
        let slot = &mut self.slots[i];
        let Some(seq) = slot.active.take() else {
            return Ok(());
        };
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.seq_id as u32), None, None);
        slot.cached.clear();
        self.fail(seq.id, kind, message)
    }

    fn cancel(&mut self, id: RequestId) -> Result<(), Disconnected> {
        if let Some(pos) = self.waiting.iter().position(|w| w.id == id) {
            self.waiting.remove(pos);
            return self.sink.send(Event::Finished {
                id,
                reason: FinishReason::Cancelled,
                usage: Usage::default(),
            });
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.active.as_ref().is_some_and(|q| q.id == id))
        else {
            return Ok(()); // already finished: the Finished event is on its way
        };
        let slot = &mut self.slots[i];
        let seq = slot.active.take().expect("found above");
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.seq_id as u32), None, None);
        slot.cached.clear();
        self.sink.send(Event::Finished {
            id,
            reason: FinishReason::Cancelled,
            usage: seq.usage,
        })
    }

    /// Embeds each input with mean pooling and L2 normalisation.
    fn embed(&mut self, id: RequestId, inputs: &[String]) -> Result<(), Disconnected> {
        if self.embed_ctx.is_none() {
            let Some(params) = self.embed_params.clone() else {
                return self.fail(
                    id,
                    FailureKind::InvalidRequest,
                    "embeddings are disabled for this model".into(),
                );
            };
            match self.model.new_context(self.backend, params) {
                Ok(ctx) => self.embed_ctx = Some(ctx),
                Err(e) => {
                    return self.fail(
                        id,
                        FailureKind::Internal,
                        format!("could not create the embeddings context: {e}"),
                    )
                }
            }
        }
        let ctx = self.embed_ctx.as_mut().expect("made above");
        let vocab = self.model.vocab();
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut prompt_tokens = 0u32;
        let limit = ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(limit, 1);
        for (n, input) in inputs.iter().enumerate() {
            let tokens = vocab.tokenize(input.as_bytes(), true, false);
            if tokens.is_empty() {
                return self.fail(
                    id,
                    FailureKind::InvalidRequest,
                    format!("input[{n}] is empty"),
                );
            }
            if tokens.len() > limit {
                return self.fail(
                    id,
                    FailureKind::PromptTooLong,
                    format!(
                        "input[{n}] has {} tokens but the embedding context holds {limit}",
                        tokens.len()
                    ),
                );
            }
            prompt_tokens += tokens.len() as u32;
            ctx.clear_kv_cache();
            batch.clear();
            if batch.add_sequence(&tokens, 0, false).is_err() {
                return self.fail(id, FailureKind::Internal, "batch overflow".into());
            }
            let result = ctx
                .decode(&mut batch)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    ctx.embeddings_seq_ith(0)
                        .map(normalize)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(v) => vectors.push(v),
                Err(e) => {
                    return self.fail(id, FailureKind::Internal, format!("embedding failed: {e}"))
                }
            }
        }
        self.sink.send(Event::Embeddings {
            id,
            vectors,
            prompt_tokens,
        })
    }
}

/// The free slot with the longest cached prefix of `prompt`; ties go to the lowest index.
fn pick_slot(slots: &[Slot], prompt: &[LlamaToken]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .max_by_key(|(i, s)| (common_prefix(&s.cached, prompt), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
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

    fn slot(seq_id: i32, cached: &[i32]) -> Slot {
        Slot {
            seq_id,
            cached: cached.iter().map(|&t| LlamaToken(t)).collect(),
            active: None,
        }
    }

    fn toks(v: &[i32]) -> Vec<LlamaToken> {
        v.iter().map(|&t| LlamaToken(t)).collect()
    }

    #[test]
    fn the_slot_with_the_longest_cached_prefix_is_chosen() {
        let slots = vec![slot(0, &[9, 9]), slot(1, &[1, 2, 3]), slot(2, &[1, 2])];
        assert_eq!(pick_slot(&slots, &toks(&[1, 2, 3, 4])), Some(1));
        assert_eq!(pick_slot(&slots, &toks(&[5])), Some(0));
    }

    #[test]
    fn common_prefix_counts_matching_leading_tokens() {
        assert_eq!(common_prefix(&toks(&[1, 2, 3]), &toks(&[1, 2, 4])), 2);
        assert_eq!(common_prefix(&toks(&[]), &toks(&[1])), 0);
    }

    #[test]
    fn a_prompt_that_opens_think_starts_in_reasoning() {
        assert!(ends_in_open_reasoning("<|Assistant|><think>\n"));
        assert!(!ends_in_open_reasoning("<think>\n\n</think>\n\n"));
        assert!(!ends_in_open_reasoning("<|im_start|>assistant\n"));
    }

    #[test]
    fn normalize_gives_unit_length() {
        let v = normalize(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
