//! Harness for end-to-end tests: starts the real `llm-node` binary (which
//! starts real `llm-node-worker`s) on `127.0.0.1:0` with the bundled model,
//! finds the port it bound from its `listening on http://…` line, and stops it
//! with SIGTERM when dropped.
//!
//! Every node runs with `--loopback-only`: a host name other than `localhost`
//! is refused before any DNS query, and the node logs it. The harness reads
//! the node's log and a test fails (when its `Node` is dropped or terminated)
//! if the node tried to resolve such a host, unless the test took the
//! attempts with [`Node::take_refused_hosts`] to assert on them.
//!
//! Binaries are looked up next to the test executable's parent directory
//! (`target/<profile>/`), or at `$LLM_NODE_BIN`; `scripts/test.sh` builds them
//! before running the tests.

pub mod hub;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Id the bundled model is served under in these tests.
pub const MODEL: &str = "smollm2";

/// Path of the bundled GGUF (`$LLM_NODE_TEST_MODEL`, else the setup script's cache).
pub fn model_path() -> String {
    if let Ok(p) = std::env::var("LLM_NODE_TEST_MODEL") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = format!("{home}/.cache/llm-node/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        std::path::Path::new(&p).is_file(),
        "bundled model missing at {p}: run scripts/setup.sh (the README's test command does)"
    );
    p
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A running node.
pub struct Node {
    child: Child,
    pub base: String,
    pub http: reqwest::blocking::Client,
    /// Log lines where the node refused to resolve a public host.
    refused: Arc<Mutex<Vec<String>>>,
    /// Closed when the node's stderr ends (every log line was read).
    log_done: Mutex<mpsc::Receiver<()>>,
}

/// What the node logs when `--loopback-only` refuses a host name
/// (`llm_node::net::REFUSED_MARK`).
const REFUSED_MARK: &str = "loopback-only: refused to resolve";

impl Node {
    /// Starts a node serving the bundled model as [`MODEL`] with 4 slots of
    /// 1024 tokens, plus `extra` arguments, and waits until it answers a chat.
    pub fn start(extra: &[&str]) -> Node {
        Node::start_with(4, extra)
    }

    /// Like [`Node::start`] with `parallel` slots.
    pub fn start_with(parallel: u32, extra: &[&str]) -> Node {
        let node = Node::spawn(parallel, extra);
        node.wait_ready(MODEL);
        node
    }

    /// Starts the node and returns once it listens (models may still load).
    pub fn spawn(parallel: u32, extra: &[&str]) -> Node {
        Node::spawn_ctx(parallel, 1024, extra)
    }

    /// [`Node::spawn`] with `ctx` tokens per slot.
    pub fn spawn_ctx(parallel: u32, ctx: u32, extra: &[&str]) -> Node {
        let parallel = parallel.to_string();
        let ctx = ctx.to_string();
        let bin = std::env::var("LLM_NODE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| bin_dir().join("llm-node"));
        let model = format!("{MODEL}={}", model_path());
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model",
            &model,
            "--ctx-size",
            &ctx,
            "--parallel",
            &parallel,
            "--threads",
            "1",
            // The fault tests stream long generations with ignore_eos.
            "--allow-ignore-eos",
        ];
        args.extend_from_slice(extra);
        // Tests never leave this machine: registry and Hub point at a closed
        // loopback port unless a test passes its own fake (flags win over env).
        let mut child = Command::new(&bin)
            .env("LLM_NODE_REGISTRY_URL", "http://127.0.0.1:9")
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("LLM_NODE_LOOPBACK_ONLY", "true")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let seen = refused.clone();
        let (log_tx, log_done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = log_tx;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(REFUSED_MARK) {
                    seen.lock().unwrap().push(line.clone());
                }
                eprintln!("{line}");
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                eprintln!("[node] {line}");
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node did not print its address");
        Node {
            child,
            refused,
            log_done: Mutex::new(log_done),
            base,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// `/admin/models` entry of `model`.
    pub fn admin_model(&self, model: &str) -> Value {
        let (_, v) = self.get("/admin/models");
        v["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == model).cloned())
            .unwrap_or(Value::Null)
    }

    /// Polls `/admin/models` until `cond` holds for `model`'s entry.
    pub fn wait_admin(&self, model: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.admin_model(model);
            if cond(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{model} never {what}: {m}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Threads and resident memory (KiB) of the node process itself.
    pub fn proc_stats(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("Threads:"), field("VmRSS:"))
    }

    /// Sends SIGTERM and returns the exit status.
    ///
    /// # Panics
    /// If the node tried to resolve a public host (see the module docs).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        let refused = self.refused_after_exit();
        std::mem::forget(self);
        assert_stayed_local(&refused);
        status
    }

    /// The node's log lines so far where it refused to resolve a host that is
    /// not loopback; taking them means the test expected them.
    pub fn take_refused_hosts(&self) -> Vec<String> {
        // Lines reach the reader thread a moment after the node writes them.
        std::thread::sleep(Duration::from_millis(200));
        std::mem::take(&mut *self.refused.lock().unwrap())
    }

    /// Like [`Node::take_refused_hosts`] once the node has exited: waits for
    /// the end of its log (briefly: a stray child could hold it open).
    fn refused_after_exit(&self) -> Vec<String> {
        let _ = self
            .log_done
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(2));
        std::mem::take(&mut *self.refused.lock().unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `/metrics` page, as text.
    pub fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .expect("request")
            .text()
            .expect("a text body")
    }

    /// Polls until `model` answers a one-token chat.
    pub fn wait_ready(&self, model: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .http
                .post(self.url("/v1/chat/completions"))
                .json(&json!({"model": model, "max_tokens": 1,
                               "messages": [{"role": "user", "content": "hi"}]}))
                .send();
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "model {model} never became ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// POSTs JSON and returns (status, body as JSON).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// POSTs raw bytes as JSON content.
    pub fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().expect("request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Streams a request and returns every `data:` payload, `[DONE]` included.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .expect("request");
        assert_eq!(r.status().as_u16(), 200, "stream status");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        BufReader::new(r)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_owned))
            .collect()
    }

    /// The child's pid (for fault injection).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            assert_stayed_local(&self.refused_after_exit());
        }
    }
}

/// Fails the test when the node tried to reach a host beyond loopback.
fn assert_stayed_local(refused: &[String]) {
    assert!(
        refused.is_empty(),
        "the node tried to resolve a host that is not loopback (tests never leave this \
         machine; point the URL at a local fake):\n{}",
        refused.join("\n")
    );
}

/// A chat request body for [`MODEL`].
pub fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

/// Concatenated `choices[0].delta.content` (or `.text`) of parsed stream chunks.
pub fn stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            let c = v["choices"].get(0)?;
            c["delta"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .map(str::to_owned)
        })
        .collect()
}
