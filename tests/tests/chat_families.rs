//! Every tool-call family of llama.cpp's template corpus, on the real bundled
//! model: the node serves the bundled GGUF under one name per family, each
//! with that family's real template (`--chat-template NAME=FILE`), and for
//! each one `tool_choice` required and named give a parsed `tool_calls` entry
//! whose arguments validate against the tool's schema, and `response_format`
//! json_schema gives output that validates — streamed and not.
//!
//! The corpus is the `models/templates/` of llama.cpp in PyPI's
//! `llama-cpp-python` sdist, unpacked by `scripts/setup.sh` into
//! `$LLM_NODE_LLAMA_CPP_SRC` (default `~/.cache/llm-node/llama-cpp-src`).

use llm_node_tests::{model_path, Node};
use serde_json::{json, Value};

/// One template per family (`llm_node_chat::format::ToolSyntax`).
const FAMILIES: &[(&str, &str)] = &[
    ("harmony", "openai-gpt-oss-120b.jinja"),
    ("hermes", "Qwen-Qwen2.5-7B-Instruct.jinja"),
    ("qwen3", "Qwen-Qwen3-0.6B.jinja"),
    ("qwen3coder", "Qwen3-Coder.jinja"),
    ("seedoss", "ByteDance-Seed-OSS.jinja"),
    ("llama3", "meta-llama-Llama-3.1-8B-Instruct.jinja"),
    ("mistraljson", "mistralai-Mistral-Nemo-Instruct-2407.jinja"),
    ("mistralargs", "Mistral-Small-3.2-24B-Instruct-2506.jinja"),
    (
        "deepseekr1",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    ),
    ("deepseekv31", "deepseek-ai-DeepSeek-V3.1.jinja"),
    ("granite", "ibm-granite-granite-3.3-2B-Instruct.jinja"),
    (
        "commandr7b",
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
    ),
    (
        "commandrplus",
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
    ),
    ("functionary31", "meetkai-functionary-medium-v3.1.jinja"),
    ("functionary32", "meetkai-functionary-medium-v3.2.jinja"),
    ("firefunction", "fireworks-ai-llama-3-firefunction-v2.jinja"),
    ("kimik2", "moonshotai-Kimi-K2.jinja"),
    ("glm45", "GLM-4.6.jinja"),
    ("minimaxm2", "MiniMax-M2.jinja"),
    ("apriel", "unsloth-Apriel-1.5.jinja"),
    ("gemma2", "google-gemma-2-2b-it.jinja"),
];

fn corpus_dir() -> String {
    let src = std::env::var("LLM_NODE_LLAMA_CPP_SRC").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node/llama-cpp-src",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let dir = format!("{src}/models/templates");
    assert!(
        std::path::Path::new(&dir).is_dir(),
        "template corpus missing at {dir}: run scripts/setup.sh (the README's test command does)"
    );
    dir
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7, "description": "Days"}},
        "required": ["city", "days"], "additionalProperties": false}}})
}

/// The arguments validate against `weather_tool`'s schema.
fn check_weather_args(family: &str, arguments: &str) {
    let args: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{family}: arguments are not JSON ({e}): {arguments}"));
    let obj = args
        .as_object()
        .unwrap_or_else(|| panic!("{family}: {args}"));
    assert!(obj["city"].is_string(), "{family}: {args}");
    let days = obj["days"]
        .as_i64()
        .unwrap_or_else(|| panic!("{family}: {args}"));
    assert!((1..=7).contains(&days), "{family}: {args}");
    assert_eq!(obj.len(), 2, "{family}: {args}");
}

fn request(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris for the next three days?"}
        ],
        "temperature": 0, "max_tokens": 120,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// `(name, arguments, finish_reason)` of a streamed answer's first tool call.
fn streamed_call(node: &Node, body: &Value) -> (String, String, String) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let events = node.stream("/v1/chat/completions", &body);
    let (mut name, mut args, mut finish) = (String::new(), String::new(), String::new());
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        let Some(choice) = v["choices"].get(0) else {
            continue;
        };
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(tc["index"], 0);
            if let Some(n) = tc["function"]["name"].as_str() {
                assert!(
                    tc["id"].as_str().is_some_and(|id| id.starts_with("call_")),
                    "{tc}"
                );
                name.push_str(n);
            }
            args.push_str(tc["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_owned();
        }
    }
    (name, args, finish)
}

#[test]
fn every_family_gets_valid_forced_tool_calls_and_structured_output() {
    let dir = corpus_dir();
    let model = model_path();
    let mut args: Vec<String> = vec!["--preload".into(), "none".into(), "--no-embeddings".into()];
    for (name, file) in FAMILIES {
        args.push("--model".into());
        args.push(format!("{name}={model}"));
        args.push("--chat-template".into());
        args.push(format!("{name}={dir}/{file}"));
    }
    args.extend(["--max-loaded-models".into(), "4".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // Some templates (Command R) write a long preamble.
    let node = Node::spawn_ctx(1, 4096, &refs);
    let tools = json!([weather_tool()]);
    for (family, _) in FAMILIES {
        node.wait_ready(family);
        // tool_choice required (one call), whole answer.
        let body = request(
            family,
            json!({"tools": tools, "tool_choice": "required", "parallel_tool_calls": false}),
        );
        let (status, v) = node.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{family}: {v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{family}: {v}");
        assert_eq!(
            choice["message"]["tool_calls"].as_array().map(Vec::len),
            Some(1),
            "{v}"
        );
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather", "{family}: {v}");
        check_weather_args(family, call["function"]["arguments"].as_str().unwrap());
        // The same, streamed.
        let (name, arguments, finish) = streamed_call(&node, &body);
        assert_eq!(
            (name.as_str(), finish.as_str()),
            ("get_weather", "tool_calls"),
            "{family}"
        );
        check_weather_args(family, &arguments);
        // A named function.
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let body = request(family, json!({"tools": tools, "tool_choice": named}));
        let (status, v) = node.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{family}: {v}");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        check_weather_args(family, call["function"]["arguments"].as_str().unwrap());
        // Structured output.
        let schema = json!({"type": "object", "properties": {
            "answer": {"type": "string", "maxLength": 40},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "sources": {"type": "array", "items": {"type": "string", "enum": ["web", "book"]}, "maxItems": 2}},
            "required": ["answer", "confidence", "sources"]});
        let body = request(
            family,
            json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "a", "schema": schema, "strict": true}}, "max_tokens": 120}),
        );
        let (status, v) = node.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{family}: {v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        let out: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{family}: {e}: {text}"));
        let c = out["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{family}: {out}");
        assert!(
            out["answer"]
                .as_str()
                .is_some_and(|a| a.chars().count() <= 40),
            "{family}: {out}"
        );
        for s in out["sources"].as_array().unwrap() {
            assert!(s == "web" || s == "book", "{family}: {out}");
        }
        eprintln!("family {family}: ok");
    }
}
