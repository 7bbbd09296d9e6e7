//! The supervisor ↔ worker contract: the only thing the two processes share.
//!
//! # Layout
//! - [`PROTOCOL_VERSION`]: bumped on any incompatible change to the types below.
//! - [`Bootstrap`]: the one message a worker sends on the supervisor's one-shot
//!   server (ipc-channel's typed channel, postcard-encoded). It carries the
//!   byte channels that all further traffic rides on: one for commands and one
//!   or more event *lanes* (see below).
//! - [`Command`] (supervisor → worker) and [`Event`] (worker → supervisor):
//!   request-level messages keyed by [`RequestId`], each encoded with bincode 1
//!   ([`encode`] / [`decode`]) as one message on an ipc-channel byte channel.
//! - [`KvCacheType`], [`SplitMode`] (`device.rs`): the device settings of a
//!   [`WorkerConfig`], named as llama-server's flags name them.
//!
//! # Handshake
//! 1. The supervisor opens an `IpcOneShotServer<Bootstrap>` and spawns the
//!    worker with the server name and the number of event lanes as arguments
//!    (`llm-node-worker <server> [lanes]`, lanes default 1).
//! 2. The worker connects, creates its command channel and one event byte
//!    channel per lane, and sends [`Bootstrap`] with its own protocol version.
//! 3. The supervisor checks the version and sends [`Command::Init`] with the
//!    typed [`WorkerConfig`] (the worker never reads the environment).
//! 4. The worker loads the model and answers [`Event::Ready`] with
//!    [`ModelInfo`], or [`Event::InitFailed`] and exits.
//!
//! # Event lanes
//! Events travel back on one of several channels. Lane 0 carries the
//! handshake events and everything of requests that name no other lane; the
//! top 16 bits of a [`RequestId`] name the lane its events go back on
//! ([`lane_of`], [`request_id`]). The supervisor gives each of its HTTP threads
//! a lane and reads that lane on that thread, so a streamed token wakes exactly
//! the thread that writes it to the client. Which lane carries an event never
//! changes what it means: a supervisor may read every lane alike.
//!
//! # Liveness
//! The worker's command reader answers [`Command::Ping`] itself, from
//! progress counters its engine updates every turn ([`Progress`]), so a long
//! decode step never delays the answer. A [`Event::Pong`] is therefore not
//! ordered with the engine's events on the same lane; it belongs to no
//! request but its ping.
//!
//! Every type here is bincode-safe: no `skip_serializing_if`, `flatten`,
//! `untagged` or internally tagged enums. HTTP types live in the supervisor.

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender};
use serde::{Deserialize, Serialize};

mod device;
pub use device::{KvCacheType, SplitMode, UnknownName};

/// Version of this contract. A worker and supervisor with different versions refuse to talk.
pub const PROTOCOL_VERSION: u32 = 12;

/// Identifies one request for its whole life in a worker. Unique per worker
/// process. The top 16 bits are the event lane ([`lane_of`]).
pub type RequestId = u64;

/// Bits of a [`RequestId`] below the lane number.
const LANE_SHIFT: u32 = 48;

/// The request id for sequence number `seq` (taken modulo 2^48) on `lane`.
pub fn request_id(lane: u16, seq: u64) -> RequestId {
    (u64::from(lane) << LANE_SHIFT) | (seq & ((1 << LANE_SHIFT) - 1))
}

/// The event lane that request `id`'s events go back on.
pub fn lane_of(id: RequestId) -> usize {
    (id >> LANE_SHIFT) as usize
}

/// Sent once by the worker on the supervisor's one-shot server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bootstrap {
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Where the supervisor sends encoded [`Command`]s.
    pub commands: IpcBytesSender,
    /// Where the supervisor reads encoded [`Event`]s: one channel per lane,
    /// lane 0 first.
    pub events: Vec<IpcBytesReceiver>,
}

