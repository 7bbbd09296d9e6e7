//! Ollama's `/api/chat` and `/api/generate` end to end: real node, real
//! workers, bundled model.

use std::io::{BufRead, BufReader};

use llm_node_tests::{Node, MODEL};
use serde_json::{json, Value};

fn user(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// POSTs `body` and reads the NDJSON lines of the answer.
fn ndjson(node: &Node, path: &str, body: &Value) -> Vec<Value> {
    let r = node
        .http
        .post(node.url(path))
        .json(body)
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200, "stream status");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "application/x-ndjson");
    BufReader::new(r)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn chat_streamed_equals_chat_whole_and_num_predict_caps_eval_count() {
    let node = Node::start(&[]);
    let options = json!({"options": {"temperature": 0, "num_predict": 16}});
    let prompt = "Write a long story about a dragon.";
    let mut whole_body = user(prompt, options.clone());
    whole_body["stream"] = json!(false);
    let (status, whole) = node.post("/api/chat", &whole_body);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["model"], MODEL);
    assert_eq!(whole["done"], true);
    assert_eq!(whole["done_reason"], "length");
    assert_eq!(whole["eval_count"], 16, "{whole}");
    assert!(whole["prompt_eval_count"].as_u64().unwrap() > 5, "{whole}");
    for field in ["total_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(
            whole[field].as_u64().is_some_and(|n| n > 0),
            "{field}: {whole}"
        );
    }
    assert!(
        whole["total_duration"].as_u64() > whole["eval_duration"].as_u64(),
        "{whole}"
    );

    let lines = ndjson(&node, "/api/chat", &user(prompt, options));
    let (last, chunks) = lines.split_last().unwrap();
    assert!(chunks.len() >= 3, "only {} chunks", chunks.len());
    let text: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["done"], false);
            assert_eq!(c["message"]["role"], "assistant");
            c["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, whole["message"]["content"].as_str().unwrap());
    assert_eq!(
        (&last["done"], &last["done_reason"]),
        (&json!(true), &json!("length"))
    );
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 16);
    assert_eq!(last["prompt_eval_count"], whole["prompt_eval_count"]);
}

#[test]
fn generate_templated_raw_and_stopped_by_a_stop_string() {
    let node = Node::start(&[]);
    let prompt = "Count from 1 to 10, separated by commas.";
    let body = |extra: Value| {
        let mut b = json!({"model": MODEL, "prompt": prompt, "stream": false,
            "options": {"temperature": 0, "num_predict": 40}});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let (status, free) = node.post("/api/generate", &body(json!({})));
    assert_eq!(status, 200, "{free}");
    let free_text = free["response"].as_str().unwrap().to_owned();
    assert!(!free_text.is_empty(), "{free}");

    // `raw`: the prompt is not wrapped in the chat template (fewer tokens).
    let (status, raw) = node.post("/api/generate", &body(json!({"raw": true})));
    assert_eq!(status, 200, "{raw}");
    let (templated, plain) = (
        free["prompt_eval_count"].as_u64().unwrap(),
        raw["prompt_eval_count"].as_u64().unwrap(),
    );
    assert!(
        plain + 5 < templated,
        "raw {plain} vs templated {templated}"
    );

    let stop: String = free_text.chars().skip(5).take(2).collect();
    let stopped = body(json!({"options": {"temperature": 0, "num_predict": 40, "stop": [stop]}}));
    let (status, v) = node.post("/api/generate", &stopped);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done_reason"], "stop");
    let text = v["response"].as_str().unwrap();
    assert!(!text.contains(&stop), "{text:?} contains {stop:?}");
    assert!(free_text.starts_with(text), "{text:?} vs {free_text:?}");
}

#[test]
fn format_with_a_json_schema_gives_schema_valid_json() {
    let node = Node::start(&[]);
    let schema = json!({"type": "object",
        "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}},
        "required": ["age", "available"]});
    let body = user(
        "Ollama is 22 years old and busy saving the world. Return a JSON object with the age and availability.",
        json!({"stream": false, "format": schema, "options": {"temperature": 0}}),
    );
    let (status, v) = node.post("/api/chat", &body);
    assert_eq!(status, 200, "{v}");
    let content: Value = serde_json::from_str(v["message"]["content"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {v}"));
    assert!(content["age"].is_i64(), "{content}");
    assert!(content["available"].is_boolean(), "{content}");

    let body = json!({"model": MODEL, "prompt": "What color is the sky? Respond using JSON",
        "format": "json", "stream": false, "options": {"num_predict": 64}});
    let (status, v) = node.post("/api/generate", &body);
    assert_eq!(status, 200, "{v}");
    if v["done_reason"] == "stop" {
        let parsed: Value = serde_json::from_str(v["response"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {v}"));
        assert!(parsed.is_object(), "{parsed}");
    } else {
        assert!(v["response"].as_str().unwrap().starts_with('{'), "{v}");
    }
}

#[test]
fn keep_alive_zero_unloads_the_model_as_admin_models_shows() {
    let node = Node::start(&["--preload", "none"]);
    node.wait_admin(MODEL, "loaded", |m| m["state"] == "ready");
    let (status, v) = node.post(
        "/api/chat",
        &user(
            "hi",
            json!({"stream": false, "keep_alive": 0, "options": {"num_predict": 4}}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done"], true);
    node.wait_admin(MODEL, "unloaded", |m| m["state"] == "stopped");

    // An empty request loads it, and one with keep_alive 0 unloads it.
    let (status, v) = node.post("/api/generate", &json!({"model": MODEL}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["done_reason"], &v["response"]),
        (&json!("load"), &json!(""))
    );
    assert_eq!(node.admin_model(MODEL)["state"], "ready");
    let (status, v) = node.post("/api/generate", &json!({"model": MODEL, "keep_alive": 0}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(node.admin_model(MODEL)["state"], "stopped");
}

#[test]
fn unsupported_fields_are_refused_in_ollamas_error_shape() {
    let node = Node::start(&[]);
    for (path, body) in [
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "x", "suffix": "y"}),
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "x", "options": {"num_ctx": 100000}}),
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
        ),
    ] {
        let (status, v) = node.post(path, &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        if body.get("suffix").is_some() {
            // The bundled model has no FIM tokens: its worker refuses the infill.
            assert!(
                v["error"].as_str().unwrap().contains("fill-in-the-middle"),
                "{v}"
            );
        }
    }
}
