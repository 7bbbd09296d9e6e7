//! The request side of one worker connection.
//!
//! [`WorkerClient`] multiplexes many requests over the worker's byte
//! channels: it assigns each request a [`RequestId`] on the calling thread's
//! event lane (see [`super::lanes`]), sends the encoded [`Command`], and the
//! lane readers route every incoming [`Event`] to the request that owns it:
//! lane 0 on a dedicated thread, the HTTP threads' lanes as tasks on those
//! threads. When an event channel breaks (the worker died) or carries garbage,
//! every request still in flight receives [`WorkerError::Gone`] at once, so no
//! caller waits on a dead worker.
//!
//! A [`GenerationStream`] cancels its request in the worker when dropped before
//! the end: that is how a client disconnect frees the slot.
//!
//! # Backpressure
//! Each request's events wait in a buffer of `stream_buffer` events
//! ([`DEFAULT_STREAM_BUFFER`] unless configured) until its consumer reads them.
//! A lane reader never waits for a consumer: when a request's buffer is full,
//! its consumer is too slow (a client not reading its stream), so the request
//! is cancelled in the worker and forgotten here, and the consumer reads
//! [`WorkerError::TooSlow`] after the events already buffered. One more slot
//! is reserved per request for its last reply, so the end of a request (its
//! terminal event, `Gone`, or `TooSlow`) is never lost to a full buffer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender};
pub use llm_node_protocol::EmbedInput;
use llm_node_protocol::{
    decode_events, encode, request_id, Command, Event, FailureKind, FinishReason, Progress, Prompt,
    RequestId, SamplingParams, Usage,
};

/// A worker's answer to an embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedded {
    /// One vector per input (unit length unless the model ranks).
    Pooled(Vec<Vec<f32>>),
    /// For each input, one vector per token: a model whose pooling is `none`.
    PerToken(Vec<Vec<Vec<f32>>>),
}
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::lanes::{current_lane, LaneFd, LaneRead, Lanes};

/// Why a request got no (further) answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    /// The worker process is gone or its channel broke; retrying later may work.
    #[error("worker unavailable: {0}")]
    Gone(String),
    /// The worker refused or failed this request.
    #[error("{kind:?}: {message}")]
    Failed { kind: FailureKind, message: String },
    /// The worker answered with an event that does not fit the request.
    #[error("unexpected event from worker: {0}")]
    Protocol(String),
    /// The consumer left this many events unread, so the request was cancelled
    /// (see the module's Backpressure section).
    #[error("client too slow: {unread} events unread")]
    TooSlow { unread: usize },
}

/// Events buffered per request unless configured (`--stream-buffer`): at
/// about a token an event, far more than any client that reads its stream
/// leaves unread, and a few hundred KiB at most per request.
pub const DEFAULT_STREAM_BUFFER: usize = 4096;

/// What the reader thread delivers to one request.
#[derive(Debug)]
enum Reply {
    Event(Event),
    Gone(String),
    /// The consumer's buffer overflowed; the request was cancelled.
    TooSlow(usize),
}

/// What a request keeps alive while it runs (the lease counting it in flight),
/// shared by its consumer and its [`Route`]: the consumer drops it with the
/// request, the lane reader as soon as it cancels the request for a consumer
/// that fell behind (which may never read again).
type Held = Arc<Mutex<Option<Box<dyn Send + Sync>>>>;

/// Where one request's events go.
struct Route {
    /// Every event but the last; only `try_send` (a lane reader never waits).
    events: mpsc::Sender<Reply>,
    /// The slot reserved for the last reply, so a full buffer cannot lose it.
    last: mpsc::OwnedPermit<Reply>,
    held: Held,
}

impl Route {
    /// A route with `buffer` events of room, and its receiving end.
    fn new(buffer: usize, held: Held) -> (Route, mpsc::Receiver<Reply>) {
        let (events, rx) = mpsc::channel(buffer + 1);
        let last = events
            .clone()
            .try_reserve_owned()
            .unwrap_or_else(|_| unreachable!("a new channel has room"));
        (Route { events, last, held }, rx)
    }

    /// Sends the last reply (the consumer may have gone a moment ago: fine).
    fn finish(self, reply: Reply) {
        self.last.send(reply);
    }
}

/// One step of a generation as seen by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    Started {
        prompt_tokens: u32,
        /// The prompt ended inside a reasoning block.
        reasoning_open: bool,
    },
    Piece {
        text: String,
        tokens: u32,
        /// One entry per token when the request asked for logprobs.
        logprobs: Vec<llm_node_protocol::TokenLogprob>,
    },
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
}

/// A cheap, cloneable handle to one worker connection.
#[derive(Clone)]
pub struct WorkerClient {
    inner: Arc<Inner>,
}

/// Requests waiting for events, and whether the connection is dead.
///
/// Both live under one lock so that registering a request and the reader
/// thread declaring the worker dead cannot interleave: a request is either
/// registered before the drain (and receives `Gone`) or sees `dead` and is
/// refused. Without this, a request registered just after the drain would
/// wait forever.
///
/// A request leaves `senders` exactly once: by its terminal event, by
/// `cancel`, by overflowing its buffer (`too_slow`), or in the drain. Each
/// `Route` holds a reserved slot for that last reply, so sending it never
/// waits and never fails for lack of room.
#[derive(Default)]
struct Pending {
    senders: HashMap<RequestId, Route>,
    /// Liveness pings among `senders`: not requests, so not "in flight".
    pings: HashSet<RequestId>,
    dead: Option<String>,
}

