//! A stand-in for `llm-node-worker` that speaks the same protocol without
//! llama.cpp, with fault flags, so supervisor behaviour (crashes, hangs, slow
//! or failed starts) is tested fast and on purpose.
//!
//! The flags are the content of the "model file" the supervisor passes in
//! `WorkerConfig::model_path`: a test writes `crash_after=5&token_ms=20`
//! into `m.gguf` and serves it with `--worker-bin` pointing here.
//!
//! | flag | effect |
//! |---|---|
//! | `load_ms=N` | sleep N ms before `Ready` (slow load) |
//! | `never_ready` | never answer `Init` |
//! | `fail_init` | answer `InitFailed` and exit 1 |
//! | `bad_file` | answer `InitFailed { permanent: true }` (a file that can never load) and exit 1 |
//! | `exit_at_start` | exit 3 before connecting, after printing to stderr |
//! | `token_ms=N` | N ms between tokens (default 5) |
//! | `crash_after=N` | `abort()` after N tokens in total |
//! | `hang_after=N` | stop answering anything, pings included, after N tokens in total |
//! | `stuck_after=N` | after N tokens in total the engine makes no more progress, while the reader keeps answering pings with a growing `busy_ms` |
//! | `garbage_after=N` | after N tokens, send an undecodable message and live on silently |
//! | `exit_at=STAGE` | exit 4 at STAGE (see below), after printing to stderr |
//! | `hang_at=STAGE` | stop answering anything at STAGE (pings included) |
//! | `garbage_at=STAGE` | send an undecodable message at STAGE, then live on silently |
//! | `flood_at=STAGE` | send `flood_n` events as fast as it can at STAGE, then go on normally: for unknown request ids, except at `stream`, where they are pieces of the running request |
//! | `flood_n=N` | events in a flood (default 100000, sent 64 to a message) |
//! | `once` | a fault fires in one life only: the worker blanks its model file (and removes the armed file) first |
//!
//! The stages of a worker's life, in order: `connect` (before connecting to
//! the supervisor's one-shot server), `bootstrap` (connected, before sending
//! `Bootstrap`; garbage here is a message that is not a `Bootstrap`), `init`
//! (`Init` received, before `Ready`), `ready` (right after `Ready`),
//! `request` (a `Generate` received, before its first event; garbage goes on
//! that request's lane), `stream` (right after a request's first piece) and
//! `finished` (right after a request's `Finished`).
//!
//! Flags for `connect` and `bootstrap` cannot come from the model file, which
//! the worker learns only with `Init`: they are read from the *armed file*,
//! the worker's `argv[0]` plus `.flags` (a test serves through a symlink to
//! this binary in its own directory and writes `exit_at=connect` there while
//! the model it wants hit loads). The armed file's flags apply to every
//! worker started while it exists, on top of the model file's.
//!
//! Each generated token is the piece `"tok{i} "`; `max_tokens` defaults to 16.
//! As in the real worker, the command reader thread answers pings itself with
//! the "engine's" progress (one turn per decode step).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcSender};
use llm_node_protocol::*;

#[derive(Default)]
struct Flags {
    load_ms: u64,
    never_ready: bool,
    fail_init: bool,
    bad_file: bool,
    exit_at_start: bool,
    token_ms: u64,
    crash_after: Option<u64>,
    hang_after: Option<u64>,
    garbage_after: Option<u64>,
    stuck_after: Option<u64>,
    /// `exit_at` / `hang_at` / `garbage_at` / `flood_at`.
    faults: Vec<(Fault, Stage)>,
    flood_n: usize,
    once: bool,
}

/// Where in its life a worker misbehaves (`*_at=STAGE`); see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Connect,
    Bootstrap,
    Init,
    Ready,
    Request,
    Stream,
    Finished,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "connect" => Stage::Connect,
            "bootstrap" => Stage::Bootstrap,
            "init" => Stage::Init,
            "ready" => Stage::Ready,
            "request" => Stage::Request,
            "stream" => Stage::Stream,
            "finished" => Stage::Finished,
            _ => return None,
        })
    }
}

/// How a worker misbehaves at its stage.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Exit,
    Hang,
    Garbage,
    Flood,
}

impl Flags {
    fn fault_at(&self, stage: Stage) -> Option<Fault> {
        self.faults
            .iter()
            .find(|(_, s)| *s == stage)
            .map(|(fault, _)| *fault)
    }

