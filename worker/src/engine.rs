//! The batching engine: one thread owns the llama.cpp model and contexts and
//! serves every request of this worker with continuous batching.
//!
//! # The loop
//! Each turn of [`Engine::run`]:
//! 1. takes every pending input (blocking only when nothing is running):
//!    commands, and requests coming back from the prep thread (`prep`),
//!    which renders and tokenizes prompts so that no request's preparation
//!    ever blocks this loop;
//! 2. admits waiting requests into free slots: each slot is one KV sequence
//!    (`seq_id` = slot index) with its own sampler chain; the slot whose cached
//!    tokens share the longest prefix with the new prompt is chosen and only
//!    the rest of the prompt is evaluated (prompt caching). When another
//!    slot, or a state saved in the host-RAM prompt cache (`prompt_cache`),
//!    shares a longer prefix, that KV is copied or restored into the slot
//!    first; the slot's own KV, when the request would drop it, is saved
//!    there before (see [`Engine::admit`]). A request whose prefix another
//!    slot is still prefilling waits for that prefill, then copies it
//!    (`plan::wait_for_prefill`);
//! 3. asks [`plan::plan_step`] what goes into this step's batch (decode
//!    tokens first, then prompt chunks within the budget) and fills it;
//! 4. embeds one input of the oldest embeddings request, if any (a batch of
//!    long inputs is spread over many turns instead of stalling them);
//! 5. decodes the batch, samples for every slot whose plan wants logits, and
//!    hands each token to its [`Sequence`], which says what to stream.
//!
//! With speculative decoding on (`spec_ngram` > 0), each decoding sequence
//! brings an n-gram draft (`draft`) into step 3: its draft tokens ride in
//! the same batch as every other sequence's tokens, its sampler samples at
//! each of them in turn, the drafted tokens it samples are kept, and the KV
//! of the rest is removed (see [`Engine::after_decode`]).
//!
//! Each turn, from step 1's inputs to the flush of step 5's events, is marked
//! on the [`Meter`] the reader thread answers liveness pings from: a long
//! decode shows as a long turn, a stuck one as a turn that never ends.
//!
//! The rules of steps 2 and 3 live in `plan`, the way from a token to events
//! in `sequence`, embeddings in `embed`, prompt preparation in `prep`; this
//! file applies them to llama.cpp.
//!
//! A finished sequence returns its slot at once; its KV stays as a prefix
//! cache for the next request, while a cancelled or failed one is cleared.

use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use llama_cpp_2::SeqState;
use llm_node_protocol::{
    Command, Event, FailureKind, FinishReason, ModelInfo, RequestId, TokenLogprob, Usage,
    WorkerConfig,
};

use crate::drafter::Drafter;
use crate::embed::{self, EmbedJob, Embedder};
use crate::ipc::{Disconnected, EventSink, Inbound};
use crate::load::{load_template, new_context, threads, LoadError};
use crate::plan::{self, Budget, Feed, SlotState, Work};
use crate::prep::{self, Job, Prepared, Preparer};
use crate::progress::Meter;
use crate::prompt_cache::PromptCache;
use crate::sampling::logprobs;
use crate::sequence::{Sampled, Sequence, Step, Waiting};

mod ahead;
mod reuse;
mod speculate;

/// What the engine thread receives: commands from the reader thread and
/// prepared requests from the prep thread, on one channel so that an idle
/// engine can block on both.
pub enum Input {
    Inbound(Inbound),
    Prepared(Prepared),
}

impl From<Inbound> for Input {
    fn from(msg: Inbound) -> Self {
        Self::Inbound(msg)
    }
}

impl From<Prepared> for Input {
    fn from(p: Prepared) -> Self {
        Self::Prepared(p)
    }
}

/// One KV sequence of the context.
struct Slot {
    seq_id: i32,
    /// Tokens whose KV is in this sequence, in position order.
    cached: Vec<LlamaToken>,
    active: Option<Sequence>,
}

