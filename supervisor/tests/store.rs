//! The model store against a fake Ollama registry and a fake Hugging Face Hub
//! (`fake_hub/`) on loopback serving real bytes (the bundled GGUF, or
//! synthetic blobs for download mechanics), with whole nodes on port 0 and fake
//! worker processes (`examples/fake_worker.rs`; a GGUF's bytes are a healthy
//! fake model).

mod common;
use common::fake_worker;

mod fake_hub;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fake_hub::{sha256, FakeHub};
use llm_node::store::download::{BlobRequest, DownloadError, Downloader};
use llm_node::store::{ModelRef, Store, StoreArgs, StoreErrorKind};
use llm_node::{Args, Node};
use serde_json::{json, Value};

/// The bundled GGUF (98 MB of real bytes).
fn bundled_gguf() -> Vec<u8> {
    let path = std::env::var("LLM_NODE_TEST_MODEL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            std::env::var("HOME").unwrap()
        )
    });
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("bundled model {path}: {e} (run scripts/setup.sh)"))
}

/// `n` bytes that start like a GGUF (so the fake worker loads them) and vary.
fn synthetic(n: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    v[..4].copy_from_slice(b"GGUF");
    v
}

fn store_flags(dir: &Path, hub: &FakeHub) -> Vec<String> {
    vec![
        format!("--store-dir={}", dir.join("store").display()),
        format!("--registry-url={}", hub.url()),
        format!("--hf-endpoint={}", hub.url()),
        "--no-ollama-models".into(),
    ]
}

fn store_args(dir: &Path, hub: &FakeHub) -> StoreArgs {
    let argv = std::iter::once("llm-node".to_string()).chain(store_flags(dir, hub));
    Args::try_parse_from(argv).unwrap().store
}

