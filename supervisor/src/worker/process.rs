//! Spawning, handshaking with and stopping one `llm-node-worker` process.
//!
//! [`spawn`] starts the child in its own process group, with an explicit
//! environment and `PR_SET_PDEATHSIG=SIGKILL`, and returns a [`WorkerProcess`]
//! handle plus a [`Handshake`] to await. The handshake (accept the worker's
//! [`Bootstrap`], check its version, send [`Command::Init`], wait for
//! [`Event::Ready`]) blocks on ipc-channel, so it runs on its own thread while
//! [`Handshake::wait`] races it against the child exiting and the deadline.
//!
//! The child's stdout and stderr are re-emitted line by line through tracing
//! with `model` and `pid` fields; the last stderr lines are kept so that a
//! start failure can say why. Each line is capped at [`MAX_LINE_BYTES`] while
//! it is read: a worker printing a gigabyte without a newline costs the
//! supervisor 16 KiB, not a gigabyte.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use llm_node_protocol::{
    decode_events, encode, Bootstrap, Command, Event, ModelInfo, WorkerConfig, PROTOCOL_VERSION,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};
use tracing::Level;

use super::client::WorkerClient;
use super::lanes::Lanes;

/// Stderr lines kept for start-failure reports.
const STDERR_TAIL_LINES: usize = 20;

/// Longest worker output line kept, in bytes; the rest of a longer line is
/// read and dropped, and the kept part is marked as truncated.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Environment variables passed through to workers by exact name.
const ENV_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "LD_LIBRARY_PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
];

/// Environment variables passed through to workers by prefix (GPU selection,
/// OpenMP and ggml tuning).
const ENV_PREFIXES: &[&str] = &["CUDA_", "OMP_", "KMP_", "GGML_"];

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    pub bin: PathBuf,
    pub config: WorkerConfig,
    /// From spawn to `Ready`, model load included.
    pub ready_timeout: Duration,
    /// Set on top of the whitelisted environment (GPU pinning).
    pub env: Vec<(String, String)>,
    /// The node's HTTP threads' event lanes; `None`: lane 0 only.
    pub lanes: Option<Arc<Lanes>>,
    /// Events buffered per request before its reader counts as too slow
    /// (`--stream-buffer`; see [`WorkerClient`]'s Backpressure section).
    pub stream_buffer: usize,
}

/// Why a worker did not become ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("cannot spawn {bin:?}: {message}")]
    Spawn { bin: PathBuf, message: String },
    #[error("ipc handshake failed: {0}")]
    Ipc(String),
    #[error("worker speaks protocol {0}, this supervisor {PROTOCOL_VERSION}")]
    ProtocolMismatch(u32),
    /// The worker answered `Init` with something undecodable or other than
    /// `Ready`/`InitFailed`. Apart from [`StartError::Ipc`] because the
    /// worker's exit after it (it sees its channel close) is not the reason.
    #[error("worker broke the handshake: {0}")]
    Protocol(String),
    /// The worker could not load its model; `permanent` when retrying cannot help.
    #[error("model failed to load: {message}")]
    InitFailed { message: String, permanent: bool },
    #[error("worker exited before it was ready ({status}); last stderr lines:\n{tail}")]
    Exited { status: String, tail: String },
    #[error("worker not ready after {0:?}")]
    Timeout(Duration),
}

/// A handle to a spawned worker process; cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerProcess {
    model: String,
    pid: u32,
    /// Set once by the waiter thread, which owns the `Child` and reaps it.
    exited: watch::Receiver<Option<ExitStatus>>,
    /// Set once the stderr forwarder has seen end-of-file.
    stderr_closed: watch::Receiver<bool>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The pending second half of a start; see [`Handshake::wait`].
pub struct Handshake {
    process: WorkerProcess,
    lanes: Option<Arc<Lanes>>,
    stream_buffer: usize,
    server_name: String,
    timeout: Duration,
    result: oneshot::Receiver<Result<Connected, StartError>>,
}

