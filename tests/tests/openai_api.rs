//! The OpenAI-compatible API end to end: real node, real workers, bundled model.

use std::collections::HashSet;

use llm_node_tests::{chat, stream_text, Node, MODEL};
use serde_json::{json, Value};

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
        .to_owned()
}

#[test]
fn streaming_matches_non_streaming_for_the_same_greedy_request() {
    let node = Node::start(&[]);
    let params = json!({"temperature": 0, "max_tokens": 24});
    let prompt = "Write a long story about a dragon.";
    let (status, full) = node.post("/v1/chat/completions", &chat(prompt, params.clone()));
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["model"], MODEL);
    assert!(full["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(full["created"].as_u64().unwrap() > 1_700_000_000);

    let mut body = chat(prompt, params);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = node.stream("/v1/chat/completions", &body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    assert!(content_chunks >= 3, "only {content_chunks} content chunks");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"], "one id per stream");
    }
    let finals: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["choices"][0]["finish_reason"], "length");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage_chunk["usage"][key], full["usage"][key], "{key}");
    }
    assert_eq!(stream_text(&events), content(&full));
}

#[test]
fn max_tokens_stop_strings_and_usage() {
    let node = Node::start(&[]);
    let (_, v) = node.post(
        "/v1/chat/completions",
        &chat(
            "Write a long story about a dragon.",
            json!({"temperature": 0, "max_tokens": 9}),
        ),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let u = &v["usage"];
    assert_eq!(u["completion_tokens"], 9);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + 9
    );

    let prompt = "Count from 1 to 10, separated by commas.";
    let (_, free) = node.post(
        "/v1/chat/completions",
        &chat(prompt, json!({"temperature": 0, "max_tokens": 40})),
    );
    let free = content(&free);
    let stop: String = free.chars().skip(5).take(2).collect();
    let (_, v) = node.post(
        "/v1/chat/completions",
        &chat(
            prompt,
            json!({"temperature": 0, "max_tokens": 40, "stop": [stop]}),
        ),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let text = content(&v);
    assert!(!text.contains(&stop), "{text:?} contains {stop:?}");
    assert!(free.starts_with(&text));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
}

#[test]
fn greedy_and_seeded_requests_are_reproducible_and_concurrency_does_not_cross_talk() {
    let node = Node::start_with(8, &[]);
    let seeded = json!({"temperature": 1.0, "seed": 1234, "max_tokens": 20});
    let a = node
        .post(
            "/v1/chat/completions",
            &chat("Tell me a joke.", seeded.clone()),
        )
        .1;
    let b = node
        .post("/v1/chat/completions", &chat("Tell me a joke.", seeded))
        .1;
    assert_eq!(content(&a), content(&b));

    let prompts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three colors.",
        "What is 2 plus 2?",
        "Describe a cat in one sentence.",
        "Name a famous scientist.",
        "What language is spoken in Spain?",
        "Give me a synonym for happy.",
    ];
    let greedy = json!({"temperature": 0, "max_tokens": 24});
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            content(
                &node
                    .post("/v1/chat/completions", &chat(p, greedy.clone()))
                    .1,
            )
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let (node, greedy) = (&node, greedy.clone());
                s.spawn(move || content(&node.post("/v1/chat/completions", &chat(p, greedy)).1))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
}