/// Everything a worker needs to load and serve one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Public model id (what clients put in `model`).
    pub model_name: String,
    /// Path of the GGUF file.
    pub model_path: String,
    /// Context window of each sequence (slot), in tokens.
    pub ctx_per_slot: u32,
    /// Sequences decoded together (continuous batching slots).
    pub parallel: u32,
    /// Layers offloaded to the GPU (0 on CPU-only machines).
    pub n_gpu_layers: u32,
    /// Index of the main GPU among the visible ones.
    pub main_gpu: i32,
    /// How the model is spread over the visible GPUs.
    pub split_mode: SplitMode,
    /// Element type of the K cache.
    pub cache_type_k: KvCacheType,
    /// Element type of the V cache (a quantised one turns flash attention on).
    pub cache_type_v: KvCacheType,
    /// CPU threads for decoding; 0 means all available cores.
    pub threads: u32,
    /// Maximum tokens submitted to one `llama_decode` call (logical batch).
    pub batch_size: u32,
    /// Most prompt tokens one decode step takes while other sequences are
    /// generating, so a long prompt cannot stall them for its whole prefill;
    /// 0 = up to `batch_size` (llama-server's behaviour). Without running
    /// sequences a prompt always gets the whole batch.
    pub prefill_chunk: u32,
    /// Create an embeddings context so [`Command::Embed`] works.
    pub embeddings: bool,
    /// Host-RAM prompt cache of this model, in MiB: the KV of sequences
    /// whose slot is reassigned, restored by requests that extend them;
    /// 0 = off.
    pub cache_ram_mib: u32,
    /// Speculative decoding without a draft model: the n-gram length whose
    /// earlier occurrence in the sequence proposes the next tokens; 0 = off.
    pub spec_ngram: u32,
    /// Most draft tokens per sequence and step.
    pub spec_draft: u32,
    /// With every slot busy, start the oldest queued request in a borrowed
    /// slot between two steps (its prefill and first token), then park its
    /// state in host RAM until a slot is free; needs `cache_ram_mib` > 0.
    pub prefill_ahead: bool,
    /// A draft model (path of a GGUF file sharing the model's vocabulary)
    /// whose greedy continuation proposes the draft tokens instead of the
    /// n-gram lookup; loaded on the same GPUs; `None` = no draft model.
    pub draft_model_path: Option<String>,
    /// A Jinja chat template that replaces the one in the GGUF.
    pub chat_template: Option<String>,
}

/// Facts about the loaded model, reported in [`Event::Ready`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model_name: String,
    /// Context window of each slot, in tokens.
    pub ctx_per_slot: u32,
    /// An encoder that serves embeddings only: no generation context, no
    /// slots (`parallel` 0), and `Generate` is refused.
    pub embedding_only: bool,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Parallel slots.
    pub parallel: u32,
    /// Embedding dimension (0 when embeddings are disabled).
    pub embedding_size: u32,
    /// Whether a chat template is available (from the GGUF or the config).
    pub has_chat_template: bool,
    /// The chat template the worker renders with (from the config, the GGUF,
    /// or the ChatML fallback): the supervisor picks its output parser from it.
    pub chat_template: String,
    pub vocab_size: u32,
    /// Size of the weights in bytes.
    pub model_size_bytes: u64,
    pub n_params: u64,
    /// Where the model really runs, as llama.cpp placed it.
    pub offload: Offload,
}

/// Where a loaded model runs: the worker's backends, the layers llama.cpp put
/// on a GPU, and the memory it allocated (from llama.cpp's own buffer reports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offload {
    /// Backends compiled into the worker (`"CPU"`, `"CUDA"`, …), whether or not
    /// they found a device.
    pub backends: Vec<String>,
    /// GPU devices the worker's backends found (`"CUDA0"`, …); empty on a
    /// CPU-only worker or a machine without a usable GPU.
    pub devices: Vec<String>,
    /// The backend the offloaded layers run on (`"CUDA"`, …), or `"CPU"` when
    /// no layer is offloaded.
    pub backend: String,
    /// Layers llama.cpp offloaded (repeating layers plus the output layer).
    pub layers_offloaded: u32,
    /// Layers that could be offloaded (`n_layer + 1`).
    pub layers_total: u32,
    /// Bytes llama.cpp allocated on GPU devices (weights, KV cache, compute).
    pub device_bytes: u64,
    /// llama.cpp's allocations by kind, over all devices and the host.
    pub allocated: Allocated,
}

