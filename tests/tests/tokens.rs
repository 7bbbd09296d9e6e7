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
