//! Real client libraries against the real node on the bundled model: the
//! unmodified `openai` Python SDK runs a tool loop, `parse()` with a Pydantic
//! model, logprobs and 22 `response_format` JSON schemas, each answer checked
//! by the `jsonschema` validator (tests/python/openai_chat.py); and it streams
//! `anthropic:` and `google:` models through the node in front of a loopback
//! fake of both providers (tests/python/openai_cloud.py); and the unmodified
//! `ollama` client chats, generates, calls a tool and validates a Pydantic
//! `format` through `/api/chat` and `/api/generate` (tests/python/ollama_chat.py);
//! and the `ollama` client manages and embeds models (tests/python/ollama_models.py).
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

/// Runs `tests/python/{script}` with `args` in the test venv and fails the
/// test unless it exits 0 having printed `all checks passed`.
fn run_script(script: &str, args: &[&str]) {
    let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(venv_python())
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn the_openai_sdk_runs_tool_loops_structured_output_and_logprobs() {
    let node = Node::start(&[]);
    run_script("openai_chat.py", &[&format!("{}/v1", node.base), MODEL]);
}

#[test]
fn the_ollama_client_chats_generates_calls_tools_and_parses_structured_output() {
    let node = Node::start(&[]);
    run_script("ollama_chat.py", &[&node.base, MODEL]);
}

/// A fake of Anthropic's Messages API and Gemini's generateContent on one
/// loopback port, answering with the providers' documented shapes (text, or a
/// call of `get_weather` when the request offers tools), streamed (SSE) or
/// whole. One request per connection (`Connection: close`).
fn fake_providers() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn);
            let (mut line, mut path, mut length) = (String::new(), String::new(), 0usize);
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if path.is_empty() {
                    path = line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let tools = request.get("tools").is_some();
            let (kind, answer) = if path.starts_with("/v1/messages") {
                anthropic_answer(request["stream"] == true, tools)
            } else if path.contains(":batchEmbedContents") {
                gemini_embeddings(&request)
            } else {
                gemini_answer(path.contains("streamGenerateContent"), tools)
            };
            let mut conn = reader.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\nconnection: close\r\n\r\n{answer}"
            );
        }
    });
    url
}

fn anthropic_answer(stream: bool, tool: bool) -> (&'static str, String) {
    use serde_json::json;
    if !stream {
        let content = match tool {
            true => json!([{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                            "name": "get_weather", "input": {"location": "San Francisco, CA"}}]),
            false => json!([{"type": "text", "text": "Hello! How can I help?"}]),
        };
        let stop = if tool { "tool_use" } else { "end_turn" };
        let body = json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5", "content": content,
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 12}});
        return ("application/json", body.to_string());
    }
    let event = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = event(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant",
        "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    );
    let (block, deltas, stop) = match tool {
        true => (
            json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                   "name": "get_weather", "input": {}}),
            vec![
                json!({"type": "input_json_delta", "partial_json": "{\"location\":"}),
                json!({"type": "input_json_delta", "partial_json": " \"San Francisco, CA\"}"}),
            ],
            "tool_use",
        ),
        false => (
            json!({"type": "text", "text": ""}),
            vec![
                json!({"type": "text_delta", "text": "Hello!"}),
                json!({"type": "text_delta", "text": " How can I help?"}),
            ],
            "end_turn",
        ),
    };
    out += &event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": block}),
    );
    out += &event("ping", json!({"type": "ping"}));
    for delta in deltas {
        out += &event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        );
    }
    out += &event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    out += &event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}}),
    );
    out += &event("message_stop", json!({"type": "message_stop"}));
    ("text/event-stream", out)
}

fn gemini_answer(stream: bool, tool: bool) -> (&'static str, String) {
    use serde_json::json;
    let chunk = |parts: serde_json::Value, finish: Option<&str>, out_tokens: u32| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        json!({"candidates": [candidate], "usageMetadata": {"promptTokenCount": 8,
            "candidatesTokenCount": out_tokens, "totalTokenCount": 8 + out_tokens},
            "modelVersion": "gemini-2.0-flash"})
    };
    let chunks = match (tool, stream) {
        (true, _) => vec![chunk(
            json!([{"functionCall": {"name": "get_weather",
                                     "args": {"location": "San Francisco, CA"}}}]),
            Some("STOP"),
            7,
        )],
        (false, true) => vec![
            chunk(json!([{"text": "The sky is blue"}]), None, 4),
            chunk(
                json!([{"text": " because of Rayleigh scattering."}]),
                Some("STOP"),
                10,
            ),
        ],
        (false, false) => vec![chunk(
            json!([{"text": "The sky is blue because of Rayleigh scattering."}]),
            Some("STOP"),
            10,
        )],
    };
    match stream {
        true => (
            "text/event-stream",
            chunks
                .iter()
                .map(|c| format!("data: {c}\r\n\r\n"))
                .collect(),
        ),
        false => ("application/json", chunks[0].to_string()),
    }
}

/// Gemini's `batchEmbedContents` answer: per request, `outputDimensionality`
/// values (default 4) of text length + index + first byte / 256.
fn gemini_embeddings(request: &serde_json::Value) -> (&'static str, String) {
    let embeddings: Vec<serde_json::Value> = request["requests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let text = r["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let n = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
            let first = f64::from(text.bytes().next().unwrap_or(0)) / 256.0;
            let values: Vec<f64> = (0..n).map(|i| (text.len() + i) as f64 + first).collect();
            serde_json::json!({ "values": values })
        })
        .collect();
    (
        "application/json",
        serde_json::json!({ "embeddings": embeddings }).to_string(),
    )
}

#[test]
fn the_openai_sdk_streams_anthropic_and_google_models_through_the_node() {
    let fake = fake_providers();
    let node = Node::start(&[
        "--anthropic-base-url",
        &fake,
        "--anthropic-api-key",
        "sk-ant-test",
        "--google-base-url",
        &fake,
        "--google-api-key",
        "AIza-test",
    ]);
    run_script("openai_cloud.py", &[&format!("{}/v1", node.base)]);
}

/// The `ollama` Python client's model calls against a real node: pull (with
/// progress, `insecure=True`, from a plain-HTTP fake registry the script runs
/// on loopback), list, show, copy, delete, version, embed (batch and
/// `dimensions`), the older embeddings route, and ps (tests/python/ollama_models.py).
#[test]
fn the_ollama_client_lists_shows_pulls_copies_deletes_and_embeds() {
    let store = std::env::temp_dir().join(format!("llm-node-ollama-py-{}", std::process::id()));
    let store_dir = store.display().to_string();
    let node = Node::start(&["--store-dir", &store_dir, "--no-ollama-models"]);
    run_script(
        "ollama_models.py",
        &[&node.base, MODEL, &llm_node_tests::model_path()],
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&store);
}