/// Bytes of llama.cpp's buffers, by kind, summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    /// Model weights (mapped or loaded, plus repacked copies).
    pub weights: u64,
    /// KV cache (and recurrent state).
    pub kv: u64,
    /// Compute (graph) buffers.
    pub compute: u64,
    /// Logits/embeddings output buffer.
    pub output: u64,
}

/// One chat message, content already flattened to text by the supervisor.
/// Fields a role does not use are `None` / empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `None` when the message has no content (an assistant turn that only
    /// calls tools): templates test `content is none`, not `== ""`.
    pub content: Option<String>,
    /// An assistant turn's reasoning, for templates that render it.
    pub reasoning_content: Option<String>,
    /// An assistant turn's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// A `tool` message: the function's name (some templates print it).
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with only a role and text content.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(content.into()),
            ..Self::default()
        }
    }
}

/// One function call made by the assistant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (OpenAI's wire shape; templates get an object).
    pub arguments: String,
}

/// A chat to render with the model's template. JSON travels as text because
/// bincode cannot carry `serde_json::Value`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatPrompt {
    pub messages: Vec<ChatMessage>,
    /// OpenAI `tools` (a JSON array of `{"type":"function","function":{..}}`).
    pub tools_json: Option<String>,
    /// Extra template variables (`chat_template_kwargs`, a JSON object), e.g.
    /// `{"enable_thinking": false}`.
    pub template_kwargs_json: Option<String>,
    /// gpt-oss `reasoning_effort` (`low` / `medium` / `high`).
    pub reasoning_effort: Option<String>,
    /// Append the assistant's generation prompt (normally true).
    pub add_generation_prompt: bool,
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Raw text, tokenized as is (BOS added when the model wants one).
    Text(String),
    /// Messages rendered with the model's chat template. Generated text is
    /// rendered *with* special tokens, so the supervisor's output parser sees
    /// the model's markers (harmony channels, `<think>`, tool-call tags).
    Chat(ChatPrompt),
    /// Fill-in-the-middle: the text between `prefix` and `suffix`, with the
    /// model's FIM tokens (`FIM_PRE prefix FIM_SUF suffix FIM_MID`); refused
    /// (`InvalidRequest`) by a model without them.
    Infill { prefix: String, suffix: String },
}

/// One input of [`Command::Embed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmbedInput {
    /// Text, tokenized with the model's BOS/EOS as it adds them.
    Text(String),
    /// Token ids, embedded unchanged (nothing added); an id outside the
    /// vocabulary is refused (`InvalidRequest`).
    Tokens(Vec<i32>),
}

impl From<String> for EmbedInput {
    fn from(text: String) -> Self {
        EmbedInput::Text(text)
    }
}

impl From<&str> for EmbedInput {
    fn from(text: &str) -> Self {
        EmbedInput::Text(text.to_string())
    }
}

/// A constraint on what may be generated, enforced by a grammar sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Constraint {
    /// The whole output is one JSON value valid under this JSON schema (text).
    JsonSchema(String),
    /// The whole output follows this GBNF grammar (root rule `root`).
    Grammar(String),
    /// Free text until `trigger` is generated; from the trigger on, the output
    /// is `trigger`, a JSON value valid under `schema`, then `suffix` (one or
    /// more times, separated by whitespace). Tool calls under `tool_choice: auto`.
    LazyJsonSchema {
        trigger: String,
        schema: String,
        suffix: String,
    },
}

