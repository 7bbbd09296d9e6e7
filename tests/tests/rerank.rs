//! Reranking end to end against a real reference: a genuine cross-encoder
//! checkpoint (transformers' `BertForSequenceClassification`, one label)
//! made of all-MiniLM-L6-v2's real encoder and pooler with a classifier head
//! drawn from a fixed seed (no real cross-encoder checkpoint is on PyPI), is
//! pulled by the real `llm-node` from a fake Hub on loopback, converted by
//! its own pull path into a rank-pooling GGUF, served, and its
//! `relevance_score`s equal the model's logits computed by transformers.
//!
//! llama.cpp's BERT graph gives every token type 0 ("sentence A"), where the
//! Hugging Face tokenizer gives the document type 1; the scores are compared
//! with transformers fed type 0 too (`segment_a`, the tolerance below), and
//! their distance from the exact scores is reported and bounded.
//!
//! Needs what `scripts/setup-convert.sh` installs in `$LLM_NODE_CACHE/convert`
//! (the README's test command runs it), like `conversion.rs`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llm_node_tests::{hub, Node, MODEL};
use serde_json::{json, Value};

const OWNER_REPO: &str = "llm-node-test/minilm-cross-encoder";
const SERVED: &str = "hf.co/llm-node-test/minilm-cross-encoder:latest";
/// Most a node score may differ from transformers' (f16 weights).
const TOLERANCE: f64 = 1e-2;

const QUERIES: [&str; 2] = [
    "How do I write memory-safe systems code?",
    "what moves share prices",
];

const DOCUMENTS: [&str; 6] = [
    "Rust is a systems programming language focused on safety.",
    "The cat sits on the mat.",
    "Bake sourdough bread at home with a starter.",
    "C code often has buffer overflows and use-after-free bugs.",
    "Stock markets fell sharply after the announcement.",
    "llama.cpp runs language models on ordinary CPUs.",
];

/// `$LLM_NODE_CACHE/convert`, checked to hold what setup-convert.sh installs.
fn setup_dir() -> PathBuf {
    let cache = std::env::var("LLM_NODE_CACHE").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/llm-node")
    });
    let dir = PathBuf::from(cache).join("convert");
    for need in [
        "venv/bin/python",
        "llama.cpp/convert_hf_to_gguf.py",
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

/// Reference scores of every (query, document) pair, in `QUERIES` ×
/// `DOCUMENTS` order.
struct Reference {
    exact: Vec<f64>,
    segment_a: Vec<f64>,
}

/// Builds the cross-encoder checkpoint in `out` and scores the pairs with it.
fn build_checkpoint(setup: &Path, out: &Path) -> Reference {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/rerank_reference.py");
    let mut child = Command::new(setup.join("venv/bin/python"))
        .arg(script)
        .arg(setup.join("minilm"))
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pairs: Vec<[&str; 2]> = QUERIES
        .iter()
        .flat_map(|q| DOCUMENTS.iter().map(move |d| [*q, *d]))
        .collect();
    let input = serde_json::to_vec(&pairs).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rerank_reference.py failed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scores = |k: &str| -> Vec<f64> {
        let list = v[k].as_array().unwrap();
        list.iter().map(|x| x.as_f64().unwrap()).collect()
    };
    Reference {
        exact: scores("exact"),
        segment_a: scores("segment_a"),
    }
}

/// Pulls (and so converts) `OWNER_REPO` through the node's `/api/pull`.
fn pull(node: &Node) {
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
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "success", "pull failed: {text}");
}