impl Slot {
    fn state(&self) -> SlotState {
        SlotState {
            active: self.active.is_some(),
            cached: self.cached.len(),
            prompt: self.active.as_ref().map_or(0, |s| s.prompt.len()),
            decoding: self.active.as_ref().is_some_and(|s| s.next.is_some()),
            draft: self.active.as_ref().map_or(0, |s| s.draft.len()),
        }
    }
}

/// What `Ready` says about the chat template.
struct TemplateInfo {
    source: String,
    found: bool,
}

pub struct Engine<'m> {
    model: &'m LlamaModel,
    /// The generation context; `None` for an embedding-only model (an
    /// encoder, see [`crate::load::embedding_only`]): no slots, no KV cache
    /// for generation, and `Generate` is refused.
    ctx: Option<LlamaContext<'m>>,
    embedder: Embedder<'m>,
    /// Embeddings requests, oldest first; the front one advances one input per turn.
    embeds: VecDeque<EmbedJob>,
    template: TemplateInfo,
    /// The prep thread's job queue.
    prep: mpsc::Sender<Job>,
    /// Requests sent to the prep thread and not back yet; `true` once
    /// cancelled (answered already; dropped when it comes back).
    in_prep: HashMap<RequestId, bool>,
    /// Jobs sent to the prep thread and jobs back from it, since start (it
    /// answers in order): a turn that sent some waits a moment for them.
    prep_sent: u64,
    prep_back: u64,
    ctx_per_slot: usize,
    budget: Budget,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    waiting: VecDeque<Waiting>,
    sink: EventSink,
    /// Where each turn is marked for the reader's liveness answers.
    meter: Arc<Meter>,
    piece_buf: Vec<u8>,
    /// Sequence states of reassigned slots, in host RAM.
    cache: PromptCache<SeqState>,
    /// Prompts whose KV was copied from another slot, since start.
    copies: u64,
    /// N-gram size of speculative drafts (0: off) and most tokens per draft.
    spec_ngram: usize,
    /// The draft model's drafter, when one is configured: it drafts instead
    /// of the n-gram lookup.
    drafter: Option<Drafter<'m>>,
    spec_draft: usize,
    /// Draft tokens decoded and accepted, since start.
    drafted: u64,
    accepted: u64,
    /// Start queued requests ahead in a borrowed slot (`ahead`).
    prefill_ahead: bool,
    /// Sequences started ahead, waiting for a slot, oldest first, and the
    /// bytes reserved for them in `cache`.
    parked: VecDeque<ahead::Parked>,
    parked_bytes: usize,
    /// Requests started ahead, since start.
    ahead: u64,
}