    /// Fires the fault set for `stage`, if any: exits, hangs, sends garbage
    /// (then hangs) or floods (then returns). `model_path` is blanked first
    /// under `once`. A hang silences the ping reader too (`meter`, once it runs).
    fn trip(
        &self,
        stage: Stage,
        model_path: Option<&str>,
        meter: Option<&Meter>,
        garbage: impl Fn(),
        flood: impl Fn(),
    ) {
        let Some(fault) = self.fault_at(stage) else {
            return;
        };
        if self.once {
            if let Some(path) = model_path {
                let _ = std::fs::write(path, "");
            }
            let _ = std::fs::remove_file(armed_file());
        }
        eprintln!("WARN fake worker: {fault:?} at {stage:?} as asked");
        if let (Fault::Hang | Fault::Garbage, Some(meter)) = (fault, meter) {
            meter.silent.store(true, Relaxed);
        }
        match fault {
            Fault::Exit => std::process::exit(4),
            Fault::Hang => sleep_forever(),
            Fault::Garbage => {
                garbage();
                sleep_forever()
            }
            Fault::Flood => flood(),
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `argv[0]` plus `.flags`: flags for stages before `Init` (module docs).
fn armed_file() -> String {
    format!("{}.flags", std::env::args().next().unwrap_or_default())
}

/// The flags in the files at `paths` (missing files have none).
fn parse(paths: &[&str]) -> Flags {
    let mut f = Flags {
        token_ms: 5,
        flood_n: 100_000,
        ..Flags::default()
    };
    let content: String = paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_string()
                + "&"
        })
        .collect();
    for kv in content
        .trim()
        .split('&')
        .filter(|s| !s.is_empty() && *s != "GGUF")
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let n = v.parse().ok();
        match k {
            "load_ms" => f.load_ms = n.unwrap_or(0),
            "never_ready" => f.never_ready = true,
            "fail_init" => f.fail_init = true,
            "bad_file" => f.bad_file = true,
            "exit_at_start" => f.exit_at_start = true,
            "token_ms" => f.token_ms = n.unwrap_or(5),
            "crash_after" => f.crash_after = n,
            "hang_after" => f.hang_after = n,
            "garbage_after" => f.garbage_after = n,
            "stuck_after" => f.stuck_after = n,
            "exit_at" | "hang_at" | "garbage_at" | "flood_at" => {
                let fault = match k {
                    "exit_at" => Fault::Exit,
                    "hang_at" => Fault::Hang,
                    "garbage_at" => Fault::Garbage,
                    _ => Fault::Flood,
                };
                match Stage::parse(v) {
                    Some(stage) => f.faults.push((fault, stage)),
                    None => eprintln!("WARN fake worker: unknown stage {v}"),
                }
            }
            "flood_n" => f.flood_n = n.unwrap_or(100_000) as usize,
            "once" => f.once = true,
            _ => eprintln!("WARN fake worker: unknown flag {k}"),
        }
    }
    f
}

/// What the reader answers pings from: decode steps done, when the current
/// one began (ms after `epoch`, plus one; 0 = idle), and whether the whole
/// process plays dead (`hang_after`, `garbage_after`: no answers at all).
struct Meter {
    epoch: Instant,
    turns: AtomicU64,
    busy_since: AtomicU64,
    silent: AtomicBool,
    /// Running requests and their tokens so far (prompt and generated), as
    /// of the last turn: the fake's busy slots and KV cells.
    busy_slots: AtomicU64,
    kv_cells: AtomicU64,
}

impl Meter {
    fn progress(&self) -> Progress {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        Progress {
            turns: self.turns.load(Relaxed),
            busy_ms: match self.busy_since.load(Relaxed) {
                0 => 0,
                since => now.saturating_sub(since),
            },
            busy_slots: self.busy_slots.load(Relaxed) as u32,
            kv_cells: self.kv_cells.load(Relaxed),
            ..Progress::default()
        }
    }
}

struct Running {
    remaining: u32,
    emitted: u32,
    prompt_tokens: u32,
}

