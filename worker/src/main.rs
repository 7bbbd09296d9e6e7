//! `llm-node-worker`: one model, one process.
//!
//! Started by the supervisor as `llm-node-worker <ipc-server-name> [lanes]`:
//! the name of its one-shot IPC server and the number of event lanes. It connects, completes the handshake described in
//! `llm_node_protocol`, loads the model and serves requests until told to shut
//! down or until the supervisor disappears (it also dies with its parent via
//! `PR_SET_PDEATHSIG`, set by the supervisor). A crash here, inside llama.cpp
//! or not, takes down only this model.
//!
//! # Layout
//! - `ipc`: the connection and the command reader thread, which answers
//!   liveness pings itself.
//! - `progress`: the engine's progress counters that those answers report.
//! - `engine`: the llama.cpp thread and its continuous-batching loop; it
//!   applies the decisions of the pure modules below.
//! - `load`: the model, the generation context and the chat template.
//! - `plan`: the batch plan (which slot gets which tokens each step), slot
//!   choice by longest cached prefix, prefix reuse. Pure, table-tested.
//! - `sequence`: one generation, from a sampled token to streamed text and
//!   its finish (stop strings, length, logprobs, token counts).
//! - `prep`: the prep thread: chat template rendering, tokenizing, sampler
//!   chains and the prompt byte cap, off the engine thread.
//! - `embed`: the embeddings context, one input (or rerank pair) per engine turn.
//! - `rerank`: how a (query, document) pair becomes tokens, as llama-server
//!   lays it out. Pure, table-tested.
//! - `sampling`: the sampler chain and logprobs.
//! - `schema`: JSON schema → GBNF (llama.cpp's converter plus bounded numbers).
//! - `text`: UTF-8 reassembly and stop strings.
//! - `offload`: the backends compiled in and where llama.cpp put the model
//!   (layers offloaded, bytes per device), read from its load log.
//! - chat templates are rendered by the `llm-node-chat` crate.

mod draft;
mod drafter;
mod embed;
mod engine;
mod ipc;
mod load;
mod offload;
mod plan;
mod prep;
mod progress;
mod prompt_cache;
mod rerank;
mod sampling;
mod schema;
mod sequence;
mod text;
mod tokens;

use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use llama_cpp_2::llama_backend::LlamaBackend;
use llm_node_protocol::{Command, Event, PROTOCOL_VERSION};

use crate::engine::Input;
use crate::ipc::Inbound;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        load::load_backend_modules();
        println!("{}", version());
        return ExitCode::SUCCESS;
    }
    init_logging();
    let Some(server) = std::env::args().nth(1) else {
        eprintln!(
            "usage: llm-node-worker <ipc-server-name> [lanes] (started by llm-node, not by hand)"
        );
        return ExitCode::from(2);
    };
    let lanes = match std::env::args().nth(2).map(|s| s.parse::<u16>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => usize::from(n),
        Some(_) => {
            eprintln!("llm-node-worker: lanes must be a number from 1 to 65535");
            return ExitCode::from(2);
        }
    };
    match serve(&server, lanes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `llm-node-worker <version> (protocol <n>; backends: CPU, CUDA; GPUs: CUDA0)`:
/// the backends compiled in (ggml's registry) and the GPU devices they see now.
fn version() -> String {
    let gpus = offload::gpu_devices();
    let gpus = match gpus.is_empty() {
        true => "none".to_owned(),
        false => gpus
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "llm-node-worker {} (protocol {PROTOCOL_VERSION}; backends: {}; GPUs: {gpus})",
        env!("CARGO_PKG_VERSION"),
        offload::backends().join(", ")
    )
}

/// Plain lines on stderr (`LEVEL target: message`) that the supervisor re-emits
/// with the model name and pid; llama.cpp's own logs are routed here too.
/// The reload handle of the worker's log filter ([`set_log_filter`]).
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama-cpp-2=warn"));
    // Behind a reload handle: the supervisor changes it at run time (`SetLogLevel`).
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Per-layer filters: stderr obeys the (reloadable) log filter, while the
    // offload capture sees llama.cpp's load lines at any log level.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .with_filter(filter),
        )
        .with(offload::CaptureLayer.with_filter(offload::capture_filter()))
        .init();
    let _ = LOG_FILTER.set(handle);
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// Replaces the log filter (`Command::SetLogLevel`); an invalid one is logged and ignored.
pub(crate) fn set_log_filter(spec: &str) {
    match tracing_subscriber::EnvFilter::builder().parse(spec) {
        Ok(filter) => {
            if let Some(handle) = LOG_FILTER.get() {
                let _ = handle.reload(filter);
            }
        }
        Err(e) => tracing::warn!("ignoring log filter {spec:?}: {e}"),
    }
}

