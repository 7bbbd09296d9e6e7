//! `/tokenize` and `/detokenize` on the real bundled model (llama-server's
//! shapes): a round trip gives the text back, pieces join to the text,
//! special-token text is one token, `add_special` adds what the model adds,
//! and bad input is a 400 in OpenAI's shape.

use llm_node_tests::{Node, MODEL};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<i64> {
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect()
}

#[test]
fn text_round_trips_through_tokenize_and_detokenize() {
    let node = Node::start(&[]);
    let text = "Hello, wörld! 日本語 and code: fn main() {}";
    let (status, body) = node.post("/tokenize", &json!({"model": MODEL, "content": text}));
    assert_eq!(status, 200, "{body}");
    let tokens = ids(&body);
    assert!(tokens.len() > 5 && tokens.len() < text.len(), "{tokens:?}");
    let (status, back) = node.post("/detokenize", &json!({"model": MODEL, "tokens": tokens}));
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["content"], text);

    // Pieces, joined, are the text (a piece that is part of a character comes as bytes).
    let (_, body) = node.post(
        "/tokenize",
        &json!({"model": MODEL, "content": text, "with_pieces": true}),
    );
    let mut joined = Vec::new();
    for entry in body["tokens"].as_array().unwrap() {
        assert!(entry["id"].is_i64(), "{entry}");
        match &entry["piece"] {
            Value::String(s) => joined.extend_from_slice(s.as_bytes()),
            Value::Array(bytes) => joined.extend(bytes.iter().map(|b| b.as_u64().unwrap() as u8)),
            other => panic!("piece {other}"),
        }
    }
    assert_eq!(String::from_utf8(joined).unwrap(), text);
    let with_pieces: Vec<i64> = body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(with_pieces, tokens);

    // Special-token text is one token, and detokenizes back to its text.
    let (_, body) = node.post(
        "/tokenize",
        &json!({"model": MODEL, "content": "<|im_end|>"}),
    );
    let special = ids(&body);
    assert_eq!(special.len(), 1, "{body}");
    let (_, back) = node.post("/detokenize", &json!({"model": MODEL, "tokens": special}));
    assert_eq!(back["content"], "<|im_end|>");

    // add_special adds what the model adds (SmolLM2 adds no BOS: the same tokens).
    let (_, plain) = node.post("/tokenize", &json!({"model": MODEL, "content": "hi"}));
    let (_, added) = node.post(
        "/tokenize",
        &json!({"model": MODEL, "content": "hi", "add_special": true}),
    );
    assert!(ids(&added).ends_with(&ids(&plain)), "{plain} {added}");

    // Bad input: OpenAI-shaped 400s naming the parameter or the token.
    for (path, body, param) in [
        ("/tokenize", json!({"model": MODEL}), "content"),
        (
            "/tokenize",
            json!({"model": MODEL, "content": 5}),
            "content",
        ),
        ("/tokenize", json!({"content": "x"}), "model"),
        (
            "/detokenize",
            json!({"model": MODEL, "tokens": ["a"]}),
            "tokens",
        ),
        (
            "/detokenize",
            json!({"model": MODEL, "tokens": [1.5]}),
            "tokens",
        ),
    ] {
        let (status, err) = node.post(path, &body);
        assert_eq!(status, 400, "{path} {body}: {err}");
        assert_eq!(err["error"]["param"], param, "{path} {body}: {err}");
    }
    let (status, err) = node.post(
        "/detokenize",
        &json!({"model": MODEL, "tokens": [1, 10_000_000]}),
    );
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("tokens[1] = 10000000"), "{message}");
    let (status, err) = node.post("/tokenize", &json!({"model": "nope", "content": "x"}));
    assert_eq!(status, 404, "{err}");
    node.terminate();
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `/v1/embeddings` takes token ids (one array, or an array of arrays) as
/// OpenAI does: the text's own tokenization (`/tokenize` with the model's
/// special tokens) embeds to the text's vector; ids outside the vocabulary
/// and empty arrays are 400s naming `input`.
#[test]
fn token_id_input_embeds_like_its_text_and_bad_ids_are_refused() {
    let node = Node::start(&[]);
    let texts = ["The cat sits on the mat.", "Rust is a systems language."];
    let (status, by_text) = node.post("/v1/embeddings", &json!({"model": MODEL, "input": texts}));
    assert_eq!(status, 200, "{by_text}");
    let tokenized: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| {
            let (_, body) = node.post(
                "/tokenize",
                &json!({"model": MODEL, "content": t, "add_special": true}),
            );
            ids(&body)
        })
        .collect();
    let (status, by_ids) = node.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": tokenized}),
    );
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(
        by_ids["usage"], by_text["usage"],
        "the same tokens are counted"
    );
    for i in 0..texts.len() {
        let (a, b) = (
            vector(&by_text["data"][i]["embedding"]),
            vector(&by_ids["data"][i]["embedding"]),
        );
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-5, "input {i}: largest difference {diff}");
    }
    // One flat array of ids is one input.
    let (status, one) = node.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": tokenized[0]}),
    );
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    // Different ids, a different vector (the ids are really used).
    let (_, other) = node.post(
        "/v1/embeddings",
        &json!({"model": MODEL, "input": [[1, 2, 3]]}),
    );
    assert_ne!(
        other["data"][0]["embedding"],
        by_ids["data"][0]["embedding"]
    );

    // SmolLM2's vocabulary has 49152 tokens; the worker checks each id.
    for (input, needle) in [
        (
            json!([[1, 49152]]),
            "input[0][1] is token 49152, outside the model's vocabulary",
        ),
        (json!([[1, 2], []]), "input[1] is empty"),
        (json!([]), "must not be empty"),
        (json!([1, -1]), "must be a token id"),
    ] {
        let (status, body) = node.post("/v1/embeddings", &json!({"model": MODEL, "input": input}));
        assert_eq!(status, 400, "{input}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{input}: {message}");
    }
}
