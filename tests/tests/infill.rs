//! Fill-in-the-middle on the real bundled model: `suffix` on
//! `/v1/completions` and llama-server's `/infill`. The bundled SmolLM2 has no
//! FIM tokens, so it is refused; a copy whose GGUF names three of its tokens
//! as FIM_PRE/FIM_SUF/FIM_MID (written with gguf-py's `gguf_new_metadata.py`,
//! from what `scripts/setup-convert.sh` installs) is served, and the prompt
//! the worker evaluates is exactly `[BOS] PRE prefix SUF suffix MID`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use llm_node_tests::{model_path, Node, MODEL};
use serde_json::{json, Value};

fn convert_dir() -> PathBuf {
    let cache = std::env::var("LLM_NODE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let dir = PathBuf::from(cache).join("convert");
    assert!(
        dir.join("venv/bin/python").is_file(),
        "{} missing: run scripts/setup-convert.sh (the README's test command does)",
        dir.display()
    );
    dir
}

/// A copy of the bundled model with FIM token ids 3, 4 and 5.
fn fim_copy(out: &std::path::Path) {
    let dir = convert_dir();
    let status = Command::new(dir.join("venv/bin/python"))
        .arg(dir.join("llama.cpp/gguf-py/gguf/scripts/gguf_new_metadata.py"))
        .arg("--force")
        .args(["--special-token-by-id", "fim_pre", "3"])
        .args(["--special-token-by-id", "fim_suf", "4"])
        .args(["--special-token-by-id", "fim_mid", "5"])
        .arg(model_path())
        .arg(out)
        .env("PYTHONPATH", dir.join("llama.cpp/gguf-py"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "gguf_new_metadata failed");
}

fn n_tokens(node: &Node, model: &str, content: &str, add_special: bool) -> u64 {
    let (status, body) = node.post(
        "/tokenize",
        &json!({"model": model, "content": content, "add_special": add_special}),
    );
    assert_eq!(status, 200, "{body}");
    body["tokens"].as_array().unwrap().len() as u64
}

#[test]
fn fill_in_the_middle_builds_the_fim_prompt_and_is_refused_without_fim_tokens() {
    let tmp = std::env::temp_dir().join(format!("llm-node-infill-{}.gguf", std::process::id()));
    fim_copy(&tmp);
    let fim = format!("smol-fim={}", tmp.display());
    let node = Node::start(&["--model", &fim]);
    let (prefix, suffix) = ("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n");

    // Without FIM tokens: a 400 that says why, on both routes.
    let (status, err) = node.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": prefix, "suffix": suffix, "max_tokens": 4}),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fill-in-the-middle"),
        "{err}"
    );
    let (status, _) = node.post(
        "/infill",
        &json!({"model": MODEL, "input_prefix": prefix, "input_suffix": suffix}),
    );
    assert_eq!(status, 400);

    // With them: the prompt is [BOS] PRE prefix SUF suffix MID.
    let want = n_tokens(&node, "smol-fim", "", true)
        + n_tokens(&node, "smol-fim", prefix, false)
        + n_tokens(&node, "smol-fim", suffix, false)
        + 3;
    let (status, body) = node.post(
        "/v1/completions",
        &json!({"model": "smol-fim", "prompt": prefix, "suffix": suffix,
                "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], want, "{body}");
    assert!(body["choices"][0]["text"].is_string());

    let (status, body) = node.post(
        "/infill",
        &json!({"model": "smol-fim", "input_prefix": prefix, "input_suffix": suffix,
                "n_predict": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tokens_evaluated"], want, "{body}");
    assert!(body["content"].is_string(), "{body}");
    assert!(body["tokens_predicted"].as_u64().unwrap() <= 4, "{body}");
    assert_eq!(body["stop"], true);
    assert!(["eos", "limit"].contains(&body["stop_type"].as_str().unwrap()));
    let (status, err) = node.post(
        "/infill",
        &json!({"model": "smol-fim", "input_prefix": prefix, "stream": true}),
    );
    assert_eq!(
        (status, &err["error"]["param"]),
        (400, &Value::from("stream"))
    );
    node.terminate();
    let _ = std::fs::remove_file(&tmp);
}
