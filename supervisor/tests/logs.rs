//! The `llm-node` binary's logs with a fake worker: the JSON log file
//! (`--log-file`), the access line of each request, the request id in the
//! lines of its request, and the level changed at run time with
//! `llm-node log-level` and `PUT /admin/log-level`.

mod common;
use common::fake_worker;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Spawned {
    child: Child,
    base: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Starts the binary with JSON logs to `dir/logs/node.*` and `RUST_LOG=warn`.
fn spawn(dir: &Path, extra: &[&str]) -> Spawned {
    let model = dir.join("m.gguf");
    std::fs::write(&model, "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-node"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("LLM_NODE_LOOPBACK_ONLY", "true")
        .args([
            "--host=127.0.0.1",
            "--port=0",
            "--log-format=json",
            "--registry-url=http://127.0.0.1:9",
            "--hf-endpoint=http://127.0.0.1:9",
            "--no-ollama-models",
        ])
        .arg(format!("--store-dir={}", dir.join("store").display()))
        .arg(format!("--model=m={}", model.display()))
        .arg(format!("--worker-bin={}", fake_worker().display()))
        .arg(format!("--log-file={}", dir.join("logs/node").display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let base = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    Spawned { child, base }
}

/// Every JSON line of the log files in `dir/logs`.
fn log_lines(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Waits up to 5 s for a log line that `pred` accepts.
fn wait_line(dir: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = log_lines(dir).into_iter().find(&pred) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} line in {:#?}",
            log_lines(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chat(http: &reqwest::blocking::Client, base: &str, id: &str) -> u16 {
    let body =
        json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    http.post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", id)
        .json(&body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn is_access(line: &Value, id: &str) -> bool {
    line["target"] == "access" && line["fields"]["request_id"] == id
}

#[test]
fn the_log_level_switched_at_run_time_changes_what_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(dir.path(), &[]);
    let http = reqwest::blocking::Client::new();
    // The model may still be loading: the request waits for it.
    assert_eq!(chat(&http, &node.base, "req-quiet"), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !log_lines(dir.path())
            .iter()
            .any(|l| is_access(l, "req-quiet")),
        "access lines are info, the level is warn"
    );

    // The CLI verb, then the admin route.
    let out = Command::new(env!("CARGO_BIN_EXE_llm-node"))
        .env_clear()
        .args(["log-level", "info", "--url", &node.base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "info");
    assert_eq!(chat(&http, &node.base, "req-loud"), 200);
    let line = wait_line(dir.path(), "access", |l| is_access(l, "req-loud"));
    let f = &line["fields"];
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        (f["method"].as_str(), f["path"].as_str()),
        (Some("POST"), Some("/v1/chat/completions"))
    );
    assert_eq!(f["status"], 200);
    assert_eq!(f["model"], "m");
    assert_eq!(f["completion_tokens"], 3);
    assert!(f["prompt_tokens"].as_u64().unwrap() > 0, "{line}");
    assert!(f["ttft_ms"].as_f64().is_some(), "{line}");
    assert!(
        f["duration_ms"].as_f64().unwrap() >= f["ttft_ms"].as_f64().unwrap(),
        "{line}"
    );
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["trace_id"].as_str().map(str::len), Some(32), "{line}");

    let r = http
        .put(format!("{}/admin/log-level", node.base))
        .json(&json!({"level": "info,llm_node=loud"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["param"], "level", "{body}");
    let r = http
        .put(format!("{}/admin/log-level", node.base))
        .json(&json!({"level": "error"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(chat(&http, &node.base, "req-quiet-again"), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!log_lines(dir.path())
        .iter()
        .any(|l| is_access(l, "req-quiet-again")));
}

#[test]
fn the_request_id_names_the_supervisors_lines_of_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(dir.path(), &["--api-key=k1"]);
    let http = reqwest::blocking::Client::new();
    let r = http
        .put(format!("{}/admin/log-level", node.base))
        .json(&json!({"level": "info"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Refused (no key): the refusal is logged inside the request's span.
    assert_eq!(chat(&http, &node.base, "req-refused"), 401);
    let refusal = wait_line(dir.path(), "refusal", |l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused"))
    });
    assert_eq!(refusal["span"]["id"], "req-refused", "{refusal}");
    let access = wait_line(dir.path(), "access", |l| is_access(l, "req-refused"));
    assert_eq!(access["fields"]["status"], 401);
    // Every line that names the request names it as its id.
    for line in log_lines(dir.path()) {
        let text = line.to_string();
        if text.contains("req-refused") {
            let id = line["span"]["id"]
                .as_str()
                .or(line["fields"]["request_id"].as_str());
            assert_eq!(id, Some("req-refused"), "{line}");
        }
    }
}