/// Sampling and stopping parameters of one generation. Validated by the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub min_p: f32,
    /// `None` draws a random seed.
    pub seed: Option<u32>,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Tokens of history the penalties look at.
    pub penalty_last_n: i32,
    /// `None` generates until the slot's context is full.
    pub max_tokens: Option<u32>,
    /// Generation stops before any of these strings; they are never emitted.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Grammar the output must follow.
    pub constraint: Option<Constraint>,
    /// Added to the logits of these tokens before sampling (-100 bans a token).
    pub logit_bias: Vec<(i32, f32)>,
    /// Report each generated token's log-probability with this many most
    /// likely alternatives (0–20); `None` reports nothing.
    pub logprobs: Option<u8>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            seed: None,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Second step of the handshake: load this model and answer `Ready`.
    Init {
        protocol_version: u32,
        config: WorkerConfig,
    },
    /// Generate text; answered by `Started`, `Piece`s, then `Finished` or `Failed`.
    /// `trace` is the HTTP request's id: the worker's log lines about this
    /// request carry it, so one request is one trace across both processes.
    Generate {
        id: RequestId,
        trace: String,
        prompt: Prompt,
        params: SamplingParams,
    },
    /// Embed each input; answered by `Embeddings` (or `TokenEmbeddings` by a
    /// model whose pooling is `none`) or `Failed`. With `truncate`, an input
    /// longer than the embedding context is cut to its first tokens (Ollama's
    /// `truncate`); without, it fails with `PromptTooLong`.
    /// A reranker refuses it (`InvalidRequest`): its outputs are scores of
    /// pairs, not vectors.
    Embed {
        id: RequestId,
        trace: String,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    },
    /// Score each document against `query` with a reranker (a model whose
    /// pooling is rank): each pair is one sequence, laid out as llama-server
    /// lays it out (the GGUF's `rerank` template, else BOS query EOS SEP
    /// document EOS as the vocabulary adds them). Answered by `Embeddings`
    /// holding each document's raw scores (the classifier's outputs, one for
    /// a cross-encoder), in document order; `Failed` (`InvalidRequest`) from
    /// a model that is not a reranker, `PromptTooLong` for a pair longer than
    /// the context. (Version 10.)
    Rerank {
        id: RequestId,
        trace: String,
        query: String,
        documents: Vec<String>,
    },
    /// Count the tokens of a prompt as `Generate` would see it; answered by `TokenCount` or `Failed`.
    CountTokens { id: RequestId, prompt: Prompt },
    /// Tokenize `content` (special-token text parsed; BOS/EOS added as the
    /// model adds them when `add_special`); answered by `Tokens` or `Failed`.
    Tokenize {
        id: RequestId,
        content: String,
        add_special: bool,
    },
    /// Turn tokens back into text (special tokens written out); answered by
    /// `Detokenized`, or `Failed` (`InvalidRequest`) for a token outside the vocabulary.
    Detokenize { id: RequestId, tokens: Vec<i32> },
    /// Stop a request; answered by `Finished` with [`FinishReason::Cancelled`] if it was running.
    Cancel { id: RequestId },
    /// Liveness probe, answered at once by the worker's command reader (not
    /// by its engine) with a `Pong` carrying the engine's [`Progress`]: a
    /// process that does not answer is hung; one whose engine sits in one
    /// step for too long is stuck, and the supervisor judges that from `Progress`.
    Ping { id: RequestId },
    /// Replace the worker's log filter (`RUST_LOG` syntax, e.g. `debug,llama-cpp-2=warn`),
    /// applied by the command reader at once; not answered. An invalid filter is
    /// logged and ignored. (Version 8.)
    SetLogLevel { filter: String },
    /// Finish nothing more, free everything and exit 0.
    Shutdown,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the slot's context was reached.
    Length,
    /// The supervisor sent `Cancel`.
    Cancelled,
}

/// The log-probability of one generated token and its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's bytes (a token may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// Most likely tokens at this position, most likely first.
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Token accounting of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens whose KV was reused from an earlier request.
    pub cached_tokens: u32,
}

