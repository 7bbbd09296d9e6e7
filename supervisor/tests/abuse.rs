//! The fault and abuse suite on whole nodes with fake workers
//! (`examples/fake_worker.rs`): a worker that exits, hangs, sends garbage or
//! floods at each stage of the protocol, and clients that read slowly or hang
//! up at every phase of a request.
//!
//! Each suite prints a count table (see it with `--nocapture`) and asserts
//! that every count is 0:
//! - **unexpected 5xx**: a 5xx other than the documented 503 of a worker that
//!   died or a model that is restarting;
//! - **panics**: panics anywhere in this process (the node runs in it), counted
//!   by a panic hook;
//! - **node deaths**: the node stopped answering `GET /admin/models`;
//! - **wedged models**: a model not serving a normal request again within
//!   [`BOUND`] of its fault (after an admin restart where the policy parks it),
//!   or not in the state the restart policy documents (docs/operations.md);
//! - **lost requests**: a request with no terminal answer within [`BOUND`]
//!   (a status and, for a stream, its `[DONE]`).
//!
//! Time is real, for the reason supervision.rs gives.

mod common;
use common::fake_worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use clap::Parser;
use llm_node::{Args, Node};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any request may take to get its terminal answer, and a faulted
/// model to serve again.
const BOUND: Duration = Duration::from_secs(15);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on every thread of this process, then reports them as usual.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// The suite's counts; all must be 0.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    five_xx: usize,
    panics: usize,
    deaths: usize,
    wedged: usize,
    lost: usize,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.five_xx += o.five_xx;
        self.panics += o.panics;
        self.deaths += o.deaths;
        self.wedged += o.wedged;
        self.lost += o.lost;
    }

    fn row(&self, name: &str, seen: &str) -> String {
        format!(
            "| {name:<24} | {:>4} | {:>6} | {:>6} | {:>6} | {:>4} | {seen}",
            self.five_xx, self.panics, self.deaths, self.wedged, self.lost
        )
    }

    fn header() -> String {
        "| case                     | 5xx  | panics | deaths | wedged | lost | seen\n\
         |--------------------------|------|--------|--------|--------|------|-----"
            .to_string()
    }
}

struct TestNode {
    node: Node,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl TestNode {
    /// A node serving `models` (`(name, fault flags)`) through a symlink to
    /// the fake worker in its own directory, so that `armed_file` is its own.
    async fn start(models: &[(&str, &str)], extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake_worker");
        std::os::unix::fs::symlink(fake_worker(), &bin).unwrap();
        let mut argv: Vec<String> = vec![
            "llm-node".into(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            // Never resolve a public host (see `llm_node::net`).
            "--loopback-only".into(),
        ];
        for (name, flags) in models {
            let path = dir.path().join(format!("{name}.gguf"));
            std::fs::write(&path, flags).unwrap();
            argv.push(format!("--model={name}={}", path.display()));
        }
        argv.push(format!("--worker-bin={}", bin.display()));
        argv.push("--shutdown-timeout-secs=2".into());
        argv.push("--restart-base-ms=20".into());
        argv.push("--restart-max-ms=200".into());
        argv.push("--registry-url=http://127.0.0.1:9".into());
        argv.push("--hf-endpoint=http://127.0.0.1:9".into());
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        argv.push(format!("--models-dir={}", store.display()));
        argv.extend(extra.iter().map(|s| s.to_string()));
        let node = Node::start(Args::try_parse_from(argv).unwrap())
            .await
            .unwrap();
        let http = reqwest::Client::builder().timeout(BOUND).build().unwrap();
        TestNode { node, dir, http }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.addr())
    }

    /// The armed file of this node's fake worker (flags before `Init`).
    fn armed_file(&self) -> PathBuf {
        self.dir.path().join("fake_worker.flags")
    }

    fn model_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.gguf"))
    }

    /// Every model's admin view, or `None` when the node does not answer.
    async fn models(&self) -> Option<Vec<Value>> {
        let r = self.http.get(self.url("/admin/models")).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        v["models"].as_array().cloned()
    }

    async fn model(&self, name: &str) -> Value {
        let models = self.models().await.unwrap_or_default();
        models
            .into_iter()
            .find(|m| m["id"] == name)
            .unwrap_or(Value::Null)
    }