impl Pending {
    fn in_flight(&self) -> usize {
        self.senders.len() - self.pings.len()
    }
}

struct Inner {
    model: String,
    /// Event channels the worker opened; requests on other lanes use lane 0.
    lanes: usize,
    /// The command channel. `IpcBytesSender` is not `Sync`; the lock also keeps
    /// each message whole.
    commands: Mutex<IpcBytesSender>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Events buffered per request before its consumer counts as too slow.
    buffer: usize,
    /// Requests in flight, republished on every change (drains and the
    /// model pool wait on it instead of polling).
    in_flight: watch::Sender<usize>,
    /// The model's output syntax, from its chat template (set once at Ready).
    chat_format: std::sync::OnceLock<llm_node_chat::format::ChatFormat>,
    /// The worker's slots (set once at Ready).
    slots: std::sync::OnceLock<u32>,
    /// Set when the worker sent a message that is not the protocol (the
    /// connection is then given up): the supervisor kills the worker for it.
    broken: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.inner.pending();
        f.debug_struct("WorkerClient")
            .field("model", &self.inner.model)
            .field("in_flight", &pending.senders.len())
            .field("dead", &pending.dead)
            .finish()
    }
}

impl WorkerClient {
    /// Wraps a connected worker's channels, with one event lane read by a thread.
    ///
    /// # Panics
    /// If the OS refuses to start a thread.
    pub fn new(commands: IpcBytesSender, events: IpcBytesReceiver, model: &str) -> Self {
        Self::with_lanes(commands, vec![events], model, None, DEFAULT_STREAM_BUFFER)
    }

    /// Wraps a connected worker's channels and starts a reader for each event
    /// lane: a task on the lane's HTTP thread when `lanes` knows it, a thread
    /// otherwise (always for lane 0). Each request may leave `buffer` events
    /// unread (at least 1) before it is cancelled as too slow.
    ///
    /// # Panics
    /// If the OS refuses to start a thread, or `events` is empty.
    pub fn with_lanes(
        commands: IpcBytesSender,
        events: Vec<IpcBytesReceiver>,
        model: &str,
        lanes: Option<&Lanes>,
        buffer: usize,
    ) -> Self {
        assert!(!events.is_empty(), "a worker has at least lane 0");
        let inner = Arc::new(Inner {
            model: model.to_string(),
            lanes: events.len(),
            commands: Mutex::new(commands),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            in_flight: watch::channel(0).0,
            chat_format: std::sync::OnceLock::new(),
            broken: std::sync::OnceLock::new(),
            slots: std::sync::OnceLock::new(),
        });
        for (lane, rx) in events.into_iter().enumerate() {
            match lanes.and_then(|l| l.arbiter(lane)) {
                Some(arbiter) => match LaneFd::new(rx) {
                    Ok(fd) => {
                        if !arbiter.spawn(read_lane(Arc::clone(&inner), lane, fd)) {
                            // Its HTTP thread is gone, and with it every request on it.
                            tracing::debug!(model, lane, "lane's thread has stopped");
                        }
                    }
                    Err(rx) => {
                        tracing::warn!(model, lane, "cannot poll the event channel");
                        spawn_reader_thread(Arc::clone(&inner), lane, rx);
                    }
                },
                None => spawn_reader_thread(Arc::clone(&inner), lane, rx),
            }
        }
        Self { inner }
    }

    /// Records the model's output syntax (detected from its chat template).
    pub fn set_chat_format(&self, format: llm_node_chat::format::ChatFormat) {
        let _ = self.inner.chat_format.set(format);
    }

    /// The model's output syntax; plain text until [`Self::set_chat_format`].
    pub fn chat_format(&self) -> llm_node_chat::format::ChatFormat {
        self.inner
            .chat_format
            .get()
            .copied()
            .unwrap_or(llm_node_chat::format::ChatFormat::GENERIC)
    }

    /// Records how many requests the worker decodes together.
    pub fn set_slots(&self, slots: u32) {
        let _ = self.inner.slots.set(slots);
    }

    /// The worker's slots (`None` before Ready).
    pub fn slots(&self) -> Option<u32> {
        self.inner.slots.get().copied()
    }

    /// Whether the connection is still usable.
    pub fn is_alive(&self) -> bool {
        self.inner.pending().dead.is_none()
    }

    /// Why the connection was given up when the worker broke the protocol
    /// (an undecodable message), as opposed to closing its end.
    pub fn protocol_error(&self) -> Option<String> {
        self.inner.broken.get().cloned()
    }

    /// Requests currently waiting on the worker.
    pub fn in_flight(&self) -> usize {
        self.inner.pending().in_flight()
    }

    /// Follows [`WorkerClient::in_flight`] as it changes.
    pub fn watch_in_flight(&self) -> watch::Receiver<usize> {
        self.inner.in_flight.subscribe()
    }