/// A worker that completed the handshake.
struct Connected {
    commands: IpcBytesSender,
    events: Vec<IpcBytesReceiver>,
    info: ModelInfo,
}

/// Spawns the worker described by `opts`.
///
/// Must be called on a thread that outlives the worker: `PR_SET_PDEATHSIG`
/// fires when the *thread* that forked the child exits, not the process, so
/// spawning from a short-lived blocking-pool thread would kill the worker as
/// soon as that thread is retired. The actix arbiter thread qualifies.
///
/// # Errors
/// [`StartError::Spawn`] or [`StartError::Ipc`] when the process or the
/// one-shot server cannot be created.
pub fn spawn(opts: &SpawnOptions) -> Result<(WorkerProcess, Handshake), StartError> {
    let (server, server_name) = IpcOneShotServer::<Bootstrap>::new()
        .map_err(|e| StartError::Ipc(format!("one-shot server: {e}")))?;
    let mut child = command(opts, &server_name)
        .spawn()
        .map_err(|e| StartError::Spawn {
            bin: opts.bin.clone(),
            message: e.to_string(),
        })?;
    let pid = child.id();
    let model = opts.config.model_name.clone();
    tracing::info!(model = %model, pid, bin = ?opts.bin, "worker spawned");

    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let (closed_tx, stderr_closed) = watch::channel(false);
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let forward = LogForwarder {
        model: model.clone(),
        pid,
    };
    thread(&format!("stdout-{pid}"), {
        let forward = forward.clone();
        move || forward.run(stdout, None)
    });
    thread(&format!("stderr-{pid}"), {
        let tail = Arc::clone(&stderr_tail);
        move || {
            forward.run(stderr, Some(&tail));
            closed_tx.send_replace(true);
        }
    });
    let (exit_tx, exited) = watch::channel(None);
    thread(&format!("wait-{pid}"), move || reap(child, &exit_tx));

    let (result_tx, result) = oneshot::channel();
    let config = opts.config.clone();
    let lanes = lane_count(opts);
    thread(&format!("handshake-{pid}"), move || {
        let _ = result_tx.send(handshake(server, config, lanes));
    });
    let process = WorkerProcess {
        model,
        pid,
        exited,
        stderr_closed,
        stderr_tail,
    };
    let handshake = Handshake {
        process: process.clone(),
        lanes: opts.lanes.clone(),
        stream_buffer: opts.stream_buffer,
        server_name,
        timeout: opts.ready_timeout,
        result,
    };
    Ok((process, handshake))
}

/// The child's command line, environment, process group and death signal.
fn command(opts: &SpawnOptions, server_name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(&opts.bin);
    cmd.arg(server_name)
        .arg(lane_count(opts).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .envs(worker_env(std::env::vars_os()))
        .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .process_group(0);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid); it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before the line above took effect.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd
}

/// Event channels the worker is asked to open.
fn lane_count(opts: &SpawnOptions) -> usize {
    opts.lanes.as_deref().map_or(1, Lanes::count)
}

/// The whitelisted subset of `vars` a worker inherits.
pub fn worker_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            ENV_NAMES.contains(&name.as_ref()) || ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

fn thread(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawn worker helper thread");
}

/// Waits for the child and publishes its exit status.
fn reap(mut child: Child, exited: &watch::Sender<Option<ExitStatus>>) {
    match child.wait() {
        Ok(status) => {
            exited.send_replace(Some(status));
        }
        Err(e) => tracing::error!(pid = child.id(), "waiting for worker failed: {e}"),
    }
}