/// How far the worker's engine has got, as of a `Pong`. A long step (a big
/// prompt batch on a slow machine) shows as a growing `busy_ms` with
/// `turns` unchanged; a healthy engine keeps advancing `turns` or is idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Turns of the engine loop completed since the worker started (each
    /// turn is at most one decode step and one embeddings input).
    pub turns: u64,
    /// How long the engine has been inside its current turn, in ms; 0 while
    /// it is idle, waiting for work.
    pub busy_ms: u64,
    /// Slots holding a request (prompt or decode), as of the last turn's end.
    pub busy_slots: u32,
    /// KV cache cells in use over all sequences (tokens whose KV is kept,
    /// cached prefixes included), as of the last turn's end.
    pub kv_cells: u64,
    /// Bytes held by the host-RAM prompt cache, as of the last turn's end.
    pub cache_bytes: u64,
    /// Sequence states held by the host-RAM prompt cache.
    pub cache_entries: u64,
    /// Prompts that reused KV from the host-RAM prompt cache (restores),
    /// since the worker started.
    pub cache_hits: u64,
    /// Prompts that reused KV copied from another slot, since the worker started.
    pub cache_copies: u64,
    /// Speculative decoding: draft tokens decoded, and those accepted (the
    /// acceptance rate is their ratio), since the worker started.
    pub spec_drafted: u64,
    pub spec_accepted: u64,
    /// Prefill ahead: sequences started and parked in host RAM, waiting for
    /// a slot, now; and requests started ahead since the worker started.
    pub parked: u64,
    pub started_ahead: u64,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The prompt does not fit the slot's context.
    PromptTooLong,
    /// The request cannot be served by this model (no chat template, embeddings disabled, ...).
    InvalidRequest,
    /// llama.cpp reported an error.
    Internal,
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The model is loaded; requests may be sent.
    Ready(ModelInfo),
    /// Loading failed; the worker exits after sending this. `permanent` when
    /// trying again cannot help (missing or invalid file, a chat template that
    /// does not compile): the supervisor parks the model instead of retrying.
    InitFailed { message: String, permanent: bool },
    /// The request got a slot and its prompt is tokenized. `reasoning_open`
    /// when the rendered chat prompt ends inside a reasoning block (a
    /// template that opens `<think>` itself): the output starts as reasoning.
    Started {
        id: RequestId,
        prompt_tokens: u32,
        reasoning_open: bool,
    },
    /// Generated text (valid UTF-8, stop strings held back) covering `tokens`
    /// tokens; `logprobs` has one entry per token when the request asked for them.
    Piece {
        id: RequestId,
        text: String,
        tokens: u32,
        logprobs: Vec<TokenLogprob>,
    },
    /// The generation ended.
    Finished {
        id: RequestId,
        reason: FinishReason,
        usage: Usage,
    },
    /// The request failed; nothing more comes for it.
    Failed {
        id: RequestId,
        kind: FailureKind,
        message: String,
    },
    /// Answer to `Embed`: one L2-normalised vector per input, in order; to
    /// `Rerank`: each document's raw scores, in order.
    Embeddings {
        id: RequestId,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
    },
    /// Answer to `Embed` from a model whose pooling is `none`: for each
    /// input, one vector per token (not normalised, as llama-server sends them).
    TokenEmbeddings {
        id: RequestId,
        inputs: Vec<Vec<Vec<f32>>>,
        prompt_tokens: u32,
    },
    /// Answer to `CountTokens`.
    TokenCount { id: RequestId, count: u32 },
    /// Answer to `Tokenize`: the tokens and each one's piece (its bytes, which
    /// need not be valid UTF-8 alone).
    Tokens {
        id: RequestId,
        tokens: Vec<i32>,
        pieces: Vec<Vec<u8>>,
    },
    /// Answer to `Detokenize` (invalid UTF-8 replaced).
    Detokenized { id: RequestId, content: String },
    /// Answer to `Ping`, with the engine's progress at the time.
    Pong { id: RequestId, progress: Progress },
}

