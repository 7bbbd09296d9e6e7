//! The models configuration file on the real worker and the bundled model:
//! per-model context, slots and `max_tokens` honoured by llama.cpp, aliases,
//! a SIGHUP reload that restarts only the changed model, and a draft model.

use llm_node_tests::{chat, model_path, Node, MODEL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// A second model on the same GGUF, `small`, with its own settings; the
/// harness's `smollm2` stays on the flags (1024 tokens × 4 slots).
fn config(ctx: u32) -> String {
    format!(
        r#"
[models.small]
path = "{}"
aliases = ["tiny"]
ctx_size = {ctx}
parallel = 2
max_tokens = 5
max_tokens_limit = 8
"#,
        model_path()
    )
}

#[test]
fn per_model_ctx_parallel_and_max_tokens_are_honoured_and_sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models.toml");
    std::fs::write(&file, config(512)).unwrap();
    let flag = format!("--models-config={}", file.display());
    let node = Node::start(&[&flag]);
    node.wait_ready("small");

    let small = node.admin_model("small");
    assert_eq!(
        (small["context"].clone(), small["parallel"].clone()),
        (json!(512), json!(2)),
        "{small}"
    );
    assert_eq!(small["aliases"], json!(["tiny"]));
    let flags = node.admin_model(MODEL);
    assert_eq!(
        (flags["context"].clone(), flags["parallel"].clone()),
        (json!(1024), json!(4)),
        "{flags}"
    );

    // No max_tokens: the model's default (5); more than its maximum: clamped to 8.
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(
            "Tell me a long story.",
            json!({"model": "tiny", "ignore_eos": true}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "small");
    assert_eq!(v["usage"]["completion_tokens"], 5, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(
            "Tell me a long story.",
            json!({"model": "small", "max_tokens": 100, "ignore_eos": true}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    // Ollama's API: no num_predict → the default too.
    let (status, v) = node.post(
        "/api/generate",
        &json!({"model": "tiny", "prompt": "Tell me a long story.", "stream": false}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["eval_count"].as_u64().unwrap() <= 5, "{v}");
    // A prompt longer than small's 512-token slot is refused there, not on smollm2.
    let long = "word ".repeat(700);
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(&long, json!({"model": "small", "max_tokens": 1})),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(&long, json!({"model": MODEL, "max_tokens": 1})),
    );
    assert_eq!(status, 200, "{v}");

    // SIGHUP: small's context changes (restart), smollm2 is untouched.
    let (small_pid, flags_pid) = (small["pid"].clone(), flags["pid"].clone());
    std::fs::write(&file, config(256)).unwrap();
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGHUP).unwrap();
    let small = node.wait_admin("small", "restarted with 256 tokens", |m| {
        m["state"] == "ready" && m["context"] == 256
    });
    assert_ne!(small["pid"], small_pid);
    assert_eq!(node.admin_model(MODEL)["pid"], flags_pid);
    // A bad file on SIGHUP changes nothing.
    std::fs::write(&file, "[models.small]\nparallel = 0\n").unwrap();
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGHUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat("Hi", json!({"model": "tiny", "max_tokens": 1})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(node.admin_model("small")["pid"], small["pid"]);
}

/// The value of `family{model="NAME"}` on a `/metrics` page.
fn gauge(page: &str, family: &str, model: &str) -> Option<f64> {
    let prefix = format!("{family}{{model=\"{model}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_draft_model_from_the_file_drafts_and_its_drafts_are_accepted() {
    // `drafted` drafts with a second copy of its own GGUF (the only
    // generative model the tests have), so its greedy drafts are what it
    // then samples: drafted and accepted tokens both show on /metrics.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models.toml");
    let text = format!(
        "[models.drafted]\npath = \"{m}\"\ndraft_model = \"{m}\"\nparallel = 1\nctx_size = 1024\n",
        m = model_path()
    );
    std::fs::write(&file, text).unwrap();
    let flag = format!("--models-config={}", file.display());
    let node = Node::start(&[&flag]);
    node.wait_ready("drafted");
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(
            "List the numbers from one to twenty in words.",
            json!({"model": "drafted", "temperature": 0, "max_tokens": 48}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    // The worker reports its counts with its liveness answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = node.metrics();
        let drafted = gauge(&page, "llm_node_spec_draft_tokens", "drafted").unwrap_or(0.0);
        let accepted = gauge(&page, "llm_node_spec_accepted_tokens", "drafted").unwrap_or(0.0);
        if drafted > 0.0 && accepted > 0.0 {
            assert!(accepted <= drafted, "{accepted} of {drafted}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no drafts reported: drafted {drafted}, accepted {accepted}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