/// The blocking half of the handshake, run on its own thread.
fn handshake(
    server: IpcOneShotServer<Bootstrap>,
    config: WorkerConfig,
    lanes: usize,
) -> Result<Connected, StartError> {
    let ipc_err = |what: &str, e: &dyn std::fmt::Display| StartError::Ipc(format!("{what}: {e}"));
    let (_, boot) = server.accept().map_err(|e| ipc_err("accept", &e))?;
    if boot.protocol_version != PROTOCOL_VERSION {
        return Err(StartError::ProtocolMismatch(boot.protocol_version));
    }
    if boot.events.len() != lanes {
        return Err(StartError::Ipc(format!(
            "asked for {lanes} event lanes, the worker opened {}",
            boot.events.len()
        )));
    }
    let init = Command::Init {
        protocol_version: PROTOCOL_VERSION,
        config,
    };
    boot.commands
        .send(&encode(&init))
        .map_err(|e| ipc_err("send Init", &e))?;
    let bytes = boot.events[0]
        .recv()
        .map_err(|e| ipc_err("wait for Ready", &e))?;
    let first = decode_events(&bytes)
        .map_err(|e| StartError::Protocol(format!("undecodable first message: {e}")))?
        .into_iter()
        .next();
    match first.ok_or_else(|| StartError::Protocol("empty first message".into()))? {
        Event::Ready(info) => Ok(Connected {
            commands: boot.commands,
            events: boot.events,
            info,
        }),
        Event::InitFailed { message, permanent } => {
            Err(StartError::InitFailed { message, permanent })
        }
        other => Err(StartError::Protocol(format!(
            "expected Ready, got {:.200}",
            format!("{other:?}")
        ))),
    }
}