    /// Liveness probe: resolves with the engine's progress when the worker's
    /// command reader answers `Ping` (at once, even during a long step).
    ///
    /// # Errors
    /// [`WorkerError::Gone`] when the worker is unreachable.
    pub async fn ping(&self) -> Result<Progress, WorkerError> {
        let mut call = self.call_with(|id| Command::Ping { id }, true)?;
        match call.next().await? {
            Event::Pong { progress, .. } => Ok(progress),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a generation.
    ///
    /// # Errors
    /// [`WorkerError::Gone`] when the worker is unreachable;
    /// [`WorkerError::Failed`] (`InvalidRequest`) for a model that serves
    /// embeddings only (no slots). Failures of the generation itself arrive
    /// on the stream.
    pub fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<GenerationStream, WorkerError> {
        // No slots: an encoder, loaded for embeddings only.
        if self.slots() == Some(0) {
            return Err(WorkerError::Failed {
                kind: FailureKind::InvalidRequest,
                message: format!("model {} serves embeddings only", self.inner.model),
            });
        }
        let call = self.call(|id| Command::Generate {
            id,
            trace: crate::request_id::current(),
            prompt,
            params,
        })?;
        Ok(GenerationStream { call, meter: None })
    }

    /// Embeds each input (text or token ids); returns the vectors and the
    /// prompt tokens used.
    ///
    /// # Errors
    /// [`WorkerError::Gone`] when the worker is unreachable, [`WorkerError::Failed`]
    /// when it refuses (embeddings disabled, input too long, a token id
    /// outside the vocabulary).
    pub async fn embed(&self, inputs: Vec<EmbedInput>) -> Result<(Embedded, u32), WorkerError> {
        self.embed_with(inputs, false).await
    }

    /// [`WorkerClient::embed`]; with `truncate`, inputs longer than the
    /// embedding context are cut to fit instead of refused (Ollama's `truncate`).
    ///
    /// # Errors
    /// As [`WorkerClient::embed`].
    pub async fn embed_with(
        &self,
        inputs: Vec<EmbedInput>,
        truncate: bool,
    ) -> Result<(Embedded, u32), WorkerError> {
        let mut call = self.call(|id| Command::Embed {
            id,
            trace: crate::request_id::current(),
            inputs,
            truncate,
        })?;
        let (embedded, prompt_tokens) = match call.next().await? {
            Event::Embeddings {
                vectors,
                prompt_tokens,
                ..
            } => (Embedded::Pooled(vectors), prompt_tokens),
            Event::TokenEmbeddings {
                inputs,
                prompt_tokens,
                ..
            } => (Embedded::PerToken(inputs), prompt_tokens),
            other => return Err(unexpected(&other)),
        };
        if let Some(slot) = crate::request_id::usage() {
            let mut usage = slot.lock().unwrap_or_else(|e| e.into_inner());
            usage.model.get_or_insert_with(|| self.inner.model.clone());
            usage.prompt_tokens += u64::from(prompt_tokens);
        }
        Ok((embedded, prompt_tokens))
    }

    /// Scores each document against `query` with a reranker; returns each
    /// document's raw scores, in order, and the tokens of all pairs.
    ///
    /// # Errors
    /// As [`WorkerClient::embed`]; [`WorkerError::Failed`] (`InvalidRequest`)
    /// from a model that is not a reranker.
    pub async fn rerank(
        &self,
        query: String,
        documents: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, u32), WorkerError> {
        let mut call = self.call(|id| Command::Rerank {
            id,
            trace: crate::request_id::current(),
            query,
            documents,
        })?;
        match call.next().await? {
            Event::Embeddings {
                vectors,
                prompt_tokens,
                ..
            } => {
                if let Some(slot) = crate::request_id::usage() {
                    let mut usage = slot.lock().unwrap_or_else(|e| e.into_inner());
                    usage.model.get_or_insert_with(|| self.inner.model.clone());
                    usage.prompt_tokens += u64::from(prompt_tokens);
                }
                Ok((vectors, prompt_tokens))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Counts the tokens of `prompt` as a generation would see it.
    ///
    /// # Errors
    /// As for [`WorkerClient::embed`].
    pub async fn count_tokens(&self, prompt: Prompt) -> Result<u32, WorkerError> {
        let mut call = self.call(|id| Command::CountTokens { id, prompt })?;
        match call.next().await? {
            Event::TokenCount { count, .. } => Ok(count),
            other => Err(unexpected(&other)),
        }
    }

    /// The tokens of `content` and each one's piece (bytes).
    ///
    /// # Errors
    /// As for [`WorkerClient::embed`].
    pub async fn tokenize(
        &self,
        content: String,
        add_special: bool,
    ) -> Result<(Vec<i32>, Vec<Vec<u8>>), WorkerError> {
        let mut call = self.call(|id| Command::Tokenize {
            id,
            content,
            add_special,
        })?;
        match call.next().await? {
            Event::Tokens { tokens, pieces, .. } => Ok((tokens, pieces)),
            other => Err(unexpected(&other)),
        }
    }

    /// The text of `tokens`.
    ///
    /// # Errors
    /// As for [`WorkerClient::embed`]; a token outside the vocabulary fails
    /// with `InvalidRequest`.
    pub async fn detokenize(&self, tokens: Vec<i32>) -> Result<String, WorkerError> {
        let mut call = self.call(|id| Command::Detokenize { id, tokens })?;
        match call.next().await? {
            Event::Detokenized { content, .. } => Ok(content),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the worker to stop request `id` and forgets it here.
    pub fn cancel(&self, id: RequestId) {
        {
            let mut pending = self.inner.pending();
            pending.senders.remove(&id);
            pending.pings.remove(&id);
            self.inner.publish(&pending);
        }
        // A failed send means the worker is gone, which cancels everything anyway.
        let _ = self.inner.send(&Command::Cancel { id });
    }

    /// Replaces the worker's log filter (`RUST_LOG` syntax); not answered.
    ///
    /// # Errors
    /// [`WorkerError::Gone`] when the command channel is broken.
    pub fn set_log_level(&self, filter: &str) -> Result<(), WorkerError> {
        self.inner.send(&Command::SetLogLevel {
            filter: filter.to_string(),
        })
    }

    /// Tells the worker to free everything and exit.
    ///
    /// # Errors
    /// [`WorkerError::Gone`] when the command channel is broken.
    pub fn shutdown(&self) -> Result<(), WorkerError> {
        self.inner.send(&Command::Shutdown)
    }

    /// Registers a new request, then sends the command built for its id.
    fn call(&self, command: impl FnOnce(RequestId) -> Command) -> Result<Call, WorkerError> {
        self.call_with(command, false)
    }

    fn call_with(
        &self,
        command: impl FnOnce(RequestId) -> Command,
        ping: bool,
    ) -> Result<Call, WorkerError> {
        let lane = match current_lane() {
            lane if usize::from(lane) < self.inner.lanes => lane,
            _ => 0,
        };
        let seq = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = request_id(lane, seq);
        let held = Held::default();
        let (route, rx) = Route::new(self.inner.buffer, Arc::clone(&held));
        {
            let mut pending = self.inner.pending();
            if let Some(why) = &pending.dead {
                return Err(WorkerError::Gone(why.clone()));
            }
            pending.senders.insert(id, route);
            if ping {
                pending.pings.insert(id);
            }
            self.inner.publish(&pending);
        }
        // From here on the guard unregisters (and cancels) if we bail out.
        let call = Call {
            client: self.clone(),
            id,
            rx,
            done: false,
            held,
        };
        self.inner.send(&command(id))?;
        Ok(call)
    }
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, pending: &Pending) {
        self.in_flight.send_if_modified(|n| {
            let changed = *n != pending.in_flight();
            *n = pending.in_flight();
            changed
        });
    }

    fn send(&self, command: &Command) -> Result<(), WorkerError> {
        let bytes = encode(command);
        let sender = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        sender
            .send(&bytes)
            .map_err(|e| WorkerError::Gone(format!("command channel: {e}")))
    }

    /// Delivers an event to its request; unknown ids (cancelled requests) are
    /// dropped. Never waits: a request whose buffer is full is cancelled.
    fn route(&self, event: Event) {
        let Some(id) = event.request_id() else {
            tracing::warn!(model = %self.model, "unexpected handshake event after Ready");
            return;
        };
        let mut pending = self.pending();
        if event.is_terminal() {
            let route = self.forget(&mut pending, id);
            drop(pending);
            match route {
                Some(route) => route.finish(Reply::Event(event)),
                None => tracing::debug!(model = %self.model, id, "end of a finished request"),
            }
            return;
        }
        let Some(route) = pending.senders.get(&id) else {
            tracing::debug!(model = %self.model, id, "event for a finished request");
            return;
        };
        match route.events.try_send(Reply::Event(event)) {
            // Closed: the consumer is gone and its guard is cancelling the request.
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                let route = self.forget(&mut pending, id);
                drop(pending);
                if let Some(route) = route {
                    self.too_slow(id, route);
                }
            }
        }
    }

    /// Unregisters request `id` and returns its route.
    fn forget(&self, pending: &mut Pending, id: RequestId) -> Option<Route> {
        pending.pings.remove(&id);
        let route = pending.senders.remove(&id);
        self.publish(pending);
        route
    }

    /// Ends a request whose consumer left its whole buffer unread: its lease
    /// is released now (the consumer may never read again), the consumer
    /// reads `TooSlow` after its buffered events, and the worker stops it.
    fn too_slow(&self, id: RequestId, route: Route) {
        tracing::warn!(model = %self.model, id, unread = self.buffer,
            "client too slow: request cancelled");
        let held = route.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(held);
        route.finish(Reply::TooSlow(self.buffer));
        // A failed send means the worker is gone, which ends the request anyway.
        let _ = self.send(&Command::Cancel { id });
    }

    /// Marks the connection dead and fails every request in flight.
    fn die(&self, why: String) {
        let senders = {
            let mut pending = self.pending();
            // Every lane reader reports the same death; the first reason stays.
            pending.dead.get_or_insert_with(|| why.clone());
            pending.pings.clear();
            let senders = std::mem::take(&mut pending.senders);
            self.publish(&pending);
            senders
        };
        for route in senders.into_values() {
            route.finish(Reply::Gone(why.clone()));
        }
    }

    /// Routes the events of one message; an undecodable one is the reason to give up.
    fn deliver(&self, bytes: &[u8]) -> Result<(), String> {
        match decode_events(bytes) {
            Ok(events) => events.into_iter().for_each(|e| self.route(e)),
            Err(e) => {
                let why = format!("undecodable event: {e}");
                let _ = self.broken.set(why.clone());
                return Err(why);
            }
        }
        Ok(())
    }

    fn stop_reading(&self, why: String) {
        tracing::debug!(model = %self.model, "event reader stopping: {why}");
        self.die(why);
    }
}

/// Reads `lane` on a thread of its own (lane 0, or a lane whose HTTP thread
/// cannot poll it).
fn spawn_reader_thread(inner: Arc<Inner>, lane: usize, rx: IpcBytesReceiver) {
    std::thread::Builder::new()
        .name(format!("events{lane}-{}", inner.model))
        .spawn(move || read_events(&inner, &rx))
        .expect("spawn event reader thread");
}

/// A reader thread: routes events until the channel breaks.
fn read_events(inner: &Inner, events: &IpcBytesReceiver) {
    let why = loop {
        let bytes = match events.recv() {
            Ok(bytes) => bytes,
            Err(e) => break format!("worker disconnected ({e})"),
        };
        if let Err(why) = inner.deliver(&bytes) {
            break why;
        }
    };
    inner.stop_reading(why);
}

/// A lane reader on an HTTP thread: waits for the channel to become readable
/// in the thread's event loop, then routes every message waiting.
async fn read_lane(inner: Arc<Inner>, lane: usize, fd: LaneFd) {
    use tokio::io::{unix::AsyncFd, Interest};

    // SAFETY: the descriptor belongs to `fd`'s receiver, which the `AsyncFd`
    // owns: it stays open and the same until the `AsyncFd` is dropped.
    let mut channel = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(channel) => channel,
        Err(e) => {
            let (fd, cause) = e.into_parts();
            tracing::warn!(model = %inner.model, lane, "cannot poll the event channel ({cause})");
            return spawn_reader_thread(inner, lane, fd.into_receiver());
        }
    };
    loop {
        // `_mut`: the receiver is `Send` but not `Sync`.
        let mut ready = match channel.readable_mut().await {
            Ok(ready) => ready,
            Err(e) => return inner.stop_reading(format!("event channel: {e}")),
        };
        loop {
            match ready.get_inner().try_recv() {
                LaneRead::Message(bytes) => {
                    if let Err(why) = inner.deliver(&bytes) {
                        return inner.stop_reading(why);
                    }
                    // The consumers of these events run on this thread too:
                    // let them read before the next message, or a burst
                    // longer than a request's buffer (a worker flooding one
                    // request, found by the abuse suite) would cancel a
                    // client as too slow that was never given the chance.
                    tokio::task::yield_now().await;
                }
                LaneRead::Empty => {
                    ready.clear_ready();
                    break;
                }
                LaneRead::Closed(why) => return inner.stop_reading(why),
            }
        }
    }
}

fn unexpected(event: &Event) -> WorkerError {
    WorkerError::Protocol(format!("{event:?}").chars().take(200).collect())
}

/// One request in flight: its reply channel and the guard that cancels it.
struct Call {
    client: WorkerClient,
    id: RequestId,
    rx: mpsc::Receiver<Reply>,
    /// Set once a terminal event (or `Gone`, or `TooSlow`) was received.
    done: bool,
    /// Whatever the caller keeps alive with the request (see [`Held`]).
    held: Held,
}

impl Call {
    /// The next event; `Failed` and `Gone` become errors. Must not be called after
    /// a terminal event.
    async fn next(&mut self) -> Result<Event, WorkerError> {
        let reply = self.rx.recv().await;
        let event = match reply {
            Some(Reply::Event(event)) => event,
            Some(Reply::Gone(why)) => {
                self.done = true;
                return Err(WorkerError::Gone(why));
            }
            Some(Reply::TooSlow(unread)) => {
                self.done = true;
                return Err(WorkerError::TooSlow { unread });
            }
            // Our sender was removed without a reply: only `cancel(id)` does that.
            None => {
                self.done = true;
                return Err(WorkerError::Gone("request cancelled".into()));
            }
        };
        self.done = event.is_terminal();
        match event {
            Event::Failed { kind, message, .. } => Err(WorkerError::Failed { kind, message }),
            event => Ok(event),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.client.cancel(self.id);
        }
    }
}

/// The events of one generation. Dropping it before [`GenerationEvent::Finished`]
/// (or an error) cancels the generation in the worker.
pub struct GenerationStream {
    call: Call,
    meter: Option<Meter>,
}

/// Records one generation in the metrics: queue wait (until a worker slot
/// takes it: `Started`), time to first text and between pieces, tokens,
/// duration and outcome (`ok`, `error`, or `cancelled` when
/// dropped early). Times count from the request's arrival, so admission,
/// queueing and a cold load are part of TTFT and duration.
struct Meter {
    metrics: crate::metrics::Metrics,
    model: String,
    endpoint: &'static str,
    started: std::time::Instant,
    /// When the previous piece arrived (None before the first).
    last_piece: Option<std::time::Instant>,
    /// This model's inter-token histogram, looked up once: it is observed on
    /// every piece.
    inter_token: prometheus::Histogram,
    outcome: Option<&'static str>,
    /// The HTTP request's record, for its access log line.
    usage: Option<crate::request_id::UsageSlot>,
    /// Exported spans, when spans are exported ([`crate::otel`]).
    spans: Option<Spans>,
}

/// The spans of one generation under its request's span: `queue_wait` until
/// a worker slot takes it, then `generation` until it ends.
struct Spans {
    parent: tracing::Span,
    queue: Option<tracing::Span>,
    generation: Option<tracing::Span>,
}

impl Spans {
    fn new(model: &str) -> Spans {
        let parent = tracing::Span::current();
        let queue = tracing::info_span!(parent: &parent, "queue_wait", model);
        Spans {
            parent,
            queue: Some(queue),
            generation: None,
        }
    }

    /// The wait is over: the generation begins.
    fn started(&mut self, model: &str, prompt_tokens: u32) {
        self.queue = None;
        self.generation = Some(tracing::info_span!(parent: &self.parent, "generation",
            model, prompt_tokens = i64::from(prompt_tokens),
            completion_tokens = tracing::field::Empty,
            outcome = tracing::field::Empty));
    }
}

impl Meter {
    fn observe(&mut self, event: &Result<GenerationEvent, WorkerError>) {
        match event {
            // The worker's slot took the request: the wait is over.
            Ok(GenerationEvent::Started { prompt_tokens, .. }) => {
                self.metrics
                    .queue_wait
                    .with_label_values(&[&self.model])
                    .observe(self.started.elapsed().as_secs_f64());
                if let Some(spans) = &mut self.spans {
                    spans.started(&self.model, *prompt_tokens);
                }
            }
            Ok(GenerationEvent::Piece { tokens, .. }) => {
                let now = std::time::Instant::now();
                match self.last_piece.replace(now) {
                    None => {
                        let ttft = now.duration_since(self.started);
                        self.metrics
                            .time_to_first_token
                            .with_label_values(&[&self.model])
                            .observe(ttft.as_secs_f64());
                        self.record(|u| u.ttft = Some(ttft));
                    }
                    Some(before) => self
                        .inter_token
                        .observe(per_token(now.duration_since(before), *tokens)),
                }
            }
            Ok(GenerationEvent::Finished { usage, .. }) => {
                let m = &self.metrics;
                m.tokens_generated
                    .with_label_values(&[&self.model])
                    .inc_by(u64::from(usage.completion_tokens));
                m.prompt_tokens
                    .with_label_values(&[&self.model])
                    .inc_by(u64::from(usage.prompt_tokens));
                self.outcome = Some("ok");
                let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
                if let Some(span) = self.spans.as_ref().and_then(|s| s.generation.as_ref()) {
                    // i64: tracing-opentelemetry exports unsigned values as strings.
                    span.record("completion_tokens", i64::from(completion));
                }
                self.record(|u| {
                    // `n` choices are generations of their own: the prompt counts once.
                    u.prompt_tokens = u.prompt_tokens.max(u64::from(prompt));
                    u.completion_tokens += u64::from(completion);
                });
            }
            Err(_) => self.outcome = Some("error"),
        }
    }
}

impl Meter {
    /// Updates the HTTP request's usage record, if there is one.
    fn record(&self, f: impl FnOnce(&mut crate::request_id::Usage)) {
        if let Some(slot) = &self.usage {
            let mut usage = slot.lock().unwrap_or_else(|e| e.into_inner());
            usage.model.get_or_insert_with(|| self.model.clone());
            f(&mut usage);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        if let Some(span) = self.spans.as_ref().and_then(|s| s.generation.as_ref()) {
            span.record("outcome", outcome);
        }
        self.metrics
            .requests
            .with_label_values(&[&self.model, self.endpoint, outcome])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[&self.model, self.endpoint])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Seconds per token of a gap that delivered `tokens` tokens (a piece may
/// carry several: a multi-token UTF-8 character, a batch of stop-held text).
fn per_token(gap: std::time::Duration, tokens: u32) -> f64 {
    gap.as_secs_f64() / f64::from(tokens.max(1))
}

impl GenerationStream {
    /// Records this generation in `metrics` under `model` and `endpoint`,
    /// its times counted from `arrived` (when the HTTP request arrived).
    pub fn meter(
        &mut self,
        metrics: &crate::metrics::Metrics,
        model: &str,
        endpoint: &'static str,
        arrived: std::time::Instant,
    ) {
        self.meter = Some(Meter {
            metrics: metrics.clone(),
            model: model.to_string(),
            endpoint,
            started: arrived,
            last_piece: None,
            inter_token: metrics.inter_token_latency.with_label_values(&[model]),
            outcome: None,
            usage: crate::request_id::usage(),
            spans: crate::otel::enabled().then(|| Spans::new(model)),
        });
    }

    /// Keeps `guard` (the model lease that counts the request in flight)
    /// alive until this stream is dropped, or until the request is cancelled
    /// because this stream was not read fast enough.
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        *self.call.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(guard));
    }

    /// The request id in the worker.
    pub fn id(&self) -> RequestId {
        self.call.id
    }

    /// The next event, or `None` after the last one (`Finished` or an error).
    pub async fn next(&mut self) -> Option<Result<GenerationEvent, WorkerError>> {
        if self.call.done {
            return None;
        }
        let event = self.next_event().await;
        if let Some(meter) = &mut self.meter {
            meter.observe(&event);
        }
        Some(event)
    }

    async fn next_event(&mut self) -> Result<GenerationEvent, WorkerError> {
        match self.call.next().await {
            Ok(Event::Started {
                prompt_tokens,
                reasoning_open,
                ..
            }) => Ok(GenerationEvent::Started {
                prompt_tokens,
                reasoning_open,
            }),
            Ok(Event::Piece {
                text,
                tokens,
                logprobs,
                ..
            }) => Ok(GenerationEvent::Piece {
                text,
                tokens,
                logprobs,
            }),
            Ok(Event::Finished { reason, usage, .. }) => {
                Ok(GenerationEvent::Finished { reason, usage })
            }
            Ok(other) => {
                // Not a generation event: stop the request rather than guess.
                if !self.call.done {
                    self.call.client.cancel(self.call.id);
                    self.call.done = true;
                }
                Err(unexpected(&other))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ipc_channel::ipc;
    use llm_node_protocol::{decode, encode_events, ChatMessage, ChatPrompt};

    use super::*;

    /// The worker end of an in-process connection.
    struct WorkerSide {
        commands: IpcBytesReceiver,
        events: IpcBytesSender,
    }

    impl WorkerSide {
        fn recv(&self) -> Command {
            decode(&self.commands.recv().expect("command")).expect("decodes")
        }
        /// The next command, if one comes within `limit`.
        fn recv_within(&self, limit: Duration) -> Option<Command> {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if let Ok(bytes) = self.commands.try_recv() {
                    return Some(decode(&bytes).expect("decodes"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        }
        fn send(&self, event: Event) {
            self.events
                .send(&encode_events(&[event]))
                .expect("event sent");
        }
    }

    fn connect() -> (WorkerClient, WorkerSide) {
        let (cmd_tx, cmd_rx) = ipc::bytes_channel().unwrap();
        let (ev_tx, ev_rx) = ipc::bytes_channel().unwrap();
        let client = WorkerClient::new(cmd_tx, ev_rx, "test");
        let side = WorkerSide {
            commands: cmd_rx,
            events: ev_tx,
        };
        (client, side)
    }

    /// A connection whose requests may leave `buffer` events unread.
    fn connect_with_buffer(buffer: usize) -> (WorkerClient, WorkerSide) {
        let (cmd_tx, cmd_rx) = ipc::bytes_channel().unwrap();
        let (ev_tx, ev_rx) = ipc::bytes_channel().unwrap();
        let client = WorkerClient::with_lanes(cmd_tx, vec![ev_rx], "test", None, buffer);
        let side = WorkerSide {
            commands: cmd_rx,
            events: ev_tx,
        };
        (client, side)
    }

    fn piece(id: RequestId, text: &str) -> Event {
        Event::Piece {
            id,
            text: text.into(),
            tokens: 1,
            logprobs: Vec::new(),
        }
    }

    /// Sets its flag when dropped (stands in for a lease).
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_consumer_that_stops_reading_is_cancelled_after_its_buffer() {
        let (client, worker) = connect_with_buffer(4);
        let mut slow = client
            .generate(text("slow"), SamplingParams::default())
            .unwrap();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        slow.hold(DropFlag(Arc::clone(&released)));
        let mut other = client
            .generate(text("other"), SamplingParams::default())
            .unwrap();
        let (slow_id, other_id) = (generate_id(worker.recv()), generate_id(worker.recv()));
        // The worker floods the slow request, nobody reads it.
        for i in 0..10 {
            worker.send(piece(slow_id, &format!("t{i}")));
        }
        // The lane reader did not wait: the other request's events still arrive.
        worker.send(piece(other_id, "fine"));
        worker.send(Event::Finished {
            id: other_id,
            reason: FinishReason::Stop,
            usage: Usage::default(),
        });
        assert_eq!(
            worker.recv_within(Duration::from_secs(5)),
            Some(Command::Cancel { id: slow_id }),
            "the request nobody reads is cancelled in the worker"
        );
        assert!(
            released.load(Ordering::SeqCst),
            "the lease is released at once"
        );
        assert_eq!(
            other.next().await,
            Some(Ok(GenerationEvent::Piece {
                text: "fine".into(),
                tokens: 1,
                logprobs: Vec::new()
            }))
        );
        assert!(matches!(
            other.next().await,
            Some(Ok(GenerationEvent::Finished { .. }))
        ));
        assert_eq!(client.in_flight(), 0);
        // The slow consumer reads what was buffered, then the reason.
        for i in 0..4 {
            let Some(Ok(GenerationEvent::Piece { text, .. })) = slow.next().await else {
                panic!("buffered piece {i}");
            };
            assert_eq!(text, format!("t{i}"));
        }
        assert_eq!(
            slow.next().await,
            Some(Err(WorkerError::TooSlow { unread: 4 }))
        );
        assert_eq!(slow.next().await, None);
        // The worker's late events for it are dropped; the connection lives on.
        worker.send(piece(slow_id, "late"));
        worker.send(Event::Finished {
            id: slow_id,
            reason: FinishReason::Cancelled,
            usage: Usage::default(),
        });
        let pong = std::thread::spawn(move || {
            let Command::Ping { id } = worker.recv() else {
                panic!("expected Ping")
            };
            worker.send(Event::Pong {
                id,
                progress: llm_node_protocol::Progress::default(),
            });
            worker
        });
        client.ping().await.unwrap();
        assert!(client.is_alive());
        let _worker = pong.join().unwrap();
    }

    fn text(s: &str) -> Prompt {
        Prompt::Text(s.into())
    }

    fn generate_id(cmd: Command) -> RequestId {
        match cmd {
            Command::Generate { id, .. } => id,
            other => panic!("expected Generate, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_are_routed_to_their_own_request() {
        let (client, worker) = connect();
        let mut a = client
            .generate(text("a"), SamplingParams::default())
            .unwrap();
        let mut b = client
            .generate(
                Prompt::Chat(ChatPrompt {
                    messages: vec![ChatMessage::text("user", "b")],
                    add_generation_prompt: true,
                    ..ChatPrompt::default()
                }),
                SamplingParams::default(),
            )
            .unwrap();
        let (ida, idb) = (generate_id(worker.recv()), generate_id(worker.recv()));
        assert_ne!(ida, idb);
        worker.send(Event::Piece {
            id: idb,
            text: "to b".into(),
            tokens: 1,
            logprobs: Vec::new(),
        });
        worker.send(Event::Piece {
            id: ida,
            text: "to a".into(),
            tokens: 1,
            logprobs: Vec::new(),
        });
        let usage = Usage::default();
        for id in [ida, idb] {
            worker.send(Event::Finished {
                id,
                reason: FinishReason::Stop,
                usage,
            });
        }
        let piece = |s: &str| {
            Some(Ok(GenerationEvent::Piece {
                text: s.into(),
                tokens: 1,
                logprobs: Vec::new(),
            }))
        };
        assert_eq!(a.next().await, piece("to a"));
        assert_eq!(b.next().await, piece("to b"));
        let finished = Some(Ok(GenerationEvent::Finished {
            reason: FinishReason::Stop,
            usage,
        }));
        assert_eq!(a.next().await, finished);
        assert_eq!(a.next().await, None);
        assert_eq!(b.next().await, finished);
        assert_eq!(client.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_stream_cancels_it_in_the_worker() {
        let (client, worker) = connect();
        let stream = client
            .generate(text("x"), SamplingParams::default())
            .unwrap();
        let id = generate_id(worker.recv());
        drop(stream);
        assert_eq!(worker.recv(), Command::Cancel { id });
        assert_eq!(client.in_flight(), 0);
        // The worker's late answer to the cancel is ignored.
        worker.send(Event::Finished {
            id,
            reason: FinishReason::Cancelled,
            usage: Usage::default(),
        });
        assert!(client.is_alive());
    }

    #[tokio::test]
    async fn dropping_a_finished_stream_sends_nothing() {
        let (client, worker) = connect();
        let mut stream = client
            .generate(text("x"), SamplingParams::default())
            .unwrap();
        let id = generate_id(worker.recv());
        worker.send(Event::Failed {
            id,
            kind: FailureKind::PromptTooLong,
            message: "too long".into(),
        });
        assert!(matches!(
            stream.next().await,
            Some(Err(WorkerError::Failed {
                kind: FailureKind::PromptTooLong,
                ..
            }))
        ));
        drop(stream);
        client.shutdown().unwrap();
        // The next command is the shutdown, not a cancel.
        assert_eq!(worker.recv(), Command::Shutdown);
    }

    #[tokio::test]
    async fn crashed_worker_fails_inflight_requests_within_100ms() {
        let (client, worker) = connect();
        let mut a = client
            .generate(text("a"), SamplingParams::default())
            .unwrap();
        let mut b = client
            .generate(text("b"), SamplingParams::default())
            .unwrap();
        let id = generate_id(worker.recv());
        let _ = worker.recv();
        worker.send(Event::Started {
            id,
            prompt_tokens: 3,
            reasoning_open: false,
        });
        let t0 = Instant::now();
        drop(worker);
        assert_eq!(
            a.next().await,
            Some(Ok(GenerationEvent::Started {
                prompt_tokens: 3,
                reasoning_open: false
            }))
        );
        assert!(matches!(a.next().await, Some(Err(WorkerError::Gone(_)))));
        assert_eq!(a.next().await, None);
        assert!(matches!(b.next().await, Some(Err(WorkerError::Gone(_)))));
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert!(!client.is_alive());
        assert!(matches!(
            client.generate(text("y"), SamplingParams::default()),
            Err(WorkerError::Gone(_))
        ));
        assert!(matches!(
            client.embed(vec![EmbedInput::Text("e".into())]).await,
            Err(WorkerError::Gone(_))
        ));
    }

    #[tokio::test]
    async fn garbage_on_the_event_channel_kills_the_connection() {
        let (client, worker) = connect();
        let mut stream = client
            .generate(text("x"), SamplingParams::default())
            .unwrap();
        let _ = worker.recv();
        worker.events.send(&[0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(
            stream.next().await,
            Some(Err(WorkerError::Gone(_)))
        ));
        assert!(!client.is_alive());
    }

    #[tokio::test]
    async fn unary_requests_get_their_answers() {
        let (client, worker) = connect();
        let worker = std::thread::spawn(move || {
            for _ in 0..2 {
                match worker.recv() {
                    Command::Embed { id, inputs, .. } => worker.send(Event::Embeddings {
                        id,
                        vectors: inputs.iter().map(|_| vec![1.0, 0.0]).collect(),
                        prompt_tokens: 7,
                    }),
                    Command::CountTokens { id, .. } => {
                        worker.send(Event::TokenCount { id, count: 5 })
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            worker
        });
        let inputs = vec![EmbedInput::Text("a".into()), EmbedInput::Tokens(vec![1])];
        let (vectors, tokens) = client.embed(inputs).await.unwrap();
        assert_eq!(
            (vectors, tokens),
            (Embedded::Pooled(vec![vec![1.0, 0.0]; 2]), 7)
        );
        assert_eq!(client.count_tokens(text("x")).await.unwrap(), 5);
        let _worker = worker.join().unwrap();
    }
}