/// The stored GGUF's `bert.pooling_type`, read with gguf-py.
fn pooling_type(setup: &Path, store: &Path) -> String {
    let manifest = store
        .join("manifests/hf.co")
        .join(OWNER_REPO)
        .join("latest");
    let m: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    let model = layers
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")
        .expect("a model layer");
    let blob = store
        .join("blobs")
        .join(model["digest"].as_str().unwrap().replace(':', "-"));
    let code =
        "import sys, gguf; f = gguf.GGUFReader(sys.argv[1]).get_field('bert.pooling_type'); \
                print(f.parts[-1][0] if f else 'absent')";
    let out = Command::new(setup.join("venv/bin/python"))
        .args(["-c", code])
        .arg(blob)
        .env("PYTHONPATH", setup.join("llama.cpp/gguf-py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Indices of `scores` from the highest score down.
fn order(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

#[test]
fn a_converted_cross_encoder_reranks_like_transformers() {
    let started = Instant::now();
    let setup = setup_dir();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = tmp.path().join("checkpoint");
    let reference = build_checkpoint(&setup, &checkpoint);
    let hub = hub::serve(OWNER_REPO, &checkpoint);
    let store = tmp.path().join("store");
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
    pull(&node);
    assert_eq!(
        pooling_type(&setup, &store),
        "4",
        "converted as a reranker (rank pooling)"
    );
    eprintln!("checkpoint + pull + conversion: {:?}", started.elapsed());

    // Every document of each query, against transformers.
    let (mut worst, mut worst_exact) = (0f64, 0f64);
    for (q, query) in QUERIES.iter().enumerate() {
        let (status, body) = node.post(
            "/v1/rerank",
            &json!({"model": SERVED, "query": query, "documents": DOCUMENTS}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["object"].as_str(), body["model"].as_str()),
            (Some("list"), Some(SERVED))
        );
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), DOCUMENTS.len());
        let mut got = vec![f64::NAN; DOCUMENTS.len()];
        for r in results {
            got[r["index"].as_u64().unwrap() as usize] = r["relevance_score"].as_f64().unwrap();
            assert!(r.get("document").is_none(), "no documents unless asked");
        }
        let want = &reference.segment_a[q * DOCUMENTS.len()..][..DOCUMENTS.len()];
        let exact = &reference.exact[q * DOCUMENTS.len()..][..DOCUMENTS.len()];
        for d in 0..DOCUMENTS.len() {
            let (diff, diff_exact) = ((got[d] - want[d]).abs(), (got[d] - exact[d]).abs());
            eprintln!(
                "query {q} doc {d}: node {:.5} transformers {:.5} (exact {:.5}) diff {diff:.5}",
                got[d], want[d], exact[d]
            );
            worst = worst.max(diff);
            worst_exact = worst_exact.max(diff_exact);
        }
        // The results come sorted, in transformers' order.
        let listed: Vec<usize> = results
            .iter()
            .map(|r| r["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(listed, order(want), "query {q}: ranking");
        let usage = &body["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 6 * 4, "{usage}");
        assert_eq!(usage["prompt_tokens"], usage["total_tokens"]);
    }
    eprintln!(
        "worst |node - transformers|: {worst:.5} (token type 0), {worst_exact:.5} (exact token types)"
    );
    assert!(
        worst <= TOLERANCE,
        "scores differ from transformers by {worst}"
    );
    assert!(
        worst_exact <= 0.25,
        "token types alone cannot explain {worst_exact}"
    );
    // The scores spread far beyond the tolerance: the comparison has teeth.
    let spread = reference.segment_a.iter().fold(0f64, |m, x| m.max(*x))
        - reference.segment_a.iter().fold(f64::MAX, |m, x| m.min(*x));
    assert!(
        spread > 50.0 * TOLERANCE,
        "reference scores spread only {spread}"
    );

    // top_n and return_documents, on every route name; TEI's shape.
    let want = order(&reference.segment_a[..DOCUMENTS.len()]);
    for route in ["/rerank", "/v1/reranking"] {
        let objects: Vec<Value> = DOCUMENTS.iter().map(|d| json!({"text": d})).collect();
        let (status, body) = node.post(
            route,
            &json!({"model": SERVED, "query": QUERIES[0], "documents": objects,
                "top_n": 2, "return_documents": true}),
        );
        assert_eq!(status, 200, "{route}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{route}");
        for (r, &i) in results.iter().zip(&want) {
            assert_eq!(r["index"], i, "{route}");
            assert_eq!(r["document"]["text"], DOCUMENTS[i], "{route}");
        }
    }
    let (status, body) = node.post(
        "/rerank",
        &json!({"model": SERVED, "query": QUERIES[0], "texts": DOCUMENTS, "return_text": true}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["index"], want[0], "{body}");
    assert_eq!(body[0]["text"], DOCUMENTS[want[0]]);
    assert!(body[0]["score"].is_f64(), "{body}");

    // Refusals, in the API's shape.
    let refusals = [
        (
            "/v1/rerank",
            json!({"model": MODEL, "query": "q", "documents": ["d"]}),
            "not a reranking model",
        ),
        (
            "/v1/embeddings",
            json!({"model": SERVED, "input": "x"}),
            "is a reranking model",
        ),
        (
            "/v1/rerank",
            json!({"model": SERVED, "query": "q", "documents": []}),
            "documents",
        ),
        (
            "/v1/rerank",
            json!({"model": SERVED, "query": "q", "documents": ["d"], "top_n": 0}),
            "top_n",
        ),
        (
            "/v1/rerank",
            json!({"model": SERVED, "documents": ["d"]}),
            "query",
        ),
        (
            "/v1/rerank",
            json!({"model": SERVED, "query": "q", "documents": ["word ".repeat(700)]}),
            "tokens",
        ),
    ];
    for (route, request, says) in refusals {
        let (status, body) = node.post(route, &request);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == 400 && message.contains(says),
            "{route} {request}: {status} {body}"
        );
    }
    let (status, body) = node.post("/api/embed", &json!({"model": SERVED, "input": "x"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is a reranking model"),
        "{body}"
    );
    // The model still serves after every refusal.
    let (status, _) = node.post(
        "/v1/rerank",
        &json!({"model": SERVED, "query": "q", "documents": ["d"]}),
    );
    assert_eq!(status, 200);
    node.terminate();
    eprintln!("rerank test took {:?}", started.elapsed());
}