impl Event {
    /// The request this event belongs to, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Event::Ready(_) | Event::InitFailed { .. } => None,
            Event::Started { id, .. }
            | Event::Piece { id, .. }
            | Event::Finished { id, .. }
            | Event::Failed { id, .. }
            | Event::Embeddings { id, .. }
            | Event::TokenEmbeddings { id, .. }
            | Event::TokenCount { id, .. }
            | Event::Tokens { id, .. }
            | Event::Detokenized { id, .. }
            | Event::Pong { id, .. } => Some(*id),
        }
    }

    /// Whether nothing more follows for this event's request.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Event::Started { .. } | Event::Piece { .. })
    }
}

/// A message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("protocol decode error: {0}")]
pub struct DecodeError(#[from] bincode::Error);

/// Encodes a message for a byte channel.
///
/// # Panics
/// Never for the types of this crate: bincode only fails on maps with
/// non-string keys or sequences of unknown length, which they do not contain.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    bincode::serialize(msg).expect("protocol types always serialize")
}

/// Encodes a message into `buf` (appended), for senders that reuse one buffer.
///
/// # Panics
/// As [`encode`].
pub fn encode_into<T: Serialize>(buf: &mut Vec<u8>, msg: &T) {
    bincode::serialize_into(buf, msg).expect("protocol types always serialize");
}

/// Largest message either side decodes. Far above any real message (a
/// 2,048-input embeddings answer at 4,096 dimensions is 32 MiB), and it keeps a
/// forged length prefix from making the decoder allocate without bound.
pub const MAX_MESSAGE_BYTES: u64 = 512 << 20;

/// bincode 1 as `bincode::serialize` writes it (fixed-size integers, little
/// endian), read with a size limit.
fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_MESSAGE_BYTES)
}

/// Decodes a message read from a byte channel, within [`MAX_MESSAGE_BYTES`].
///
/// # Errors
/// [`DecodeError`] when the bytes are not a valid message of type `T`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    use bincode::Options;
    Ok(options().deserialize(bytes)?)
}

/// Encodes the events of one event-lane message (see [`decode_events`]).
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    encode(&events)
}

