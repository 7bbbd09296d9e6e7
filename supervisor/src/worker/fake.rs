//! A test-only worker that speaks the protocol over in-process byte channels.
//!
//! It stands in for `llm-node-worker` where no model can be loaded: the
//! behaviour is chosen by words in the prompt, as fault flags.
//! - `too long` → `Failed{PromptTooLong}` before `Started`;
//! - `invalid` → `Failed{InvalidRequest}`; `boom` → `Failed{Internal}`;
//! - `crash` → `Started`, one piece, then the worker disappears;
//! - `hang` → `Started`, then nothing until `Cancel`;
//! - anything else → `Started{5}`, pieces `Hello` `,` ` world` (cut by
//!   `max_tokens`, giving `Length`), then `Finished{Stop}`.
//!
//! `Embed` answers 3-dimensional unit vectors (an input `boom` fails it);
//! `Rerank` scores each document with the number of the query's words it
//! contains (a query `boom` fails it as a model that does not rerank);
//! `CountTokens` answers 5; `Tokenize` gives one token per byte (its value)
//! and `Detokenize` the bytes back.

use std::sync::{Arc, Mutex};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use llm_node_protocol::{
    decode, encode_events, Command, Event, FailureKind, FinishReason, Progress, Prompt, RequestId,
    SamplingParams, Usage,
};

use super::client::WorkerClient;

pub const PIECES: [&str; 3] = ["Hello", ",", " world"];
pub const PROMPT_TOKENS: u32 = 5;

/// A running fake worker.
pub struct FakeWorker {
    pub client: WorkerClient,
    /// Ids the worker received `Cancel` for.
    pub cancelled: Arc<Mutex<Vec<RequestId>>>,
    /// The `trace` (request id) of every `Generate` and `Embed` received.
    pub traces: Arc<Mutex<Vec<String>>>,
}

impl FakeWorker {
    pub fn start() -> Self {
        let (cmd_tx, cmd_rx) = ipc::bytes_channel().unwrap();
        let (ev_tx, ev_rx) = ipc::bytes_channel().unwrap();
        let cancelled = Arc::new(Mutex::new(Vec::new()));
        let traces = Arc::new(Mutex::new(Vec::new()));
        let log = (Arc::clone(&cancelled), Arc::clone(&traces));
        std::thread::spawn(move || serve(&cmd_rx, ev_tx, &log.0, &log.1));
        Self {
            client: WorkerClient::new(cmd_tx, ev_rx, "fake"),
            cancelled,
            traces,
        }
    }
}

fn prompt_text(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Infill { prefix, suffix } => format!("{prefix}{suffix}"),
        Prompt::Chat(chat) => chat
            .messages
            .iter()
            .filter_map(|m| m.content.as_deref())
            .collect(),
    }
}