    /// Polls until `cond` holds for `name`, for at most [`BOUND`].
    async fn wait_for(&self, name: &str, cond: impl Fn(&Value) -> bool) -> Result<Value, Value> {
        let deadline = Instant::now() + BOUND;
        loop {
            let m = self.model(name).await;
            if cond(&m) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                return Err(m);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One request to `path`; the outcome as its status (0: no terminal
    /// answer within [`BOUND`]) and body. A stream's body must end with
    /// `[DONE]`, or it counts as unanswered.
    async fn ask(&self, path: &str, model: &str, stream: bool, max_tokens: u32) -> (u16, String) {
        let body = if path.ends_with("chat/completions") {
            json!({"model": model, "max_tokens": max_tokens, "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": model, "max_tokens": max_tokens, "stream": stream, "prompt": "hi"})
        };
        let Ok(r) = self.http.post(self.url(path)).json(&body).send().await else {
            return (0, String::new());
        };
        let status = r.status().as_u16();
        let Ok(text) = r.text().await else {
            return (0, String::new());
        };
        if stream && status == 200 && !text.trim_end().ends_with("data: [DONE]") {
            return (0, text);
        }
        (status, text)
    }

    /// Waits until `name` serves a normal request, for at most [`BOUND`].
    async fn serves_again(&self, name: &str) -> bool {
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            if self.ask("/v1/chat/completions", name, false, 2).await.0 == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Counts the outcome of one request: a 5xx other than 503 is unexpected,
/// as is any 5xx where `ok_503` is false; status 0 is a lost request.
fn judge(c: &mut Counts, (status, body): &(u16, String), ok_503: bool, what: &str) {
    match status {
        0 => {
            eprintln!("LOST {what}: {body:.200}");
            c.lost += 1;
        }
        503 if ok_503 => {}
        s if *s >= 500 => {
            eprintln!("UNEXPECTED {s} {what}: {body:.200}");
            c.five_xx += 1;
        }
        _ => {}
    }
}

const STAGES: [&str; 7] = [
    "connect",
    "bootstrap",
    "init",
    "ready",
    "request",
    "stream",
    "finished",
];
const FAULTS: [&str; 4] = ["exit", "hang", "garbage", "flood"];

/// Whether the fault means anything at the stage: there is no channel to
/// send garbage on before connecting, nor one to flood before `Init`.
fn applies(fault: &str, stage: &str) -> bool {
    !matches!(
        (fault, stage),
        ("garbage", "connect") | ("flood", "connect" | "bootstrap")
    )
}

/// What a parked model's `detail` must say for a start failure.
fn reason(fault: &str, stage: &str) -> &'static str {
    match (fault, stage) {
        ("exit", _) => "exited before it was ready",
        ("hang", _) => "not ready after",
        ("garbage", "bootstrap") => "ipc handshake failed: accept",
        _ => "broke the handshake",
    }
}

/// One worker fault on a node serving `victim` and `other`; `other` serves
/// a request every few ms throughout and must never see an error.
async fn stage_case(fault: &str, stage: &str) -> (Counts, String) {
    let panics = PANICS.load(Ordering::SeqCst);
    let before_ready = matches!(stage, "connect" | "bootstrap" | "init");
    let flags = format!("{fault}_at={stage}&flood_n=20000");
    // Before Ready: every start fails, and the model is parked (after 2).
    // After Ready: once, then the worker is healthy again.
    let (victim_flags, armed) = match stage {
        "connect" | "bootstrap" => (String::new(), Some(flags)),
        "init" => (flags, None),
        _ => (format!("{flags}&once"), None),
    };
    let t = TestNode::start(
        &[("other", "token_ms=2"), ("victim", "")],
        &[
            "--preload=other",
            "--ready-timeout-secs=1",
            "--crash-loop-max=2",
            "--liveness-interval-ms=100",
            "--liveness-timeout-ms=1000",
        ],
    )
    .await;
    let mut c = Counts::default();
    let other_ok = t.wait_for("other", |m| m["state"] == "ready").await;
    assert!(other_ok.is_ok(), "other never ready: {other_ok:?}");
    std::fs::write(t.model_file("victim"), &victim_flags).unwrap();
    if let Some(armed) = &armed {
        std::fs::write(t.armed_file(), armed).unwrap();
    }

    // The other model's steady load, until the case is over.
    let stop = tokio::sync::watch::channel(false);
    let other = {
        let (http, url, mut stop) = (t.http.clone(), t.url(""), stop.1.clone());
        actix_rt::spawn(async move {
            let mut errors = Vec::new();
            let probe = TestNode::probe(http, url);
            while !*stop.borrow_and_update() {
                let r = probe("/v1/chat/completions", true).await;
                if r.0 != 200 {
                    errors.push(r);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        })
    };

    // Load the victim: the first request both starts it and meets the fault.
    let requests = [
        ("/v1/chat/completions", false),
        ("/v1/chat/completions", true),
        ("/v1/completions", true),
    ];
    let answers = futures_util::future::join_all(
        requests
            .iter()
            .map(|(path, stream)| t.ask(path, "victim", *stream, 8)),
    )
    .await;
    for (answer, (path, stream)) in answers.iter().zip(requests) {
        judge(
            &mut c,
            answer,
            true,
            &format!("{fault}@{stage} {path} stream={stream}"),
        );
    }
    // Requests after the fault fired, while the model recovers.
    let answer = t.ask("/v1/chat/completions", "victim", true, 4).await;
    judge(&mut c, &answer, true, &format!("{fault}@{stage} second"));
    let mut seen: Vec<String> = answers
        .iter()
        .chain([&answer])
        .map(|(s, body)| {
            let error = body.contains("\"error\"");
            format!("{s}{}", if error { "+error" } else { "" })
        })
        .collect();
    // A flood of a real request's pieces reaches its client.
    if (fault, stage) == ("flood", "stream")
        && !answers
            .iter()
            .any(|(_, body)| body.contains(&"x".repeat(20_000)))
    {
        eprintln!("WEDGED flood@stream: the flood never reached the client");
        c.wedged += 1;
    }

    if before_ready {
        // The restart policy: a model that never got Ready is parked, with the reason.
        match t.wait_for("victim", |m| m["state"] == "failed").await {
            Ok(m)
                if m["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(reason(fault, stage)) =>
            {
                let detail = m["detail"].as_str().unwrap_or_default();
                let last = detail.split("last: ").nth(1).unwrap_or(detail);
                seen.push(format!("parked: {:.60}", last.replace('\n', " ")));
            }
            other => {
                eprintln!("WEDGED {fault}@{stage}: not parked with the reason: {other:?}");
                c.wedged += 1;
            }
        }
        let _ = std::fs::remove_file(t.armed_file());
        std::fs::write(t.model_file("victim"), "").unwrap();
        let r = t
            .http
            .post(t.url("/admin/models/victim/restart"))
            .send()
            .await;
        if r.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
            eprintln!("WEDGED {fault}@{stage}: the admin restart failed");
            c.wedged += 1;
        }
    } else {
        // `once` blanks the model file as the fault fires.
        let fired = std::fs::read_to_string(t.model_file("victim")).unwrap();
        assert!(fired.is_empty(), "{fault}@{stage} never fired");
    }
    if !before_ready && fault != "flood" {
        // A fault after Ready: the worker is killed and restarted, never parked.
        let restarted = t
            .wait_for("victim", |m| {
                m["state"] == "ready" && m["restarts"].as_u64() >= Some(1)
            })
            .await;
        match restarted {
            // A worker that sent garbage lives on silently: the kill that
            // ends it is reported as the protocol breach it was.
            Ok(m)
                if fault == "garbage"
                    && !m["last_exit"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("killed: broke the protocol")) =>
            {
                eprintln!("MISREPORTED {fault}@{stage}: last_exit {}", m["last_exit"]);
                c.wedged += 1;
            }
            Ok(m) => seen.push(format!("restarted: {}", m["last_exit"])),
            Err(m) => {
                eprintln!("WEDGED {fault}@{stage}: not restarted: {m}");
                c.wedged += 1;
            }
        }
    }
    if !t.serves_again("victim").await {
        eprintln!("WEDGED {fault}@{stage}: victim does not serve again");
        c.wedged += 1;
    }
    if t.models().await.is_none() {
        c.deaths += 1;
    }
    stop.0.send_replace(true);
    let other_errors = other.await.unwrap();
    if !other_errors.is_empty() {
        eprintln!(
            "OTHER MODEL {fault}@{stage}: {} errors, first {:?}",
            other_errors.len(),
            other_errors[0]
        );
        c.five_xx += other_errors.len();
    }
    if let Ok(m) = t.wait_for("other", |m| m["restarts"] == 0).await {
        assert_eq!(m["state"], "ready");
    } else {
        eprintln!("OTHER MODEL {fault}@{stage} was restarted");
        c.wedged += 1;
    }
    t.node.stop().await;
    c.panics = PANICS.load(Ordering::SeqCst) - panics;
    (c, seen.join(" "))
}

impl TestNode {
    /// A cheap, cloneable way to send a request from a spawned task.
    fn probe(
        http: reqwest::Client,
        base: String,
    ) -> impl Fn(&'static str, bool) -> futures_util::future::BoxFuture<'static, (u16, String)>
    {
        move |path, stream| {
            let (http, url) = (http.clone(), format!("{base}{path}"));
            Box::pin(async move {
                let body = json!({"model": "other", "max_tokens": 4, "stream": stream,
                                  "messages": [{"role": "user", "content": "hi"}]});
                let Ok(r) = http.post(url).json(&body).send().await else {
                    return (0, String::new());
                };
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if stream && status == 200 && !text.trim_end().ends_with("data: [DONE]") {
                    return (0, text);
                }
                (status, text)
            })
        }
    }
}

/// Every fault at every stage of the protocol (module docs of the fake
/// worker): start failures are reported and parked, faults after Ready fail
/// the in-flight requests at once and restart the worker, the other model
/// never notices, and nothing panics.
#[actix_rt::test]
async fn worker_faults_at_every_protocol_stage_leave_no_5xx_panic_death_wedge_or_lost_request() {
    count_panics();
    let t0 = Instant::now();
    let cases: Vec<(&str, &str)> = STAGES
        .iter()
        .flat_map(|s| FAULTS.iter().map(move |f| (*f, *s)))
        .filter(|(f, s)| applies(f, s))
        .collect();
    let mut rows = Vec::new();
    let mut total = Counts::default();
    // A few at a time: each case is a node with two workers, on a small machine.
    for chunk in cases.chunks(4) {
        let counts =
            futures_util::future::join_all(chunk.iter().map(|(f, s)| stage_case(f, s))).await;
        for ((f, s), (c, seen)) in chunk.iter().zip(counts) {
            rows.push(c.row(&format!("{f} at {s}"), &seen));
            total.add(c);
        }
    }
    // Panics are counted per process, so concurrent cases share theirs.
    total.panics = PANICS.load(Ordering::SeqCst);
    println!(
        "\nworker faults by stage ({} cases, {:.1} s)\n{}\n{}\n{}",
        cases.len(),
        t0.elapsed().as_secs_f64(),
        Counts::header(),
        rows.join("\n"),
        total.row("TOTAL", "")
    );
    assert_eq!(total, Counts::default(), "see the table above");
}

/// A raw HTTP request for a streamed generation of `max_tokens` tokens.
fn raw_stream_request(path: &str, max_tokens: u32) -> Vec<u8> {
    let body = if path.ends_with("chat/completions") {
        json!({"model": "m", "max_tokens": max_tokens, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]})
    } else if path.starts_with("/api/") {
        json!({"model": "m", "stream": true, "prompt": "hi",
               "messages": [{"role": "user", "content": "hi"}],
               "options": {"num_predict": max_tokens}})
    } else {
        json!({"model": "m", "max_tokens": max_tokens, "stream": true, "prompt": "hi"})
    }
    .to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status of a response whose first bytes are `head`, if it has one yet.
fn status_of(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(9..12)?).ok()?;
    text.parse().ok()
}

/// How a client misbehaves on one request.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Reads `n` bytes a second for `secs`, then leaves.
    Slow { n: usize, secs: u64 },
    /// Reads nothing for `secs`, then leaves.
    Silent { secs: u64 },
    /// Hangs up after this many bytes of the request.
    HangUpAfter(usize),
    /// Sends the request and hangs up before reading anything.
    HangUpBeforeAnswer,
    /// Reads the first bytes of the stream, then hangs up.
    HangUpMidStream,
}

/// Plays `client` against `addr`; the status it saw, if any.
async fn play(addr: std::net::SocketAddr, path: &str, client: Client) -> Option<u16> {
    let request = raw_stream_request(path, 100_000);
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut head = vec![0u8; 64];
    match client {
        Client::HangUpAfter(n) => {
            let _ = sock.write_all(&request[..n.min(request.len())]).await;
            None
        }
        Client::HangUpBeforeAnswer => {
            let _ = sock.write_all(&request).await;
            None
        }
        Client::HangUpMidStream => {
            sock.write_all(&request).await.unwrap();
            let n = tokio::time::timeout(BOUND, sock.read(&mut head))
                .await
                .ok()?
                .ok()?;
            status_of(&head[..n])
        }
        Client::Silent { secs } => {
            sock.write_all(&request).await.unwrap();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let n = sock.read(&mut head).await.ok()?;
            status_of(&head[..n])
        }
        Client::Slow { n, secs } => {
            sock.write_all(&request).await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..secs * 4 {
                let mut buf = vec![0u8; n.div_ceil(4).max(1)];
                if let Ok(Ok(k)) =
                    tokio::time::timeout(Duration::from_millis(250), sock.read(&mut buf)).await
                {
                    seen.extend_from_slice(&buf[..k]);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            status_of(&seen)
        }
    }
}

/// Slow readers and clients that hang up at every phase, on every streaming
/// route: afterwards nothing is in flight, the model serves, and no
/// well-formed request got a 5xx.
#[actix_rt::test]
async fn slow_and_disconnecting_clients_leave_the_node_healthy_and_nothing_in_flight() {
    count_panics();
    let panics = PANICS.load(Ordering::SeqCst);
    let t0 = Instant::now();
    let t = TestNode::start(&[("m", "token_ms=1")], &["--body-timeout-secs=2"]).await;
    t.wait_for("m", |m| m["state"] == "ready").await.unwrap();
    let routes = ["/v1/chat/completions", "/v1/completions"];
    let request_len = raw_stream_request(routes[0], 100_000).len();
    let clients = [
        Client::Slow { n: 4, secs: 2 },
        Client::Silent { secs: 2 },
        Client::HangUpAfter(20),
        Client::HangUpAfter(request_len - 10),
        Client::HangUpBeforeAnswer,
        Client::HangUpMidStream,
    ];
    let mut c = Counts::default();
    let mut rows = Vec::new();
    for client in clients {
        let statuses = futures_util::future::join_all(
            routes.iter().map(|path| play(t.node.addr(), path, client)),
        )
        .await;
        let mut row = Counts::default();
        for s in statuses.into_iter().flatten() {
            if s >= 500 {
                eprintln!("UNEXPECTED {s} for {client:?}");
                row.five_xx += 1;
            }
        }
        // Once the client has left, its generation is cancelled.
        if let Err(m) = t.wait_for("m", |m| m["in_flight"] == 0).await {
            eprintln!("LOST {client:?}: still in flight: {m}");
            row.lost += 1;
        }
        if !t.serves_again("m").await {
            row.wedged += 1;
        }
        if t.models().await.is_none() {
            row.deaths += 1;
        }
        rows.push(row.row(&format!("{client:?}"), ""));
        c.add(row);
    }
    // Routes this node does not have are 404s, not 5xx.
    for path in ["/api/chat", "/api/generate"] {
        if let Some(s) = play(t.node.addr(), path, Client::HangUpMidStream).await {
            if s >= 500 {
                c.five_xx += 1;
            }
        }
    }
    c.panics = PANICS.load(Ordering::SeqCst) - panics;
    println!(
        "\nslow and disconnecting clients ({:.1} s)\n{}\n{}\n{}",
        t0.elapsed().as_secs_f64(),
        Counts::header(),
        rows.join("\n"),
        c.row("TOTAL", "")
    );
    t.node.stop().await;
    assert_eq!(c, Counts::default(), "see the table above");
}