fn serve(server: &str, lanes: usize) -> anyhow::Result<()> {
    // One channel into the engine: the reader thread's commands and the
    // prep thread's prepared requests.
    let (input_tx, inputs) = mpsc::channel::<Input>();
    // The engine's progress, which the reader thread reports in its pongs.
    let meter = Arc::new(progress::Meter::default());
    let sink = ipc::connect(server, lanes, input_tx.clone(), meter.clone())?;
    let config = match inputs.recv()? {
        Input::Inbound(Inbound::Command(Command::Init {
            protocol_version,
            config,
        })) => {
            anyhow::ensure!(
                protocol_version == PROTOCOL_VERSION,
                "supervisor speaks protocol {protocol_version}, this worker {PROTOCOL_VERSION}"
            );
            config
        }
        Input::Inbound(Inbound::Command(other)) => anyhow::bail!("expected Init, got {other:?}"),
        Input::Inbound(Inbound::Closed(why)) => {
            anyhow::bail!("supervisor went away before Init: {why}")
        }
        Input::Prepared(_) => anyhow::bail!("a prepared request before Init"),
    };
    let backend = LlamaBackend::init()?;
    let model = match load::load_model(&backend, &config) {
        Ok(model) => model,
        Err(e) => return Err(init_failed(&sink, e)),
    };
    let draft = match load::load_draft_model(&backend, &config) {
        Ok(draft) => draft,
        Err(e) => return Err(init_failed(&sink, e)),
    };
    // The prep thread borrows the model, so it lives in a scope that ends
    // after the engine (and with it the prep thread's job queue) is dropped.
    std::thread::scope(|scope| {
        let (jobs_tx, jobs) = mpsc::channel();
        let (mut engine, preparer) = match engine::Engine::new(
            &backend,
            &model,
            draft.as_ref(),
            &config,
            sink,
            jobs_tx,
            meter,
        ) {
            Ok(parts) => parts,
            Err((e, sink)) => return Err(init_failed(&sink, e)),
        };
        std::thread::Builder::new()
            .name("prep".into())
            .spawn_scoped(scope, move || preparer.run(jobs, input_tx))?;
        let info = engine.info(&config);
        let o = &info.offload;
        tracing::info!(
            model = %info.model_name,
            ctx_per_slot = info.ctx_per_slot,
            parallel = info.parallel,
            backend = %o.backend,
            layers = %format!("{}/{}", o.layers_offloaded, o.layers_total),
            device_mib = o.device_bytes >> 20,
            "model loaded"
        );
        if !o.devices.is_empty() && o.layers_offloaded == 0 {
            tracing::warn!(devices = ?o.devices, "GPUs present but no layer offloaded (n_gpu_layers = 0)");
        }
        let gpu_backends: Vec<&String> = o
            .backends
            .iter()
            .filter(|b| !b.eq_ignore_ascii_case("CPU") && !b.eq_ignore_ascii_case("BLAS"))
            .collect();
        if o.devices.is_empty() && !gpu_backends.is_empty() {
            tracing::warn!(
                backends = ?gpu_backends,
                "built with a GPU backend but no GPU device found: CPU fallback, every layer runs on the CPU"
            );
        }
        engine.send_ready(info)?;
        engine.run(&inputs)?;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// Tells the supervisor why loading failed (and whether retrying can help),
/// then returns the error that ends the process.
fn init_failed(sink: &ipc::EventSink, e: load::LoadError) -> anyhow::Error {
    let _ = sink.send(Event::InitFailed {
        message: e.message.clone(),
        permanent: e.permanent,
    });
    let _ = sink.flush();
    anyhow::anyhow!(e.message)
}