// Over 60 lines on purpose: the fake worker's whole command loop, one match arm
// per protocol command, is easier to check against the protocol read whole.
fn serve(
    commands: &IpcBytesReceiver,
    events: IpcBytesSender,
    cancelled: &Mutex<Vec<RequestId>>,
    traces: &Mutex<Vec<String>>,
) {
    let send = |e: Event| {
        let _ = events.send(&encode_events(&[e]));
    };
    let mut hanging = Vec::new();
    while let Ok(bytes) = commands.recv() {
        match decode::<Command>(&bytes).expect("fake worker decodes") {
            Command::Generate {
                id,
                prompt,
                params,
                trace,
            } => {
                traces.lock().unwrap().push(trace);
                let text = prompt_text(&prompt);
                if text.contains("crash") {
                    send(Event::Started {
                        id,
                        prompt_tokens: PROMPT_TOKENS,
                        reasoning_open: false,
                    });
                    send(piece(id, PIECES[0]));
                    return;
                }
                if text.contains("hang") {
                    send(Event::Started {
                        id,
                        prompt_tokens: PROMPT_TOKENS,
                        reasoning_open: false,
                    });
                    hanging.push(id);
                    continue;
                }
                for event in generation(id, &text, &params) {
                    send(event);
                }
            }
            Command::Embed {
                id,
                inputs,
                truncate,
                ..
            } => send(match inputs.iter().any(|i| is_text(i, "boom")) {
                true => failed(id, FailureKind::InvalidRequest),
                // Longer than any context: embedded only when cut to fit.
                false if !truncate && inputs.iter().any(|i| is_text(i, "too long")) => {
                    failed(id, FailureKind::PromptTooLong)
                }
                false => Event::Embeddings {
                    id,
                    vectors: inputs.iter().map(|_| vec![1.0, 0.0, 0.0]).collect(),
                    prompt_tokens: inputs.len() as u32,
                },
            }),
            Command::Rerank {
                id,
                query,
                documents,
                ..
            } => send(match query == "boom" {
                true => failed(id, FailureKind::InvalidRequest),
                false => Event::Embeddings {
                    id,
                    vectors: documents
                        .iter()
                        .map(|d| vec![word_hits(&query, d)])
                        .collect(),
                    prompt_tokens: 2 * documents.len() as u32,
                },
            }),
            Command::CountTokens { id, .. } => send(Event::TokenCount { id, count: 5 }),
            Command::Tokenize { id, content, .. } => send(fake_tokens(id, &content)),
            Command::Detokenize { id, tokens } => send(Event::Detokenized {
                id,
                content: tokens.iter().map(|&t| char::from(t as u8)).collect(),
            }),
            Command::Cancel { id } => {
                cancelled.lock().unwrap().push(id);
                if let Some(pos) = hanging.iter().position(|h| *h == id) {
                    hanging.remove(pos);
                    send(Event::Finished {
                        id,
                        reason: FinishReason::Cancelled,
                        usage: Usage::default(),
                    });
                }
            }
            Command::Ping { id } => send(Event::Pong {
                id,
                progress: Progress::default(),
            }),
            Command::SetLogLevel { .. } => {}
            Command::Shutdown | Command::Init { .. } => return,
        }
    }
}

fn piece(id: RequestId, text: &str) -> Event {
    Event::Piece {
        id,
        text: text.into(),
        tokens: 1,
        logprobs: Vec::new(),
    }
}

fn failed(id: RequestId, kind: FailureKind) -> Event {
    Event::Failed {
        id,
        kind,
        message: format!("fake {kind:?}"),
    }
}

/// The events of a well-behaved generation.
fn is_text(input: &llm_node_protocol::EmbedInput, text: &str) -> bool {
    matches!(input, llm_node_protocol::EmbedInput::Text(t) if t == text)
}

fn generation(id: RequestId, text: &str, params: &SamplingParams) -> Vec<Event> {
    for (word, kind) in [
        ("too long", FailureKind::PromptTooLong),
        ("invalid", FailureKind::InvalidRequest),
        ("boom", FailureKind::Internal),
    ] {
        if text.contains(word) {
            return vec![failed(id, kind)];
        }
    }
    let limit = params.max_tokens.unwrap_or(u32::MAX) as usize;
    let n = PIECES.len().min(limit);
    let mut events = vec![Event::Started {
        id,
        prompt_tokens: PROMPT_TOKENS,
        reasoning_open: false,
    }];
    events.extend(PIECES[..n].iter().map(|p| piece(id, p)));
    events.push(Event::Finished {
        id,
        reason: match n < PIECES.len() {
            true => FinishReason::Length,
            false => FinishReason::Stop,
        },
        usage: Usage {
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens: n as u32,
            cached_tokens: 0,
        },
    });
    events
}

/// `Tokens` for `content`: one token per byte, its value the byte.
pub fn fake_tokens(id: llm_node_protocol::RequestId, content: &str) -> Event {
    Event::Tokens {
        id,
        tokens: content.bytes().map(i32::from).collect(),
        pieces: content.bytes().map(|b| vec![b]).collect(),
    }
}

/// How many of `query`'s words `doc` contains: the fake reranker's score.
pub fn word_hits(query: &str, doc: &str) -> f32 {
    query
        .split_whitespace()
        .filter(|w| doc.split_whitespace().any(|d| d == *w))
        .count() as f32
}