fn main() {
    let server = std::env::args().nth(1).expect("server name");
    if server == "--version" {
        // Same shape as the real worker's: a CPU-only build.
        println!("llm-node-fake-worker (protocol {PROTOCOL_VERSION}; backends: CPU; GPUs: none)");
        return;
    }
    let armed = parse(&[&armed_file()]);
    armed.trip(Stage::Connect, None, None, || {}, || {});
    // A message that is not a `Bootstrap` on the one-shot server.
    let bad_bootstrap = || {
        if let Ok(tx) = IpcSender::<Vec<u8>>::connect(server.clone()) {
            let _ = tx.send(vec![0xff; 16]);
        }
    };
    armed.trip(Stage::Bootstrap, None, None, bad_bootstrap, || {});
    let boot: IpcSender<Bootstrap> = IpcSender::connect(server).expect("connect");
    let lanes: usize = std::env::args()
        .nth(2)
        .map_or(1, |n| n.parse().expect("lanes"));
    let (cmd_tx, cmd_rx) = ipc::bytes_channel().unwrap();
    let (evt_tx, evt_rx): (Vec<_>, Vec<_>) =
        (0..lanes).map(|_| ipc::bytes_channel().unwrap()).unzip();
    // An undecodable message on the lane of request `id` (lane 0: `None`).
    let garbage = {
        let evt_tx = evt_tx.clone();
        move |id: Option<RequestId>| {
            let lane = id.map(lane_of).filter(|&l| l < lanes).unwrap_or(0);
            let _ = evt_tx[lane].send(&[0xff; 16]);
        }
    };
    // `n` events as fast as the channel takes them, 64 to a message: pieces
    // of request `id`, or (`None`) of ids the supervisor never issued.
    let flood = {
        let evt_tx = evt_tx.clone();
        move |id: Option<RequestId>, n: usize| {
            let lane = id.map(lane_of).filter(|&l| l < lanes).unwrap_or(0);
            let batch: Vec<Event> = (0..64u64)
                .map(|i| Event::Piece {
                    id: id.unwrap_or(request_id(0, (1 << 47) + i)),
                    text: "x".into(),
                    tokens: 1,
                    logprobs: Vec::new(),
                })
                .collect();
            let bytes = encode_events(&batch);
            for _ in 0..n.div_ceil(64) {
                if evt_tx[lane].send(&bytes).is_err() {
                    std::process::exit(0);
                }
            }
        }
    };
    let meter = Arc::new(Meter {
        epoch: Instant::now(),
        turns: AtomicU64::new(0),
        busy_since: AtomicU64::new(0),
        silent: AtomicBool::new(false),
        busy_slots: AtomicU64::new(0),
        kv_cells: AtomicU64::new(0),
    });
    let pong_tx = evt_tx.clone();
    // Each event on the lane its request id names, as the real worker does.
    let send = move |e: &Event| {
        let lane = e
            .request_id()
            .map(lane_of)
            .filter(|&l| l < lanes)
            .unwrap_or(0);
        if evt_tx[lane]
            .send(&encode_events(std::slice::from_ref(e)))
            .is_err()
        {
            std::process::exit(0);
        }
    };
    let (in_tx, in_rx) = mpsc::channel::<Command>();
    let reader_meter = meter.clone();
    std::thread::spawn(move || {
        while let Ok(bytes) = cmd_rx.recv() {
            match decode::<Command>(&bytes) {
                Ok(Command::Ping { id }) => {
                    if !reader_meter.silent.load(Relaxed) {
                        let progress = reader_meter.progress();
                        let lane = lane_of(id).min(pong_tx.len() - 1);
                        let _ = pong_tx[lane].send(&encode_events(&[Event::Pong { id, progress }]));
                    }
                }
                Ok(c) => {
                    if in_tx.send(c).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    // Flags arrive with Init, so even `exit_at_start` connects first.
    boot.send(Bootstrap {
        protocol_version: PROTOCOL_VERSION,
        commands: cmd_tx,
        events: evt_rx,
    })
    .expect("bootstrap");
    let Ok(Command::Init { config, .. }) = in_rx.recv() else {
        std::process::exit(2);
    };
    let flags = parse(&[&armed_file(), &config.model_path]);
    let path = Some(config.model_path.as_str());
    // The fault of one stage, with garbage and a flood of unknown ids on lane 0.
    let trip = |stage| {
        flags.trip(
            stage,
            path,
            Some(&meter),
            || garbage(None),
            || flood(None, flags.flood_n),
        )
    };
    eprintln!("INFO fake worker for {} starting", config.model_name);
    if flags.exit_at_start {
        eprintln!("ERROR fake worker: exiting at start as asked");
        std::process::exit(3);
    }
    if flags.bad_file {
        eprintln!("ERROR fake worker: bad_file");
        send(&Event::InitFailed {
            message: "fake worker: the chat template does not compile".into(),
            permanent: true,
        });
        std::process::exit(1);
    }
    if flags.fail_init {
        // On stderr too: the supervisor may see the exit before the message.
        eprintln!("ERROR fake worker: fail_init");
        send(&Event::InitFailed {
            message: "fake worker: fail_init".into(),
            permanent: false,
        });
        std::process::exit(1);
    }
    if flags.never_ready {
        sleep_forever();
    }
    std::thread::sleep(Duration::from_millis(flags.load_ms));
    trip(Stage::Init);
    send(&Event::Ready(ModelInfo {
        model_name: config.model_name.clone(),
        ctx_per_slot: config.ctx_per_slot,
        embedding_only: false,
        n_ctx_train: 8192,
        parallel: config.parallel,
        embedding_size: 8,
        has_chat_template: true,
        chat_template: String::new(),
        vocab_size: 1000,
        model_size_bytes: 1 << 20,
        n_params: 1 << 20,
        // A CPU-only worker, as the real one reports on a machine without a GPU.
        offload: llm_node_protocol::Offload {
            backends: vec!["CPU".into()],
            devices: Vec::new(),
            backend: "CPU".into(),
            layers_offloaded: 0,
            layers_total: 31,
            device_bytes: 0,
            allocated: llm_node_protocol::Allocated {
                weights: 1 << 20,
                ..Default::default()
            },
        },
    }));
    trip(Stage::Ready);

    let mut running: HashMap<RequestId, Running> = HashMap::new();
    let mut waiting = std::collections::VecDeque::new();
    let mut total: u64 = 0;
    loop {
        let cmd = if running.is_empty() {
            in_rx.recv().ok()
        } else {
            in_rx
                .recv_timeout(Duration::from_millis(flags.token_ms))
                .ok()
        };
        if let Some(cmd) = cmd {
            match cmd {
                Command::Generate {
                    id, prompt, params, ..
                } => {
                    let prompt_tokens = match &prompt {
                        Prompt::Text(t) => t.split_whitespace().count() as u32,
                        Prompt::Infill { prefix, suffix } => {
                            (prefix.split_whitespace().count() + suffix.split_whitespace().count())
                                as u32
                                + 3
                        }
                        Prompt::Chat(c) => c
                            .messages
                            .iter()
                            .map(|m| {
                                let text = m.content.as_deref().unwrap_or_default();
                                text.split_whitespace().count() as u32 + 3
                            })
                            .sum(),
                    };
                    if prompt_tokens >= config.ctx_per_slot {
                        send(&Event::Failed {
                            id,
                            kind: FailureKind::PromptTooLong,
                            message: "prompt too long".into(),
                        });
                        continue;
                    }
                    flags.trip(
                        Stage::Request,
                        path,
                        Some(&meter),
                        || garbage(Some(id)),
                        || flood(None, flags.flood_n),
                    );
                    let r = Running {
                        remaining: params.max_tokens.unwrap_or(16),
                        emitted: 0,
                        prompt_tokens,
                    };
                    // Like the real worker: `parallel` slots, the rest wait
                    // (and get `Started` only when a slot frees).
                    waiting.push_back((id, r));
                    admit(&mut waiting, &mut running, config.parallel as usize, &send);
                }
                Command::Cancel { id } => {
                    if let Some(at) = waiting.iter().position(|(w, _)| *w == id) {
                        waiting.remove(at);
                        send(&Event::Finished {
                            id,
                            reason: FinishReason::Cancelled,
                            usage: Usage::default(),
                        });
                    }
                    if let Some(r) = running.remove(&id) {
                        send(&Event::Finished {
                            id,
                            reason: FinishReason::Cancelled,
                            usage: Usage {
                                prompt_tokens: r.prompt_tokens,
                                completion_tokens: r.emitted,
                                cached_tokens: 0,
                            },
                        });
                    }
                }
                Command::Embed { id, inputs, .. } => {
                    let vectors = inputs
                        .iter()
                        .map(|input| {
                            let s = match input {
                                llm_node_protocol::EmbedInput::Text(t) => t.clone(),
                                llm_node_protocol::EmbedInput::Tokens(ids) => format!("{ids:?}"),
                            };
                            let mut v = [0f32; 8];
                            for (i, b) in s.bytes().enumerate() {
                                v[i % 8] += b as f32;
                            }
                            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                            v.iter().map(|x| x / n).collect()
                        })
                        .collect();
                    send(&Event::Embeddings {
                        id,
                        vectors,
                        prompt_tokens: inputs.len() as u32,
                    });
                }
                Command::Rerank {
                    id,
                    query,
                    documents,
                    ..
                } => {
                    // Score: how many of the query's words the document has.
                    let hits = |d: &str| {
                        query
                            .split_whitespace()
                            .filter(|w| d.split_whitespace().any(|x| x == *w))
                            .count() as f32
                    };
                    send(&Event::Embeddings {
                        id,
                        vectors: documents.iter().map(|d| vec![hits(d)]).collect(),
                        prompt_tokens: 2 * documents.len() as u32,
                    });
                }
                Command::CountTokens { id, prompt } => {
                    let count = match prompt {
                        Prompt::Text(t) => t.split_whitespace().count() as u32,
                        Prompt::Infill { prefix, suffix } => {
                            (prefix.split_whitespace().count() + suffix.split_whitespace().count())
                                as u32
                                + 3
                        }
                        Prompt::Chat(c) => c.messages.len() as u32 * 4,
                    };
                    send(&Event::TokenCount { id, count });
                }
                // One token per byte, its value the byte.
                Command::Tokenize { id, content, .. } => send(&Event::Tokens {
                    id,
                    tokens: content.bytes().map(i32::from).collect(),
                    pieces: content.bytes().map(|b| vec![b]).collect(),
                }),
                Command::Detokenize { id, tokens } => send(&Event::Detokenized {
                    id,
                    content: tokens.iter().map(|&t| char::from(t as u8)).collect(),
                }),
                // Answered by the reader thread.
                Command::Ping { .. } | Command::SetLogLevel { .. } => {}
                Command::Shutdown => std::process::exit(0),
                Command::Init { .. } => {}
            }
            continue;
        }
        // One "decode step": a token for every running request.
        let ids: Vec<RequestId> = running.keys().copied().collect();
        for id in ids {
            total += 1;
            if flags.crash_after.is_some_and(|n| total > n) {
                eprintln!("ERROR fake worker: aborting as asked");
                std::process::abort();
            }
            if flags.garbage_after.is_some_and(|n| total > n) {
                eprintln!("WARN fake worker: sending garbage, then living on silently");
                meter.silent.store(true, Relaxed);
                garbage(None);
                sleep_forever();
            }
            if flags.hang_after.is_some_and(|n| total > n) {
                eprintln!("WARN fake worker: hanging as asked");
                meter.silent.store(true, Relaxed);
                sleep_forever();
            }
            if flags.stuck_after.is_some_and(|n| total > n) {
                eprintln!("WARN fake worker: engine stuck as asked; pings still answered");
                let now = meter.epoch.elapsed().as_millis() as u64 + 1;
                meter.busy_since.store(now, Relaxed);
                sleep_forever();
            }
            let r = running.get_mut(&id).unwrap();
            send(&Event::Piece {
                id,
                text: format!("tok{} ", r.emitted),
                tokens: 1,
                logprobs: Vec::new(),
            });
            r.emitted += 1;
            r.remaining -= 1;
            if r.emitted == 1 {
                flags.trip(
                    Stage::Stream,
                    path,
                    Some(&meter),
                    || garbage(Some(id)),
                    || flood(Some(id), flags.flood_n),
                );
            }
            let r = running.get_mut(&id).unwrap();
            if r.remaining == 0 {
                let r = running.remove(&id).unwrap();
                send(&Event::Finished {
                    id,
                    reason: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: r.prompt_tokens,
                        completion_tokens: r.emitted,
                        cached_tokens: 0,
                    },
                });
                trip(Stage::Finished);
            }
        }
        admit(&mut waiting, &mut running, config.parallel as usize, &send);
        meter.busy_slots.store(running.len() as u64, Relaxed);
        let cells = running
            .values()
            .map(|r| u64::from(r.prompt_tokens + r.emitted));
        meter.kv_cells.store(cells.sum(), Relaxed);
        meter.turns.fetch_add(1, Relaxed);
    }
}

/// Moves waiting requests into free slots, announcing each with `Started`.
fn admit(
    waiting: &mut std::collections::VecDeque<(RequestId, Running)>,
    running: &mut HashMap<RequestId, Running>,
    slots: usize,
    send: &impl Fn(&Event),
) {
    while running.len() < slots.max(1) {
        let Some((id, r)) = waiting.pop_front() else {
            return;
        };
        send(&Event::Started {
            id,
            prompt_tokens: r.prompt_tokens,
            reasoning_open: false,
        });
        running.insert(id, r);
    }
}