/// Makes a blocked `accept()` return by connecting with a bogus bootstrap
/// (version 0, which the handshake thread rejects). Without this, a worker
/// that dies before connecting would leave that thread blocked forever.
fn unblock_accept(server_name: &str) {
    let Ok(sender) = IpcSender::<Bootstrap>::connect(server_name.to_string()) else {
        return;
    };
    if let (Ok((commands, _)), Ok((_, events))) = (ipc::bytes_channel(), ipc::bytes_channel()) {
        let _ = sender.send(Bootstrap {
            protocol_version: 0,
            commands,
            events: vec![events],
        });
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("pid", &self.process.pid)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Waits until the worker is ready, has failed, has exited or ran out of time.
    /// On any failure the worker's process group is killed before returning.
    ///
    /// # Errors
    /// The [`StartError`] that ended the start.
    pub async fn wait(self) -> Result<(WorkerClient, ModelInfo), StartError> {
        let Handshake {
            process,
            lanes,
            stream_buffer,
            server_name,
            timeout,
            mut result,
        } = self;
        let outcome = tokio::select! {
            // The worker's own answer first, when it is there with the exit.
            biased;
            res = &mut result => match res {
                Ok(res) => res,
                Err(_) => Err(StartError::Ipc("handshake thread vanished".into())),
            },
            status = process.exited() => {
                unblock_accept(&server_name);
                // A worker answers `InitFailed` and exits at once, and one that
                // broke the handshake exits when its channel closes; when the
                // exit is seen first, the answer still says why (and whether a
                // retry can help: a permanent failure is parked, not
                // restarted). Without this a bad file was now and then
                // restarted as a crash, and a flood before Ready reported as
                // `exit status: 0`.
                match tokio::time::timeout(Duration::from_secs(1), &mut result).await {
                    Ok(Ok(Err(e @ (StartError::InitFailed { .. } | StartError::Protocol(_))))) => {
                        Err(e)
                    }
                    _ => Err(process.exit_error(status).await),
                }
            }
            () = tokio::time::sleep(timeout) => {
                unblock_accept(&server_name);
                Err(StartError::Timeout(timeout))
            }
        };
        match outcome {
            Ok(c) => {
                if let Some(lanes) = &lanes {
                    // Only at node start can a worker be faster than the HTTP threads.
                    lanes.ready(Duration::from_secs(5)).await;
                }
                let client = WorkerClient::with_lanes(
                    c.commands,
                    c.events,
                    &process.model,
                    lanes.as_deref(),
                    stream_buffer,
                );
                client.set_chat_format(llm_node_chat::format::ChatFormat::detect(
                    &c.info.chat_template,
                ));
                client.set_slots(c.info.parallel);
                Ok((client, c.info))
            }
            // A broken channel usually means the worker died: report its exit.
            Err(StartError::Ipc(e)) => {
                let status = tokio::time::timeout(Duration::from_secs(1), process.exited()).await;
                process.signal(Signal::SIGKILL);
                match status {
                    Ok(status) => Err(process.exit_error(status).await),
                    Err(_) => Err(StartError::Ipc(e)),
                }
            }
            Err(e) => {
                process.signal(Signal::SIGKILL);
                Err(e)
            }
        }
    }
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// Resolves when the process has exited; `None` if its waiter failed.
    pub async fn exited(&self) -> Option<ExitStatus> {
        let mut rx = self.exited.clone();
        let status = rx.wait_for(Option::is_some).await.ok()?;
        *status
    }

    /// The last lines the worker wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The exit as a start error, with the last stderr lines (waits up to 1 s
    /// for the log forwarder to drain the pipe).
    pub async fn exit_error(&self, status: Option<ExitStatus>) -> StartError {
        // Give the forwarder a moment to drain the last lines of the pipe.
        let mut closed = self.stderr_closed.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), closed.wait_for(|c| *c)).await;
        StartError::Exited {
            status: status.map_or_else(|| "unknown status".into(), |s| s.to_string()),
            tail: self.stderr_tail(),
        }
    }

    /// Sends `signal` to the worker's whole process group, unless it has exited
    /// (its pid, and so its group id, could have been reused).
    pub fn signal(&self, signal: Signal) {
        if self.has_exited() {
            return;
        }
        let group = Pid::from_raw(self.pid as i32);
        if let Err(e) = killpg(group, signal) {
            tracing::debug!(model = %self.model, pid = self.pid, "killpg {signal}: {e}");
        }
    }

    /// Stops the worker: `Shutdown` through `client` (when connected), then SIGTERM
    /// to its process group, then SIGKILL, waiting up to `grace` after each step.
    pub async fn stop(&self, client: Option<&WorkerClient>, grace: Duration) {
        let steps = [None, Some(Signal::SIGTERM), Some(Signal::SIGKILL)];
        for step in steps {
            match step {
                None => match client.map(WorkerClient::shutdown) {
                    Some(Ok(())) => {}
                    _ => continue,
                },
                Some(signal) => {
                    tracing::warn!(model = %self.model, pid = self.pid, "worker still running; sending {signal}");
                    self.signal(signal);
                }
            }
            if tokio::time::timeout(grace, self.exited()).await.is_ok() {
                tracing::info!(model = %self.model, pid = self.pid, "worker stopped");
                return;
            }
        }
        tracing::error!(model = %self.model, pid = self.pid, "worker survived SIGKILL");
    }
}

/// Re-emits a child's output through tracing.
#[derive(Clone)]
struct LogForwarder {
    model: String,
    pid: u32,
}