/// Decodes one event-lane message: a flat list of events, in order — what
/// one engine turn produced for the lane (one IPC message and one wake-up
/// instead of many). The wire type is not recursive, so no message can nest
/// deeper than this and overflow a reader's stack.
///
/// # Errors
/// [`DecodeError`] when the bytes are not such a list, or exceed [`MAX_MESSAGE_BYTES`].
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + std::fmt::Debug>(msg: T) {
        let bytes = encode(&msg);
        let back: T = decode(&bytes).expect("decodes");
        assert_eq!(back, msg);
        let mut buf = vec![7];
        encode_into(&mut buf, &msg);
        assert_eq!(
            (buf[0], &buf[1..]),
            (7, &bytes[..]),
            "encode_into appends what encode returns"
        );
    }

    fn config() -> WorkerConfig {
        WorkerConfig {
            model_name: "smollm2".into(),
            model_path: "/m/x.gguf".into(),
            ctx_per_slot: 2048,
            parallel: 4,
            n_gpu_layers: 0,
            main_gpu: 0,
            split_mode: SplitMode::Row,
            cache_type_k: KvCacheType::Q8_0,
            cache_type_v: KvCacheType::Q4_0,
            threads: 0,
            batch_size: 512,
            prefill_chunk: 128,
            embeddings: true,
            cache_ram_mib: 4096,
            spec_ngram: 3,
            spec_draft: 8,
            prefill_ahead: true,
            draft_model_path: Some("/m/draft.gguf".into()),
            chat_template: Some("{{ x }}".into()),
        }
    }

    #[test]
    fn every_command_round_trips() {
        let params = SamplingParams {
            seed: Some(7),
            max_tokens: Some(3),
            stop: vec!["\n\n".into(), "ü".into()],
            constraint: Some(Constraint::LazyJsonSchema {
                trigger: "<tool_call>".into(),
                schema: "{}".into(),
                suffix: "</tool_call>".into(),
            }),
            logit_bias: vec![(7, -100.0)],
            logprobs: Some(3),
            ..SamplingParams::default()
        };
        for cmd in [
            Command::Init {
                protocol_version: PROTOCOL_VERSION,
                config: config(),
            },
            Command::Generate {
                id: 1,
                trace: "req-1".into(),
                prompt: Prompt::Text("hi".into()),
                params: params.clone(),
            },
            Command::Generate {
                id: u64::MAX,
                trace: String::new(),
                prompt: Prompt::Chat(ChatPrompt {
                    messages: vec![
                        ChatMessage::text("user", "héllo"),
                        ChatMessage {
                            role: "assistant".into(),
                            content: None,
                            reasoning_content: Some("hmm".into()),
                            tool_calls: vec![ToolCall {
                                id: "call_1".into(),
                                name: "f".into(),
                                arguments: "{\"x\":1}".into(),
                            }],
                            ..ChatMessage::default()
                        },
                        ChatMessage {
                            role: "tool".into(),
                            content: Some("2".into()),
                            tool_call_id: Some("call_1".into()),
                            name: Some("f".into()),
                            ..ChatMessage::default()
                        },
                    ],
                    tools_json: Some("[]".into()),
                    template_kwargs_json: Some("{}".into()),
                    reasoning_effort: Some("low".into()),
                    add_generation_prompt: true,
                }),
                params: SamplingParams {
                    constraint: Some(Constraint::JsonSchema("{}".into())),
                    ..params
                },
            },
            Command::Embed {
                id: 2,
                trace: "req-2".into(),
                inputs: vec![
                    EmbedInput::Text("a".into()),
                    EmbedInput::Text(String::new()),
                    EmbedInput::Tokens(vec![1, -1, i32::MAX]),
                    EmbedInput::Tokens(vec![]),
                ],
                truncate: true,
            },
            Command::Rerank {
                id: 9,
                trace: "req-9".into(),
                query: "q".into(),
                documents: vec!["a".into(), String::new()],
            },
            Command::CountTokens {
                id: 3,
                prompt: Prompt::Text(String::new()),
            },
            Command::Tokenize {
                id: 4,
                content: "héllo <|im_end|>".into(),
                add_special: true,
            },
            Command::Detokenize {
                id: 5,
                tokens: vec![1, -1, i32::MAX],
            },
            Command::Generate {
                id: 6,
                trace: String::new(),
                prompt: Prompt::Infill {
                    prefix: "def f(a, b):".into(),
                    suffix: "    return c".into(),
                },
                params: SamplingParams::default(),
            },
            Command::Cancel { id: 4 },
            Command::Ping { id: 5 },
            Command::SetLogLevel {
                filter: "debug,llm_node_worker=trace".into(),
            },
            Command::Shutdown,
        ] {
            round_trip(cmd);
        }
    }

    #[test]
    fn every_event_round_trips() {
        let info = ModelInfo {
            model_name: "m".into(),
            ctx_per_slot: 1,
            embedding_only: true,
            n_ctx_train: 2,
            parallel: 3,
            embedding_size: 4,
            has_chat_template: true,
            chat_template: "{{ x }}".into(),
            vocab_size: 5,
            model_size_bytes: 6,
            n_params: 7,
            offload: Offload {
                backends: vec!["CPU".into(), "CUDA".into()],
                devices: vec!["CUDA0".into()],
                backend: "CUDA".into(),
                layers_offloaded: 31,
                layers_total: 31,
                device_bytes: 8,
                allocated: Allocated {
                    weights: 9,
                    kv: 10,
                    compute: 11,
                    output: 12,
                },
            },
        };
        for ev in [
            Event::Ready(info),
            Event::InitFailed {
                message: "no file".into(),
                permanent: true,
            },
            Event::Started {
                id: 1,
                prompt_tokens: 9,
                reasoning_open: true,
            },
            Event::Piece {
                id: 1,
                text: "日本".into(),
                tokens: 2,
                logprobs: vec![TokenLogprob {
                    bytes: vec![0xe6, 0x97],
                    logprob: -0.5,
                    top: vec![(vec![b'a'], -1.0)],
                }],
            },
            Event::Finished {
                id: 1,
                reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 9,
                    completion_tokens: 2,
                    cached_tokens: 0,
                },
            },
            Event::Failed {
                id: 2,
                kind: FailureKind::PromptTooLong,
                message: "too long".into(),
            },
            Event::Embeddings {
                id: 3,
                vectors: vec![vec![0.5, -0.5], vec![]],
                prompt_tokens: 4,
            },
            Event::TokenEmbeddings {
                id: 3,
                inputs: vec![vec![vec![0.5, -0.5], vec![1.0, 2.0]], vec![]],
                prompt_tokens: 2,
            },
            Event::TokenCount { id: 4, count: 11 },
            Event::Tokens {
                id: 7,
                tokens: vec![1, 2],
                pieces: vec![b"he".to_vec(), vec![0xC3]],
            },
            Event::Detokenized {
                id: 8,
                content: "hé\u{FFFD}".into(),
            },
            Event::Pong {
                id: 5,
                progress: Progress::default(),
            },
            Event::Pong {
                id: 6,
                progress: Progress {
                    turns: u64::MAX,
                    busy_ms: 90_000,
                    busy_slots: 4,
                    kv_cells: 8_192,
                    cache_bytes: 1 << 40,
                    cache_entries: 12,
                    cache_hits: 3,
                    cache_copies: 4,
                    spec_drafted: 100,
                    spec_accepted: 60,
                    parked: 2,
                    started_ahead: 5,
                },
            },
        ] {
            round_trip(ev);
        }
    }

    #[test]
    fn event_messages_are_flat_lists() {
        let events = vec![
            Event::Piece {
                id: 1,
                text: "a".into(),
                tokens: 1,
                logprobs: Vec::new(),
            },
            Event::Pong {
                id: 6,
                progress: Progress {
                    turns: 3,
                    busy_ms: 0,
                    busy_slots: 1,
                    kv_cells: 17,
                    ..Progress::default()
                },
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
        assert_eq!(
            encode_events(&events),
            encode(&events),
            "same bytes as a Vec"
        );
    }

    #[test]
    fn a_forged_length_is_refused_not_allocated() {
        // A list claiming 2^60 events in a few bytes.
        let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
        bytes.extend([0; 8]);
        assert!(decode_events(&bytes).is_err());
        // A string claiming 1 TiB.
        let mut bytes = 1u32.to_le_bytes().to_vec(); // Command::Generate's tag is 1
        bytes.extend(7u64.to_le_bytes());
        bytes.extend((1u64 << 40).to_le_bytes());
        assert!(decode::<Command>(&bytes).is_err());
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode::<Command>(&[0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(decode::<Event>(&[]).is_err());
    }

    #[test]
    fn lanes_ride_in_the_top_bits_of_request_ids() {
        assert_eq!(lane_of(request_id(0, 5)), 0);
        assert_eq!(request_id(0, 5), 5);
        let id = request_id(3, 77);
        assert_eq!((lane_of(id), id & 0xffff_ffff_ffff), (3, 77));
        // The sequence number wraps below the lane bits instead of spilling into them.
        assert_eq!(lane_of(request_id(2, u64::MAX)), 2);
        assert_eq!(lane_of(request_id(u16::MAX, 1)), usize::from(u16::MAX));
    }

    #[test]
    fn terminal_events_are_classified() {
        assert!(!Event::Piece {
            id: 1,
            text: String::new(),
            tokens: 1,
            logprobs: Vec::new(),
        }
        .is_terminal());
        assert!(Event::TokenCount { id: 1, count: 1 }.is_terminal());
        assert_eq!(Event::TokenCount { id: 9, count: 1 }.request_id(), Some(9));
    }
}