/// A node with one fake model `base` plus `extra` flags.
async fn node(dir: &Path, hub: &FakeHub, extra: &[String]) -> Node {
    let base = dir.join("base.gguf");
    std::fs::write(&base, "GGUF").unwrap();
    let mut argv = vec![
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
        format!("--model=base={}", base.display()),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=5".into(),
    ];
    let reads_ollama = extra.iter().any(|a| a.starts_with("--ollama-models"));
    argv.extend(
        store_flags(dir, hub)
            .into_iter()
            .filter(|f| !(reads_ollama && f == "--no-ollama-models")),
    );
    argv.extend(extra.iter().cloned());
    Node::start(Args::try_parse_from(argv).unwrap())
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// `POST /api/pull` (streaming); returns the status and the NDJSON lines.
async fn pull(node: &Node, model: &str) -> (u16, Vec<Value>) {
    let resp = client()
        .post(format!("http://{}/api/pull", node.addr()))
        .json(&json!({ "model": model }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (status, lines)
}

async fn chat(node: &Node, model: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("http://{}/v1/chat/completions", node.addr()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn nothing(_: llm_node::store::Progress) {}

fn blob_file(dir: &Path, digest: &str) -> PathBuf {
    dir.join("store/blobs").join(digest.replace(':', "-"))
}

#[actix_rt::test]
async fn pulled_registry_model_is_served_at_once_without_restart() {
    let hub = FakeHub::start();
    let gguf = bundled_gguf();
    let digest = hub.publish("library", "smol", "135m", &gguf, Some("{{ .Prompt }}"));
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &hub, &[]).await;
    let (status, lines) = pull(&node, "smol:135m").await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines[0]["status"], "pulling manifest");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let model_lines: Vec<&Value> = lines.iter().filter(|l| l["digest"] == digest).collect();
    assert!(!model_lines.is_empty());
    assert!(model_lines.iter().all(|l| l["total"] == gguf.len() as u64));
    assert_eq!(model_lines.last().unwrap()["completed"], gguf.len() as u64);
    // Served right away, under name:tag, from a verified blob in Ollama's layout.
    let (status, body) = chat(&node, "smol:135m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read(blob_file(dir.path(), &digest)).unwrap(), gguf);
    assert!(dir
        .path()
        .join("store/manifests/registry.ollama.ai/library/smol/135m")
        .is_file());
    let tags: Value = client()
        .get(format!("http://{}/api/tags", node.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"][0]["name"], "smol:135m", "{tags}");
    assert!(tags["models"][0]["size"].as_u64().unwrap() > gguf.len() as u64);
    node.stop().await;
}

#[actix_rt::test]
async fn a_dropped_connection_resumes_and_only_missing_bytes_move() {
    let hub = FakeHub::start();
    let data = synthetic(8 << 20, 1);
    let digest = hub.publish("library", "drop", "latest", &data, None);
    // Every one of the first 4 responses (the 4 parallel parts) breaks off after 512 KiB.
    hub.faults(|f| {
        f.drop_after = Some(512 << 10);
        f.drop_count = 4;
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(&store_args(dir.path(), &hub)).unwrap();
    let model = store
        .ensure(&ModelRef::parse("drop").unwrap(), &nothing)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&model.gguf).unwrap(), data);
    let served = hub.served();
    let small_blobs = 200;
    assert!(
        served <= data.len() as u64 + small_blobs,
        "{served} bytes served for a {} byte blob",
        data.len()
    );
    let ranges = hub.state.lock().unwrap().ranges.clone();
    // A broken-off part asks for the rest only: a start 512 KiB into its part.
    let resumed = |r: &String| {
        let start: u64 = r["bytes=".len()..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        start % (2 << 20) == 512 << 10
    };
    assert!(ranges.iter().any(resumed), "{ranges:?}");
    assert_eq!(
        sha256(&std::fs::read(blob_file(dir.path(), &digest)).unwrap()),
        digest
    );
}

#[actix_rt::test]
async fn a_killed_puller_resumes_after_restart_without_refetching() {
    let hub = FakeHub::start();
    let data = synthetic(8 << 20, 2);
    let digest = hub.publish("library", "kill", "latest", &data, None);
    hub.faults(|f| f.chunk_delay = Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let args = store_args(dir.path(), &hub);
    let store = Store::new(&args).unwrap();
    let task = actix_rt::spawn(async move {
        let _ = store
            .ensure(&ModelRef::parse("kill").unwrap(), &nothing)
            .await;
    });
    while hub.served() < 3 << 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort(); // the puller dies mid-transfer, as a killed node would
    let _ = task.await;
    let first = hub.served();
    let written: u64 = std::fs::read_dir(dir.path().join("store/blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-partial-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        written >= 1 << 20,
        "partial files stay for the next pull ({written} bytes)"
    );
    hub.faults(|f| f.chunk_delay = Duration::ZERO);
    hub.state.lock().unwrap().ranges.clear();
    let store = Store::new(&args).unwrap(); // a new process would build a new one
    let model = store
        .ensure(&ModelRef::parse("kill").unwrap(), &nothing)
        .await
        .unwrap();
    assert_eq!(sha256(&std::fs::read(&model.gguf).unwrap()), digest);
    // The restarted pull asks for exactly the bytes that were not on disk (bytes
    // the server had sent but the killed puller never wrote are asked again, as
    // they must be).
    let ranges = hub.state.lock().unwrap().ranges.clone();
    let requested: u64 = ranges
        .iter()
        .map(|r| {
            let (a, b) = r["bytes=".len()..].split_once('-').unwrap();
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
        })
        .sum();
    assert_eq!(requested, data.len() as u64 - written, "{ranges:?}");
    assert!(first < data.len() as u64);
}

#[actix_rt::test]
async fn corrupted_bytes_are_refused_retried_and_never_installed() {
    let hub = FakeHub::start();
    let good = synthetic(3 << 20, 3);
    let digest = hub.publish("library", "c", "v1", &good, None);
    hub.faults(|f| f.corrupt_count = 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(&store_args(dir.path(), &hub)).unwrap();
    let name = ModelRef::parse("c:v1").unwrap();
    let model = store.ensure(&name, &nothing).await.unwrap();
    assert_eq!(sha256(&std::fs::read(&model.gguf).unwrap()), digest);
    assert!(
        hub.served() >= 2 * good.len() as u64,
        "the corrupt download was retried"
    );

    // A new version of the same tag whose bytes always arrive corrupted: the pull
    // fails with a digest mismatch, nothing is installed, v1 stays intact.
    let newer = synthetic(3 << 20, 4);
    let new_digest = hub.publish("library", "c", "v1", &newer, None);
    hub.faults(|f| f.corrupt_count = 1000);
    let err = store.pull(&name, &nothing).await.unwrap_err().to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!blob_file(dir.path(), &new_digest).exists());
    let still = store.find(&name).unwrap().unwrap();
    assert_eq!(still.gguf, model.gguf);
    assert_eq!(sha256(&std::fs::read(&still.gguf).unwrap()), digest);
}

#[actix_rt::test]
async fn a_server_ignoring_range_gets_a_clean_restart() {
    let hub = FakeHub::start();
    let data = synthetic(6 << 20, 5);
    let digest = hub.publish("library", "r", "latest", &data, None);
    // First a broken-off transfer leaves partial parts; then the server forgets Range.
    hub.faults(|f| {
        f.drop_after = Some(300 << 10);
        f.drop_count = 4;
    });
    let dir = tempfile::tempdir().unwrap();
    let args = store_args(dir.path(), &hub);
    let task = {
        let store = Store::new(&args).unwrap();
        actix_rt::spawn(async move {
            let _ = store.ensure(&ModelRef::parse("r").unwrap(), &nothing).await;
        })
    };
    while hub.served() < 4 * (300 << 10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    hub.faults(|f| {
        f.drop_count = 0;
        f.ignore_range = true;
    });
    let store = Store::new(&args).unwrap();
    let model = store
        .ensure(&ModelRef::parse("r").unwrap(), &nothing)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&model.gguf).unwrap(), data);
    assert_eq!(sha256(&data), digest);
}

#[actix_rt::test]
async fn a_pre_made_ollama_store_is_served_by_name_and_tag() {
    // Written by hand the way Ollama writes it, not with llm-node's code.
    let ollama = tempfile::tempdir().unwrap();
    let gguf = b"GGUF premade".to_vec();
    let blobs = ollama.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut layers = Vec::new();
    for (media, data) in [
        ("application/vnd.ollama.image.model", gguf.clone()),
        (
            "application/vnd.ollama.image.template",
            b"{{ .Prompt }}".to_vec(),
        ),
        (
            "application/vnd.ollama.image.params",
            br#"{"temperature":0.2}"#.to_vec(),
        ),
    ] {
        let digest = sha256(&data);
        std::fs::write(blobs.join(digest.replace(':', "-")), &data).unwrap();
        layers.push(json!({"mediaType": media, "digest": digest, "size": data.len()}));
    }
    let config = br#"{"model_format":"gguf"}"#;
    std::fs::write(blobs.join(sha256(config).replace(':', "-")), config).unwrap();
    let manifest = json!({"schemaVersion": 2, "mediaType": fake_hub::MANIFEST_MEDIA,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": layers});
    let mdir = ollama
        .path()
        .join("manifests/registry.ollama.ai/library/premade");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("7b"), manifest.to_string()).unwrap();

    let hub = FakeHub::start();
    let dir = tempfile::tempdir().unwrap();
    let extra = vec![format!("--ollama-models={}", ollama.path().display())];
    let node = node(dir.path(), &hub, &extra).await;
    let (status, body) = chat(&node, "premade:7b").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "premade:7b");
    // llm-node never deletes from Ollama's store.
    let resp = client()
        .delete(format!("http://{}/api/delete", node.addr()))
        .json(&json!({"model": "premade:7b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    assert!(mdir.join("7b").is_file());
    node.stop().await;
}

#[actix_rt::test]
async fn hf_quant_pull_fetches_every_part_of_a_split_gguf_with_the_token() {
    let hub = FakeHub::start();
    hub.state.lock().unwrap().hf_token = Some("hf_secret".into());
    hub.add_repo(
        "org/Tiny-GGUF",
        vec![
            ("README.md", b"# tiny".to_vec()),
            ("tiny-Q8_0.gguf", synthetic(1000, 6)),
            (
                "Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf",
                b"GGUF part one".to_vec(),
            ),
            (
                "Q4_K_M/tiny-Q4_K_M-00002-of-00002.gguf",
                b"GGUF part two".to_vec(),
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let without = node(dir.path(), &hub, &[]).await;
    let (status, lines) = pull(&without, "hf.co/org/Tiny-GGUF:q4_k_m").await;
    assert_eq!(status, 502, "{lines:?}");
    without.stop().await;

    let node = node(dir.path(), &hub, &["--hf-token=hf_secret".to_string()]).await;
    let (status, lines) = pull(&node, "hf.co/org/Tiny-GGUF:q4_k_m").await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let (status, body) = chat(&node, "hf.co/org/Tiny-GGUF:q4_k_m").await;
    assert_eq!(status, 200, "{body}");
    let links = dir.path().join("store/links");
    let set = std::fs::read_dir(&links)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(set.join("model-00002-of-00002.gguf")).unwrap(),
        b"GGUF part two"
    );
    // One named file.
    let (status, lines) = pull(&node, "hf/org/Tiny-GGUF/tiny-Q8_0.gguf").await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(chat(&node, "hf/org/Tiny-GGUF/tiny-Q8_0.gguf").await.0, 200);
    node.stop().await;
}

/// The body of a 4xx answer must be OpenAI's error shape naming `model`.
fn assert_model_error(status: u16, lines: &[Value], expected: u16, needle: &str) {
    assert_eq!(status, expected, "{lines:?}");
    // Ollama's shape: `{"error": "…"}` and nothing else.
    assert_eq!(lines[0].as_object().map(|o| o.len()), Some(1), "{lines:?}");
    let message = lines[0]["error"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[actix_rt::test]
async fn bad_names_and_unservable_repos_are_refused_with_clear_errors() {
    let hub = FakeHub::start();
    hub.add_repo(
        "org/lora",
        vec![
            ("adapter_config.json", b"{}".to_vec()),
            ("adapter_model.safetensors", b"x".to_vec()),
        ],
    );
    hub.add_repo(
        "org/sd",
        vec![
            ("model_index.json", b"{}".to_vec()),
            ("unet/diffusion_pytorch_model.safetensors", b"x".to_vec()),
        ],
    );
    hub.add_repo(
        "org/plain",
        vec![
            ("config.json", b"{}".to_vec()),
            ("model.safetensors", b"x".to_vec()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &hub, &["--python=/no/such/python3".to_string()]).await;
    for (name, needle) in [
        ("../../etc/passwd", "`..`"),
        ("/etc/passwd", "empty"),
        ("a b", "whitespace"),
        ("hf/o/r/x.bin", ".gguf"),
        ("hf.co/org/lora", "LoRA"),
        ("hf.co/org/sd", "diffusion"),
        ("hf.co/org/plain", "pip install"),
    ] {
        let (status, lines) = pull(&node, name).await;
        assert_model_error(status, &lines, 400, needle);
    }
    let (status, lines) = pull(&node, "hf.co/org/plain").await;
    let message = lines[0]["error"].as_str().unwrap().to_string();
    assert!(
        message.contains("torch") && message.contains("transformers"),
        "{message}; {status}"
    );
    assert!(
        !dir.path().join("store/hf-src").exists(),
        "nothing downloaded before the check"
    );
    let resp = client()
        .delete(format!("http://{}/api/delete", node.addr()))
        .json(&json!({"model": "../x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    node.stop().await;
}

#[actix_rt::test]
async fn rm_refuses_a_model_in_use_and_removes_an_idle_one() {
    let hub = FakeHub::start();
    // A slow fake model: 40 ms per token.
    let digest = hub.publish("library", "slow", "latest", b"token_ms=40", None);
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &hub, &[]).await;
    assert_eq!(pull(&node, "slow").await.0, 200);
    let addr = node.addr();
    let busy = actix_rt::spawn(async move {
        client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&json!({"model": "slow:latest", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
            .send()
            .await
            .unwrap()
            .status()
    });
    let delete = || async {
        client()
            .delete(format!("http://{}/api/delete", node.addr()))
            .json(&json!({"model": "slow"}))
            .send()
            .await
            .unwrap()
    };
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let resp = delete().await;
        if resp.status() == 409 {
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("in use"), "{body}");
            refused = true;
            break;
        }
        assert_ne!(resp.status(), 200, "removed while in use");
    }
    assert!(refused, "rm never saw the model in use");
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(delete().await.status(), 200);
    assert_eq!(chat(&node, "slow:latest").await.0, 404);
    assert!(!blob_file(dir.path(), &digest).exists());
    assert_eq!(delete().await.status(), 404);
    node.stop().await;
}

#[actix_rt::test]
async fn stored_models_are_served_after_a_restart() {
    let hub = FakeHub::start();
    hub.publish("library", "again", "v2", b"GGUF", None);
    let dir = tempfile::tempdir().unwrap();
    let first = node(dir.path(), &hub, &[]).await;
    assert_eq!(pull(&first, "again:v2").await.0, 200);
    first.stop().await;
    hub.state.lock().unwrap().manifests.clear(); // the registry is gone
    let second = node(dir.path(), &hub, &[]).await;
    assert_eq!(chat(&second, "again:v2").await.0, 200);
    second.stop().await;
}

/// Conversion tier: needs Python with torch, transformers, safetensors, numpy,
/// sentencepiece and gguf, and a complete `convert_hf_to_gguf.py`: what
/// `scripts/setup-convert.sh` installs and the node finds by default (the
/// real-checkpoint version of this test is `tests/tests/conversion.rs`).
#[actix_rt::test]
async fn a_tiny_safetensors_model_is_converted_and_served() {
    let python =
        llm_node::store::convert::default_python(std::env::var("LLM_NODE_PYTHON").ok().as_deref());
    // scripts/setup-convert.sh (run by the README's test command) installs
    // all of it: missing pieces fail the test rather than skip it.
    let script = llm_node::store::convert::preflight(&python, None)
        .await
        .unwrap_or_else(|e| panic!("{e} (run scripts/setup-convert.sh)"));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tiny");
    // A tiny random BERT with all-MiniLM-L6-v2's tokenizer (from setup-convert's
    // checkpoint): the converter only accepts tokenizers whose pre-tokenizer it
    // recognises, which a made-up vocabulary never is.
    let minilm = llm_node::store::convert::setup_dir().join("minilm");
    let build = format!(
        r#"
import shutil
from transformers import BertConfig, BertModel
cfg = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, max_position_embeddings=64)
BertModel(cfg).save_pretrained("{0}", safe_serialization=True)
for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy("{1}/" + f, "{0}/" + f)
"#,
        src.display(),
        minilm.display()
    );
    let ok = std::process::Command::new(&python)
        .args(["-c", &build])
        .status()
        .unwrap();
    assert!(ok.success(), "building the tiny model failed");
    let hub = FakeHub::start();
    let files = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect::<Vec<_>>();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    hub.add_repo("org/tiny", files);
    let node = node(
        dir.path(),
        &hub,
        &[format!("--convert-script={}", script.display())],
    )
    .await;
    let (status, lines) = pull(&node, "hf.co/org/tiny").await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l["status"].as_str().unwrap_or("").starts_with("converting")));
    assert_eq!(chat(&node, "hf.co/org/tiny:latest").await.0, 200);
    node.stop().await;
}

/// 24 MiB "free", whatever the disk has: room for one 8 MiB blob in 4 parts
/// (16 MiB while they are assembled), not two.
fn small_disk(_: &Path) -> std::io::Result<u64> {
    Ok(24 << 20)
}

#[actix_rt::test]
async fn concurrent_pulls_reserve_space_so_only_what_fits_runs_at_once() {
    let hub = FakeHub::start();
    hub.publish("library", "one", "latest", &synthetic(8 << 20, 1), None);
    hub.publish("library", "two", "latest", &synthetic(8 << 20, 2), None);
    // Slow bodies (2 MiB parts at 64 KiB per 20 ms: over half a second).
    hub.faults(|f| f.chunk_delay = Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_free_space(&store_args(dir.path(), &hub), small_disk).unwrap();
    let (one, two) = (
        ModelRef::parse("one").unwrap(),
        ModelRef::parse("two").unwrap(),
    );
    let (first, second) = tokio::join!(store.ensure(&one, &nothing), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.ensure(&two, &nothing).await
    });
    first.unwrap();
    let err = second.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::NoSpace, "{err}");
    assert!(err.to_string().contains("running pulls reserved"), "{err}");
    // The first pull released its reservation: the second fits now.
    hub.faults(|f| f.chunk_delay = Duration::ZERO);
    store.ensure(&two, &nothing).await.unwrap();
}

#[actix_rt::test]
async fn a_download_of_unknown_size_stops_at_the_limit_and_leaves_nothing() {
    let hub = FakeHub::start();
    let digest = hub.publish("library", "big", "latest", &synthetic(3 << 20, 3), None);
    let dir = tempfile::tempdir().unwrap();
    let downloader = Downloader {
        http: reqwest::Client::new(),
        parallel: 4,
        max_bytes: 1 << 20,
    };
    let req = BlobRequest {
        url: format!("{}/v2/library/big/blobs/{digest}", hub.url())
            .parse()
            .unwrap(),
        digest: None,
        size: None,
        bearer: None,
    };
    let dest = dir.path().join("model.gguf");
    let err = downloader.fetch(&req, &dest, &|_, _| {}).await.unwrap_err();
    assert!(matches!(err, DownloadError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("--max-download-gib"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // A declared size over the limit is refused before any transfer.
    let served = hub.served();
    let sized = BlobRequest {
        size: Some(3 << 20),
        ..req
    };
    let err = downloader
        .fetch(&sized, &dest, &|_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::TooLarge { .. }), "{err}");
    assert_eq!(hub.served(), served);
}