impl LogForwarder {
    fn run(&self, pipe: impl Read, tail: Option<&Mutex<VecDeque<String>>>) {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        while let Ok(Some(dropped)) = read_capped_line(&mut reader, &mut buf, MAX_LINE_BYTES) {
            let line = String::from_utf8_lossy(&buf);
            let mut line = line.trim_end().to_string();
            if dropped > 0 {
                line.push_str(&format!(" [line truncated: {dropped} more bytes dropped]"));
            }
            if line.is_empty() {
                continue;
            }
            let (level, message) = parse_log_line(&line);
            self.emit(level, &message);
            if let Some(tail) = tail {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }

    fn emit(&self, level: Level, message: &str) {
        let (model, pid) = (self.model.as_str(), self.pid);
        match level {
            Level::ERROR => tracing::error!(target: "llm_node::worker", model, pid, "{message}"),
            Level::WARN => tracing::warn!(target: "llm_node::worker", model, pid, "{message}"),
            Level::INFO => tracing::info!(target: "llm_node::worker", model, pid, "{message}"),
            Level::DEBUG => tracing::debug!(target: "llm_node::worker", model, pid, "{message}"),
            Level::TRACE => tracing::trace!(target: "llm_node::worker", model, pid, "{message}"),
        }
    }
}

/// Reads one line (up to and including `\n`) from `reader` into `buf`, which
/// is cleared first and never grows past `cap` bytes: the rest of a longer
/// line is consumed and dropped. Returns how many bytes were dropped, or
/// `None` at end of input (a last line without `\n` is still returned).
///
/// # Errors
/// Read errors of `reader` (other than `Interrupted`, which is retried).
pub fn read_capped_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let (mut dropped, mut read_any) = (0, false);
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(read_any.then_some(dropped));
        }
        read_any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let line = newline.map_or(chunk, |i| &chunk[..=i]);
        let keep = line.len().min(cap.saturating_sub(buf.len()));
        buf.extend_from_slice(&line[..keep]);
        dropped += line.len() - keep;
        let used = line.len();
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(dropped));
        }
    }
}

/// The level and message of one worker log line. Understands tracing's text
/// format (`  INFO target: message`), its JSON format (`{"level":..,"fields":
/// {"message":..}}`) and anything else (logged at info as is).
pub fn parse_log_line(line: &str) -> (Level, String) {
    if line.starts_with('{') {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            let level = value["level"].as_str().and_then(level_word);
            let message = value["fields"]["message"]
                .as_str()
                .or_else(|| value["message"].as_str());
            if let (Some(level), Some(message)) = (level, message) {
                return (level, message.to_string());
            }
        }
    }
    let trimmed = line.trim_start();
    if let Some((word, rest)) = trimmed.split_once(' ') {
        if let Some(level) = level_word(word) {
            return (level, rest.trim_start().to_string());
        }
    }
    (Level::INFO, line.to_string())
}

