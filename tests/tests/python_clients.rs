//! Real client libraries against the real node on the bundled model: the
//! unmodified `openai` Python SDK runs a tool loop, `parse()` with a Pydantic
//! model, logprobs and 22 `response_format` JSON schemas, each answer checked
//! by the `jsonschema` validator (tests/python/openai_chat.py).
//!
//! The Python packages live in the virtual environment `scripts/setup.sh`
//! makes in `$LLM_NODE_CACHE/venv` (default `~/.cache/llm-node/venv`).

use std::process::Command;

use llm_node_tests::{Node, MODEL};

fn venv_python() -> String {
    let cache = std::env::var("LLM_NODE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = format!("{cache}/venv/bin/python");
    assert!(
        std::path::Path::new(&python).is_file(),
        "no Python client environment at {python}: run scripts/setup.sh (the README's test command does)"
    );
    python
}

#[test]
fn the_openai_sdk_runs_tool_loops_structured_output_and_logprobs() {
    let python = venv_python();
    let node = Node::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_chat.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("{}/v1", node.base))
        .arg(MODEL)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "openai_chat.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