#[test]
fn a_disconnected_stream_frees_its_slot() {
    use std::io::{BufRead, BufReader};
    let node = Node::start_with(1, &[]);
    let mut body = chat(
        "Write a very long essay about the ocean.",
        json!({"max_tokens": 900, "ignore_eos": true, "stream": true}),
    );
    let r = node
        .http
        .post(node.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap();
    let mut lines = BufReader::new(r).lines();
    let mut seen = 0;
    while seen < 4 {
        if lines.next().unwrap().unwrap().starts_with("data: ") {
            seen += 1;
        }
    }
    let in_flight =
        |node: &Node| node.get(&format!("/v1/models/{MODEL}")).1["meta"]["in_flight"].as_u64();
    assert_eq!(in_flight(&node), Some(1));
    drop(lines); // the client goes away mid-stream
                 // The worker acknowledges the cancel: nothing is in flight any more,
                 // long before the 900 tokens could have been generated.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while in_flight(&node) != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "stream was never cancelled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The single slot serves the next request.
    body["stream"] = json!(false);
    body["max_tokens"] = json!(3);
    let (s, v) = node.post("/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[test]
fn completions_endpoint_streams_and_answers_raw_prompts() {
    let node = Node::start(&[]);
    let body = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0});
    let (status, v) = node.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let text = v["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    let mut body = body;
    body["stream"] = json!(true);
    let events = node.stream("/v1/completions", &body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(stream_text(&events), text);
}

#[test]
fn ids_are_unique() {
    let node = Node::start(&[]);
    let ids: HashSet<String> = (0..5)
        .map(|_| {
            node.post(
                "/v1/chat/completions",
                &chat("Hi", json!({"max_tokens": 1})),
            )
            .1["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 5);
}

#[test]
fn embeddings_have_the_right_dimension_unit_norm_and_meaning() {
    let node = Node::start(&[]);
    let (status, v) = node.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": [
            "The cat sat on the mat.",
            "A cat was sitting on a mat.",
            "Quarterly revenue grew by ten percent."]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for e in &vecs {
        assert_eq!(e.len(), 576);
        assert!((dot(e, e).sqrt() - 1.0).abs() < 1e-3);
    }
    assert!(dot(&vecs[0], &vecs[1]) > dot(&vecs[0], &vecs[2]));
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // A single string, base64-encoded little-endian f32.
    let (_, b) = node.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": "The cat sat on the mat.", "encoding_format": "base64"}),
    );
    let b64 = b["data"][0]["embedding"].as_str().expect("base64 string");
    assert_eq!(b64.len(), (576 * 4usize).div_ceil(3) * 4);
}

#[test]
fn models_and_health() {
    let node = Node::start(&[]);
    let (status, v) = node.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["object"], "model");
    let (status, v) = node.get(&format!("/v1/models/{MODEL}"));
    assert_eq!(status, 200);
    assert_eq!(v["id"], MODEL);
    let (status, v) = node.get("/v1/models/nope");
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(node.get("/health").0, 200);
    assert_eq!(node.get("/health/ready").0, 200);
    // Node::start's readiness chat is in the metrics.
    let metrics = node.metrics();
    for needle in [
        "llm_node_model_state{model=\"smollm2\",state=\"ready\"} 1",
        "llm_node_tokens_generated_total{model=\"smollm2\"}",
        "llm_node_time_to_first_token_seconds_count{model=\"smollm2\"}",
        "outcome=\"ok\"",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in {metrics}");
    }
}

fn assert_error(node: &Node, status: u16, body: Value, want: u16, code_or_param: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "error body lacks {key}: {body}");
    }
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    let hit = e["code"] == code_or_param
        || e["param"]
            .as_str()
            .is_some_and(|p| p.starts_with(code_or_param));
    assert!(hit, "expected {code_or_param} in {body}");
    // The worker is still serving.
    let _ = node;
}

#[test]
fn bad_input_gets_openai_errors_and_the_worker_keeps_serving() {
    let node = Node::start_with(2, &[]);
    let (s, b) = node.post_raw("/v1/chat/completions", "{\"model\": ");
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].is_string(), "{b}");

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            400,
            "model",
        ),
        (
            chat("hi", json!({"model": "no-such-model"})),
            404,
            "model_not_found",
        ),
        (json!({"model": MODEL, "messages": []}), 400, "messages"),
        (chat("hi", json!({"temperature": -1})), 400, "temperature"),
        (chat("hi", json!({"top_p": 0})), 400, "top_p"),
        (chat("hi", json!({"top_p": 1.5})), 400, "top_p"),
        (chat("hi", json!({"max_tokens": 0})), 400, "max_tokens"),
        (chat("hi", json!({"max_tokens": -3})), 400, "max_tokens"),
        (chat("hi", json!({"n": 17})), 400, "n"),
        (chat("hi", json!({"n": 2, "stream": true})), 400, "n"),
        (chat("hi", json!({"n": 5})), 400, "n"),
        (
            chat(
                "hi",
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}}}),
            ),
            400,
            "response_format",
        ),
        (chat("hi", json!({"grammar": "root ::= ("})), 400, "grammar"),
        (
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}),
            400,
            "messages",
        ),
        (
            chat(&"lorem ipsum ".repeat(1500), json!({})),
            400,
            "context_length_exceeded",
        ),
    ];
    for (body, want, code) in cases {
        let (s, b) = node.post("/v1/chat/completions", &body);
        assert_error(&node, s, b, want, code);
    }
    let mut long = chat(&"lorem ipsum ".repeat(1500), json!({}));
    long["stream"] = json!(true);
    let (s, b) = node.post("/v1/chat/completions", &long);
    assert_error(&node, s, b, 400, "context_length_exceeded");

    let (s, b) = node.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x", "max_tokens": 0}),
    );
    assert_error(&node, s, b, 400, "max_tokens");
    let (s, b) = node.post("/v1/embeddings", &json!({"model": "nope", "input": "x"}));
    assert_error(&node, s, b, 404, "model_not_found");

    let (s, v) = node.post(
        "/v1/chat/completions",
        &chat("Hello", json!({"max_tokens": 3})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

/// The threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn streamed_tokens_are_read_on_the_http_threads_not_by_reader_threads() {
    let node = Node::start(&["--http-threads", "3"]);
    // Several streams at once land on several HTTP threads (and lanes).
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let base = node.base.clone();
            std::thread::spawn(move || {
                let body = chat(
                    &format!("Count to {i}."),
                    json!({"max_tokens": 12, "stream": true, "temperature": 0}),
                );
                let text = reqwest::blocking::Client::new()
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .unwrap()
                    .text()
                    .unwrap();
                assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
                text.matches("chat.completion.chunk").count()
            })
        })
        .collect();
    for stream in streams {
        assert!(stream.join().unwrap() >= 2);
    }
    // Lane 0 (pings, admin) has its reader thread; lanes 1..=3 are tasks on
    // the HTTP threads, so no reader thread exists for them.
    assert_eq!(
        threads_named(node.pid(), "events"),
        vec![format!("events0-{MODEL}")]
    );
}

#[test]
fn n_choices_come_back_indexed_with_summed_usage() {
    let node = Node::start(&[]);
    let (status, v) = node.post(
        "/v1/chat/completions",
        &chat(
            "Tell me a joke.",
            json!({"n": 3, "max_tokens": 6, "seed": 5, "temperature": 1}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
        assert!(c["message"]["content"].is_string(), "{v}");
    }
    let total: u64 = choices.len() as u64 * 6;
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= total,
        "{v}"
    );
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() >= 3,
        "{v}"
    );
    let (status, v) = node.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "logprobs": 2}),
    );
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2, "{v}");
    assert_eq!(lp["text_offset"][0], 0, "{v}");
}