fn level_word(word: &str) -> Option<Level> {
    match word.to_ascii_uppercase().as_str() {
        "ERROR" => Some(Level::ERROR),
        "WARN" | "WARNING" => Some(Level::WARN),
        "INFO" => Some(Level::INFO),
        "DEBUG" => Some(Level::DEBUG),
        "TRACE" => Some(Level::TRACE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn log_lines_keep_the_childs_level() {
        let cases = [
            (
                " INFO llm_node_worker: loaded",
                Level::INFO,
                "llm_node_worker: loaded",
            ),
            (
                "ERROR engine: decode failed",
                Level::ERROR,
                "engine: decode failed",
            ),
            (" WARN x: y", Level::WARN, "x: y"),
            (
                "ggml_cuda_init: found 1 device",
                Level::INFO,
                "ggml_cuda_init: found 1 device",
            ),
            (
                r#"{"level":"DEBUG","fields":{"message":"slot 1 freed"},"target":"w"}"#,
                Level::DEBUG,
                "slot 1 freed",
            ),
        ];
        for (line, level, message) in cases {
            assert_eq!(parse_log_line(line), (level, message.to_string()), "{line}");
        }
    }

    #[test]
    fn worker_env_is_a_whitelist() {
        let vars = [
            ("PATH", "/bin"),
            ("CUDA_VISIBLE_DEVICES", "1"),
            ("OMP_NUM_THREADS", "4"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("LLM_NODE_PORT", "1"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let names: Vec<_> = worker_env(vars).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["PATH", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]);
    }

    fn script(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-worker");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    fn options(bin: PathBuf, ready_timeout: Duration) -> SpawnOptions {
        SpawnOptions {
            bin,
            config: WorkerConfig {
                model_name: "m".into(),
                model_path: "/m.gguf".into(),
                ctx_per_slot: 64,
                parallel: 1,
                n_gpu_layers: 0,
                main_gpu: 0,
                split_mode: Default::default(),
                cache_type_k: Default::default(),
                cache_type_v: Default::default(),
                threads: 1,
                batch_size: 8,
                prefill_chunk: 0,
                embeddings: false,
                cache_ram_mib: 0,
                spec_ngram: 0,
                spec_draft: 0,
                prefill_ahead: false,
                draft_model_path: None,
                chat_template: None,
            },
            ready_timeout,
            env: Vec::new(),
            lanes: None,
            stream_buffer: crate::worker::client::DEFAULT_STREAM_BUFFER,
        }
    }

    #[actix_rt::test]
    async fn early_exit_is_a_start_failure_with_the_stderr_tail() {
        let (_dir, bin) = script("echo 'ERROR cannot open model' >&2; exit 3");
        let (process, handshake) = spawn(&options(bin, Duration::from_secs(10))).unwrap();
        let err = handshake.wait().await.unwrap_err();
        match err {
            StartError::Exited { status, tail } => {
                assert!(status.contains('3'), "{status}");
                assert!(tail.contains("cannot open model"), "{tail}");
            }
            other => panic!("expected Exited, got {other}"),
        }
        assert!(process.has_exited());
    }

    #[actix_rt::test]
    async fn a_worker_that_never_connects_times_out_and_is_killed() {
        let (_dir, bin) = script("exec sleep 30");
        let (process, handshake) = spawn(&options(bin, Duration::from_millis(200))).unwrap();
        let err = handshake.wait().await.unwrap_err();
        assert!(matches!(err, StartError::Timeout(_)), "{err}");
        let status = tokio::time::timeout(Duration::from_secs(5), process.exited())
            .await
            .expect("killed after the timeout");
        assert!(!status.unwrap().success());
    }

    #[actix_rt::test]
    async fn stop_escalates_to_signals_when_there_is_no_connection() {
        let (_dir, bin) = script("exec sleep 30");
        let (process, _handshake) = spawn(&options(bin, Duration::from_secs(60))).unwrap();
        let t0 = std::time::Instant::now();
        process.stop(None, Duration::from_secs(5)).await;
        assert!(process.has_exited());
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "SIGTERM suffices for sleep"
        );
    }

    #[test]
    fn lines_are_capped_while_read_and_the_rest_is_dropped() {
        let input = b"short\n0123456789abcdef\nexact\n\nno newline".as_slice();
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(dropped) = read_capped_line(&mut reader, &mut buf, 6).unwrap() {
            lines.push((String::from_utf8(buf.clone()).unwrap(), dropped));
        }
        let expected = [
            ("short\n", 0),
            ("012345", 11),
            ("exact\n", 0),
            ("\n", 0),
            ("no new", 4),
        ];
        let expected: Vec<_> = expected.map(|(l, d)| (l.to_string(), d)).into();
        assert_eq!(lines, expected);
    }

    #[actix_rt::test]
    async fn a_huge_stderr_line_is_capped_in_the_tail() {
        // 50 MB without a newline, then a normal line.
        let (_dir, bin) = script(
            "{ head -c 50000000 /dev/zero | tr '\\0' x; echo; echo 'ERROR after the long line'; } >&2; exit 3",
        );
        let (_process, handshake) = spawn(&options(bin, Duration::from_secs(60))).unwrap();
        let StartError::Exited { tail, .. } = handshake.wait().await.unwrap_err() else {
            panic!("expected Exited");
        };
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert!(lines[0].len() < MAX_LINE_BYTES + 100, "{}", lines[0].len());
        assert!(lines[0].starts_with("xxxx"));
        let dropped = 50_000_000 - MAX_LINE_BYTES + 1;
        assert!(lines[0].ends_with(&format!("[line truncated: {dropped} more bytes dropped]")));
        assert_eq!(lines[1], "ERROR after the long line");
    }

    #[actix_rt::test]
    async fn missing_binary_is_a_spawn_error() {
        let err = spawn(&options("/no/such/worker".into(), Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, StartError::Spawn { .. }));
    }
}