impl<'m> Engine<'m> {
    /// Creates the generation context; the embeddings context, when enabled,
    /// comes with the first embeddings request. Returns the [`Preparer`] that
    /// the prep thread must run, serving `prep`. Every turn is marked on `meter`.
    ///
    /// # Errors
    /// [`LoadError`] when llama.cpp cannot allocate a context, or (permanent)
    /// when the chat template does not compile.
    pub fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        draft: Option<&'m LlamaModel>,
        config: &WorkerConfig,
        sink: EventSink,
        prep: mpsc::Sender<Job>,
        meter: Arc<Meter>,
    ) -> Result<(Self, Preparer<'m>), (LoadError, EventSink)> {
        let encoder = crate::load::embedding_only(model);
        let parts = match encoder {
            true => Ok(None),
            false => new_context(backend, model, config).map(Some),
        }
        .and_then(|ctx| Ok((ctx, load_template(model, config)?)));
        let (ctx, template) = match parts {
            Ok(parts) => parts,
            Err(e) => return Err((e, sink)),
        };
        let speculate = speculates(model, config.spec_ngram > 0 || draft.is_some());
        let drafter = match draft.filter(|_| !encoder && speculate) {
            Some(draft) => match Drafter::new(backend, draft, model, config) {
                Ok(drafter) => Some(drafter),
                Err(e) => return Err((e, sink)),
            },
            None => None,
        };
        let ctx_per_slot = config.ctx_per_slot.max(16);
        let n_batch = config.batch_size.max(16) as usize;
        let embed_params = (config.embeddings || encoder).then(|| {
            // An encoder has no position past its trained context (BERT: 512);
            // a longer input would index past its position embeddings.
            let n_ctx = match model.n_ctx_train() {
                0 => ctx_per_slot,
                train => ctx_per_slot.min(train).max(16),
            };
            embed::context_params(n_ctx, threads(config), embed::model_pooling(model))
        });
        let bytes_per_token = prep::bytes_per_token(model);
        let preparer = Preparer::new(
            model,
            template.template,
            ctx_per_slot as usize,
            bytes_per_token,
        );
        let parallel = match encoder {
            true => 0,
            false => config.parallel.max(1) as i32,
        };
        let slots = (0..parallel)
            .map(|seq_id| Slot {
                seq_id,
                cached: Vec::new(),
                active: None,
            })
            .collect();
        let engine = Self {
            model,
            ctx,
            embedder: Embedder::new(
                backend,
                model,
                embed_params,
                bytes_per_token,
                &config.model_name,
            ),
            embeds: VecDeque::new(),
            template: TemplateInfo {
                source: template.source,
                found: template.found,
            },
            prep,
            in_prep: HashMap::new(),
            prep_sent: 0,
            prep_back: 0,
            ctx_per_slot: ctx_per_slot as usize,
            budget: Budget {
                batch: n_batch,
                prefill_chunk: match config.prefill_chunk {
                    0 => n_batch,
                    n => n as usize,
                },
            },
            batch: LlamaBatch::new(n_batch, 1),
            slots,
            waiting: VecDeque::new(),
            sink,
            meter,
            piece_buf: Vec::with_capacity(32),
            cache: PromptCache::new(config.cache_ram_mib as usize * 1024 * 1024),
            copies: 0,
            spec_ngram: match speculate {
                true => config.spec_ngram as usize,
                false => 0,
            },
            drafter,
            spec_draft: config.spec_draft as usize,
            drafted: 0,
            accepted: 0,
            prefill_ahead: prefill_ahead(model, config),
            parked: VecDeque::new(),
            parked_bytes: 0,
            ahead: 0,
        };
        let mut engine = engine;
        if encoder {
            // Its only context: made now, so its memory shows in `Ready`.
            if let Err(e) = engine.embedder.ready() {
                let error = LoadError {
                    message: e.message,
                    permanent: false,
                };
                return Err((error, engine.sink));
            }
            tracing::info!("an encoder: embeddings only, no generation context");
        }
        Ok((engine, preparer))
    }

    /// Facts for the `Ready` handshake message.
    pub fn info(&self, config: &WorkerConfig) -> ModelInfo {
        ModelInfo {
            model_name: config.model_name.clone(),
            ctx_per_slot: self.ctx_per_slot as u32,
            embedding_only: self.ctx.is_none(),
            n_ctx_train: self.model.n_ctx_train(),
            parallel: self.slots.len() as u32,
            embedding_size: if self.embedder.enabled() {
                self.model.n_embd() as u32
            } else {
                0
            },
            has_chat_template: self.template.found,
            chat_template: self.template.source.clone(),
            vocab_size: self.model.n_vocab() as u32,
            model_size_bytes: self.model.size(),
            n_params: self.model.n_params(),
            // Everything llama.cpp logged while loading the model and creating
            // the contexts (both done by now, in `Engine::new`).
            offload: crate::offload::summarize(
                &crate::offload::take(),
                crate::offload::backends(),
                &crate::offload::gpu_devices(),
                self.model.n_layer(),
            ),
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
    pub fn run(&mut self, inbound: &mpsc::Receiver<Input>) -> Result<(), Disconnected> {
        loop {
            let sent_before = self.prep_sent;
            let idle = self.waiting.is_empty()
                && self.parked.is_empty()
                && self.embeds.is_empty()
                && self.slots.iter().all(|s| s.active.is_none());
            // A turn begins when there is work: at once when busy, after
            // the wait for input when idle.
            if idle {
                let Ok(msg) = inbound.recv() else {
                    return Ok(());
                };
                self.meter.begin();
                if !self.handle(msg)? {
                    return self.sink.flush();
                }
            } else {
                self.meter.begin();
            }
            while let Ok(msg) = inbound.try_recv() {
                if !self.handle(msg)? {
                    return self.sink.flush();
                }
            }
            if !self.await_prep(inbound, sent_before)? {
                return self.sink.flush();
            }
            if !self.admit()? {
                self.prefill_ahead()?;
            }
            self.embed_step()?;
            // Answers to commands (embeddings, failures, starts) go out
            // before the decode step, the step's tokens right after it.
            self.sink.flush()?;
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step()?;
                self.sink.flush()?;
            }
            let busy = self.slots.iter().filter(|s| s.active.is_some()).count();
            let cells = self.slots.iter().map(|s| s.cached.len()).sum();
            self.meter.occupancy(busy, cells);
            self.meter.cache(self.cache.stats(), self.copies);
            self.meter.speculation(self.drafted, self.accepted);
            self.meter.ahead(self.parked.len(), self.ahead);
            self.meter.end();
        }
    }

    /// Applies one input; `false` means stop serving.
    fn handle(&mut self, msg: Input) -> Result<bool, Disconnected> {
        let cmd = match msg {
            Input::Inbound(Inbound::Command(cmd)) => cmd,
            Input::Inbound(Inbound::Closed(why)) => {
                tracing::info!(%why, "command channel closed; exiting");
                return Ok(false);
            }
            Input::Prepared(prepared) => {
                self.prepared(prepared)?;
                return Ok(true);
            }
        };
        match cmd {
            Command::Generate { id, .. } if self.ctx.is_none() => {
                let message = "this model serves embeddings only".to_owned();
                self.fail(id, FailureKind::InvalidRequest, message)?
            }
            Command::Generate {
                id,
                trace,
                prompt,
                params,
            } => {
                let job = Job::Generate {
                    id,
                    trace,
                    prompt,
                    params,
                };
                self.in_prep.insert(id, false);
                self.send_to_prep(id, job)?
            }
            Command::Embed {
                id,
                trace,
                inputs,
                truncate,
            } => {
                tracing::debug!(trace, inputs = inputs.len(), truncate, "embed");
                self.embed(EmbedJob::new(id, inputs, truncate))?
            }
            Command::Rerank {
                id,
                trace,
                query,
                documents,
            } => {
                tracing::debug!(trace, documents = documents.len(), "rerank");
                self.embed(EmbedJob::rerank(id, query, documents))?
            }
            Command::CountTokens { id, prompt } => {
                self.send_to_prep(id, Job::Count { id, prompt })?
            }
            Command::Tokenize {
                id,
                content,
                add_special,
            } => self.sink.send(crate::tokens::tokenize(
                self.model,
                id,
                &content,
                add_special,
            ))?,
            Command::Detokenize { id, tokens } => self
                .sink
                .send(crate::tokens::detokenize(self.model, id, &tokens))?,
            Command::Cancel { id } => self.cancel(id)?,
            // The reader thread answers pings (see `ipc`); one that got here
            // anyway is answered the same way, from the meter.
            Command::Ping { id } => self.sink.send(Event::Pong {
                id,
                progress: self.meter.progress(),
            })?,
            Command::Shutdown => return Ok(false),
            // The reader thread applies it (see `ipc`); one that got here anyway too.
            Command::SetLogLevel { filter } => crate::set_log_filter(&filter),
            Command::Init { .. } => {
                tracing::warn!("ignoring a second Init");
            }
        }
        Ok(true)
    }

    fn fail(&self, id: RequestId, kind: FailureKind, message: String) -> Result<(), Disconnected> {
        self.sink.send(Event::Failed { id, kind, message })
    }

    /// Waits up to [`PREP_WAIT`] for the jobs this turn sent to the prep
    /// thread (when it sent any), handling whatever arrives meanwhile; `false`
    /// means stop serving. Why: a request whose prompt comes back while this
    /// turn's decode runs would wait for the whole next step to be admitted
    /// (a 512-token prefill step is ~0.5 s on a small CPU), where rendering and
    /// tokenizing it takes about a millisecond; a huge prompt still cannot
    /// hold the loop for longer than the wait.
    fn await_prep(
        &mut self,
        inbound: &mpsc::Receiver<Input>,
        sent_before: u64,
    ) -> Result<bool, Disconnected> {
        if self.prep_sent == sent_before {
            return Ok(true);
        }
        let deadline = std::time::Instant::now() + PREP_WAIT;
        while self.prep_back < self.prep_sent {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match inbound.recv_timeout(left) {
                Ok(msg) => {
                    if !self.handle(msg)? {
                        return Ok(false);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Hands a job to the prep thread.
    fn send_to_prep(&mut self, id: RequestId, job: Job) -> Result<(), Disconnected> {
        if self.prep.send(job).is_ok() {
            self.prep_sent += 1;
            return Ok(());
        }
        self.in_prep.remove(&id);
        let message = "the prompt preparation thread is gone".into();
        self.fail(id, FailureKind::Internal, message)
    }

    /// Takes a request back from the prep thread.
    fn prepared(&mut self, prepared: Prepared) -> Result<(), Disconnected> {
        self.prep_back += 1;
        let (id, result) = match prepared {
            Prepared::Count { id, result } => {
                return match result {
                    Ok(count) => self.sink.send(Event::TokenCount { id, count }),
                    Err(e) => self.fail(id, e.kind, e.message),
                };
            }
            Prepared::Generate { id, result } => (id, result),
        };
        if self.in_prep.remove(&id) != Some(false) {
            return Ok(()); // cancelled while in prep, and answered then
        }
        match result {
            Ok(waiting) => {
                self.waiting.push_back(waiting);
                Ok(())
            }
            Err(e) => self.fail(id, e.kind, e.message),
        }
    }

    /// Moves parked sequences (see `ahead`), then waiting requests into
    /// free slots, oldest first. Returns whether a copy from another slot
    /// is pending (no state may be saved or restored before the next decode).
    ///
    /// Why admission stops after a copy from another slot: with per-slot KV
    /// (`kv_unified = false`) llama.cpp copies between sequences by copying
    /// the whole buffer, and only at the next decode. Until then the
    /// destination's bytes are stale and the source's must not change, so
    /// no state may be saved from or restored into either before that
    /// decode, which comes right after this admission.
    fn admit(&mut self) -> Result<bool, Disconnected> {
        self.resume_parked()?;
        while let Some(waiting) = self.waiting.front() {
            let free: Vec<Option<&[LlamaToken]>> = self
                .slots
                .iter()
                .map(|s| s.active.is_none().then_some(s.cached.as_slice()))
                .collect();
            let Some(i) = plan::pick_slot(&free, &waiting.tokens) else {
                break;
            };
            // Oldest first: the requests behind it wait too (they would
            // mostly want the same prefix).
            if self.wait_for_prefill(i, &waiting.tokens) {
                break;
            }
            let w = self.waiting.pop_front().expect("front exists");
            let copied = self.fill_slot(i, &w.tokens);
            let reuse = plan::reuse_len(&self.slots[i].cached, &w.tokens);
            self.truncate_cache(i, reuse);
            let slot = &mut self.slots[i];
            let cached = slot.cached.len() as u32;
            self.sink.send(Event::Started {
                id: w.id,
                prompt_tokens: w.tokens.len() as u32,
                reasoning_open: w.reasoning_open,
            })?;
            tracing::debug!(trace = w.trace, slot = slot.seq_id, cached, "started");
            slot.active = Some(Sequence::start(w, cached));
            if copied {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops slot `i`'s cached tokens from position `keep` on.
    fn truncate_cache(&mut self, i: usize, keep: usize) {
        let slot = &mut self.slots[i];
        if keep >= slot.cached.len() {
            return;
        }
        let seq = Some(slot.seq_id as u32);
        let Some(ctx) = self.ctx.as_mut() else {
            return;
        };
        if ctx
            .clear_kv_cache_seq(seq, Some(keep as u32), None)
            .unwrap_or(false)
        {
            slot.cached.truncate(keep);
        } else {
            // Partial removal is refused by some memory types: start afresh.
            let _ = ctx.clear_kv_cache_seq(seq, None, None);
            slot.cached.clear();
        }
    }

    /// One decode step over every active sequence.
    fn step(&mut self) -> Result<(), Disconnected> {
        self.draft();
        let states: Vec<SlotState> = self.slots.iter().map(Slot::state).collect();
        let mut plan = plan::plan_step(&states, self.budget);
        if plan.is_empty() {
            return Ok(());
        }
        self.fill_batch(&plan);
        // Events go out in slot order, as they always have.
        plan.sort_by_key(|w| w.slot);
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(());
        };
        if let Err(e) = ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "decode failed; failing the sequences of this batch");
            for work in &plan {
                let message = format!("llama.cpp decode failed: {e}");
                self.abort_slot(work.slot, FailureKind::Internal, message)?;
            }
            return Ok(());
        }
        for work in &plan {
            self.after_decode(work)?;
        }
        Ok(())
    }

    /// Puts the plan's tokens into the batch, in plan order.
    fn fill_batch(&mut self, plan: &[Work]) {
        self.batch.clear();
        for work in plan {
            let slot = &self.slots[work.slot];
            let seq = slot.active.as_ref().expect("planned slots are active");
            let ids = [slot.seq_id];
            let added = match &work.feed {
                Feed::Decode { draft } => {
                    let token = seq.next.expect("a decoding slot has a next token");
                    let at = slot.cached.len();
                    std::iter::once(token)
                        .chain(seq.draft[..*draft].iter().copied())
                        .enumerate()
                        .try_for_each(|(k, t)| self.batch.add(t, (at + k) as i32, &ids, true))
                }
                Feed::Prompt(range) => range.clone().try_for_each(|pos| {
                    let logits = pos + 1 == seq.prompt.len();
                    self.batch.add(seq.prompt[pos], pos as i32, &ids, logits)
                }),
            };
            // The plan never exceeds the batch it was made for.
            debug_assert!(added.is_ok(), "batch overflow");
        }
    }

    /// Records what the decode stored for `work`, samples, and streams text.
    ///
    /// A decode with a draft (`d_1..d_k` after the sampled token) samples
    /// at the token's logits, and, while the sampled token equals the next
    /// draft token (whose KV is then the right one), keeps that draft token
    /// and samples again at its logits: every token comes from the
    /// sequence's own sampler given the tokens before it, exactly as
    /// without a draft (for greedy sampling: accept while the argmax
    /// matches; for random sampling this is the standard acceptance rule
    /// for a draft that is one token with certainty). The KV of the
    /// drafted tokens not kept is removed.
    fn after_decode(&mut self, work: &Work) -> Result<(), Disconnected> {
        let slot = &mut self.slots[work.slot];
        let Some(seq) = slot.active.as_mut() else {
            return Ok(());
        };
        let draft = match &work.feed {
            Feed::Decode { draft } => {
                slot.cached.extend(seq.next.take());
                let mut d = std::mem::take(&mut seq.draft);
                d.truncate(*draft);
                d
            }
            Feed::Prompt(range) => {
                slot.cached.extend_from_slice(&seq.prompt[range.clone()]);
                Vec::new()
            }
        };
        let Some(idx) = work.logits_at else {
            return Ok(()); // prompt not fully evaluated yet
        };
        let (seq_id, mut idx) = (slot.seq_id, idx);
        self.drafted += draft.len() as u64;
        for (k, &drafted) in draft.iter().enumerate() {
            let (token, done) = self.sample(work.slot, idx)?;
            if done || token != drafted {
                self.accepted += k as u64;
                self.pace(work.slot, draft.len(), k);
                return self.drop_rejected(work.slot, seq_id);
            }
            // The sampled token is the draft token the batch evaluated.
            let slot = &mut self.slots[work.slot];
            slot.cached.push(drafted);
            if let Some(seq) = slot.active.as_mut() {
                seq.next = None;
            }
            idx += 1;
        }
        self.accepted += draft.len() as u64;
        self.pace(work.slot, draft.len(), draft.len());
        self.sample(work.slot, idx).map(|_| ())
    }

    /// Tells slot `i`'s sequence, if still running, how its draft fared.
    fn pace(&mut self, i: usize, drafted: usize, accepted: usize) {
        if let Some(seq) = self.slots[i].active.as_mut() {
            seq.pace.record(drafted, accepted, self.spec_draft);
        }
    }

    /// Removes the KV of slot `i`'s rejected draft tokens (those past its
    /// cached tokens). Should llama.cpp refuse (a memory type that cannot
    /// cut a sequence short; `Engine::new` turns drafts off for those), the
    /// slot's KV is cleared and its sequence, if still running, failed.
    fn drop_rejected(&mut self, i: usize, seq_id: i32) -> Result<(), Disconnected> {
        let keep = self.slots[i].cached.len() as u32;
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(());
        };
        let removed = ctx
            .clear_kv_cache_seq(Some(seq_id as u32), Some(keep), None)
            .unwrap_or(false);
        if removed {
            return Ok(());
        }
        let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
        self.slots[i].cached.clear();
        let message = "llama.cpp could not remove rejected draft tokens".to_owned();
        self.abort_slot(i, FailureKind::Internal, message)
    }

    /// Samples slot `i`'s token at batch index `idx`, streams what it
    /// produced; returns it and whether the sequence finished.
    fn sample(&mut self, i: usize, idx: usize) -> Result<(LlamaToken, bool), Disconnected> {
        let slot = &mut self.slots[i];
        // An embedding-only model has no slots, so no sequence reaches here.
        let (Some(seq), Some(ctx)) = (slot.active.as_mut(), self.ctx.as_ref()) else {
            return Ok((LlamaToken(-1), true));
        };
        let idx = idx as i32;
        let token = seq.sampler.sample(ctx, idx);
        let vocab = self.model.vocab();
        let step = if vocab.is_eog(token) && seq.stops_at_eog() {
            seq.on_eog()
        } else {
            self.piece_buf.clear();
            vocab.token_to_piece_into(token, &mut self.piece_buf, seq.special, None);
            let logprob = seq.params.logprobs.map(|top| {
                let logits = ctx.get_logits_ith(idx);
                let best = Best {
                    logits,
                    top: top.into(),
                    special: seq.special,
                };
                token_logprob(&vocab, token, &self.piece_buf, best)
            });
            let sampled = Sampled {
                token,
                piece: &self.piece_buf,
                logprob,
            };
            seq.on_token(sampled, slot.cached.len(), self.ctx_per_slot)
        };
        let done = step.finish.is_some();
        self.apply(i, step)?;
        Ok((token, done))
    }

    /// Sends what a sampled token produced and ends the sequence if it is done.
    fn apply(&mut self, i: usize, step: Step) -> Result<(), Disconnected> {
        if let Some(piece) = step.piece {
            self.sink.send(piece)?;
        }
        match step.finish {
            Some(reason) => self.finish_slot(i, reason),
            None => Ok(()),
        }
    }

    /// Ends a sequence normally: flush held text, report, keep its KV as a prefix cache.
    fn finish_slot(&mut self, i: usize, reason: FinishReason) -> Result<(), Disconnected> {
        let Some(seq) = self.slots[i].active.take() else {
            return Ok(());
        };
        seq.finish(reason)
            .into_iter()
            .try_for_each(|event| self.sink.send(event))
    }

    /// Takes slot `i`'s sequence out and clears its KV.
    fn evict(&mut self, i: usize) -> Option<Sequence> {
        let slot = &mut self.slots[i];
        let seq = slot.active.take()?;
        if let Some(ctx) = self.ctx.as_mut() {
            let _ = ctx.clear_kv_cache_seq(Some(slot.seq_id as u32), None, None);
        }
        slot.cached.clear();
        Some(seq)
    }

    /// Ends a sequence abnormally and clears its KV.
    fn abort_slot(
        &mut self,
        i: usize,
        kind: FailureKind,
        message: String,
    ) -> Result<(), Disconnected> {
        match self.evict(i) {
            Some(seq) => self.fail(seq.id, kind, message),
            None => Ok(()),
        }
    }

    fn cancel(&mut self, id: RequestId) -> Result<(), Disconnected> {
        if let Some(cancelled @ false) = self.in_prep.get_mut(&id) {
            *cancelled = true;
            return self.sink.send(Event::Finished {
                id,
                reason: FinishReason::Cancelled,
                usage: Usage::default(),
            });
        }
        if self.cancel_parked(id)? {
            return Ok(());
        }
        if let Some(pos) = self.waiting.iter().position(|w| w.id == id) {
            self.waiting.remove(pos);
            return self.sink.send(Event::Finished {
                id,
                reason: FinishReason::Cancelled,
                usage: Usage::default(),
            });
        }
        let running = self
            .slots
            .iter()
            .position(|s| s.active.as_ref().is_some_and(|q| q.id == id));
        // Not found: already finished, and its Finished event is on its way.
        match running.and_then(|i| self.evict(i)) {
            Some(seq) => self.sink.send(seq.cancelled()),
            None => Ok(()),
        }
    }

    /// Queues an embeddings or rerank request (refused at once when the
    /// model's pooling does not fit it, embeddings are off or their context
    /// cannot be made).
    fn embed(&mut self, job: EmbedJob) -> Result<(), Disconnected> {
        let checked = self.embedder.accepts(&job);
        if let Err(e) = checked.and_then(|()| self.embedder.ready()) {
            return self.fail(job.id, e.kind, e.message);
        }
        self.embeds.push_back(job);
        Ok(())
    }

    /// Embeds one input of the oldest embeddings request; answers it when
    /// that was its last input (or the input cannot be embedded).
    fn embed_step(&mut self) -> Result<(), Disconnected> {
        let Some(job) = self.embeds.front_mut() else {
            return Ok(());
        };
        let outcome = self.embedder.advance(job).map(|()| job.result());
        let id = job.id;
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(event)) => {
                self.embeds.pop_front();
                self.sink.send(event)
            }
            Err(e) => {
                self.embeds.pop_front();
                self.fail(id, e.kind, e.message)
            }
        }
    }
}

/// Whether speculative decoding can run on `model`: not on models whose
/// memory cannot drop a sequence's last tokens (recurrent and hybrid ones),
/// which rejecting a draft needs. Says so when speculation was `wanted`.
fn speculates(model: &LlamaModel, wanted: bool) -> bool {
    let able = !model.is_recurrent() && !model.is_hybrid();
    if wanted && !able {
        tracing::warn!(
            "speculative decoding is off: this model's memory cannot drop rejected drafts"
        );
    }
    able
}

/// Longest a turn waits for the prompts it sent to the prep thread.
const PREP_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Whether queued requests start ahead in a borrowed slot: it needs the
/// host-RAM cache (where parked states are reserved) and a memory that can
/// cut a sequence back to a shared prefix (not recurrent or hybrid ones).
fn prefill_ahead(model: &LlamaModel, config: &WorkerConfig) -> bool {
    let able = config.cache_ram_mib > 0 && !model.is_recurrent() && !model.is_hybrid();
    if config.prefill_ahead && !able {
        tracing::info!("prefill ahead is off: it needs --cache-ram > 0 and a non-recurrent model");
    }
    config.prefill_ahead && able
}

/// Where [`token_logprob`] finds the alternatives to a sampled token.
struct Best<'a> {
    /// The logits the token was sampled from.
    logits: &'a [f32],
    /// How many of the most likely tokens to report.
    top: usize,
    /// Render special tokens (as the sequence's text does).
    special: bool,
}

/// The log-probability of `token` (whose bytes are `piece`) and the most
/// likely tokens with theirs.
fn token_logprob(vocab: &LlamaVocab, token: LlamaToken, piece: &[u8], b: Best) -> TokenLogprob {
    let (logprob, best) = logprobs(b.logits, token.0 as usize, b.top);
    let mut bytes = Vec::new();
    let top = best
        .into_iter()
        .map(|(t, lp)| {
            bytes.clear();
            vocab.token_to_piece_into(LlamaToken(t as i32), &mut bytes, b.special, None);
            (bytes.clone(), lp)
        })
        .collect();
    TokenLogprob {
        bytes: piece.to_vec(),
        logprob,
        top,
    }
}
