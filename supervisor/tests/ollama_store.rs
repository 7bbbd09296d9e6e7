//! Ollama's model routes on a whole node with fake workers, against the fake
//! Ollama registry of `fake_hub/` on loopback: `"insecure": true` pulls from
//! a registry named by host over plain HTTP (and only then), `/api/tags` and
//! `/api/show` report the GGUF's details and the store's template and
//! parameters, `/api/copy` names a stored model again without new blobs and
//! serves it, `/api/ps` reports what is loaded.

mod common;
use common::fake_worker;

mod fake_hub;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use fake_hub::FakeHub;
use llm_node::{Args, Node};
use serde_json::{json, Value};

fn bundled_gguf() -> Vec<u8> {
    let path = std::env::var("LLM_NODE_TEST_MODEL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            std::env::var("HOME").unwrap()
        )
    });
    std::fs::read(&path).unwrap_or_else(|e| panic!("bundled model {path}: {e}"))
}

/// A node with the store at `dir/store` and one model configured by path,
/// `base`, whose file is only a GGUF magic (its header cannot be read).
async fn node(dir: &Path, hub: &FakeHub) -> Node {
    let base = dir.join("base.gguf");
    std::fs::write(&base, "GGUF").unwrap();
    let argv = [
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        "--loopback-only".into(),
        format!("--model=base={}", base.display()),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=5".into(),
        format!("--store-dir={}", dir.join("store").display()),
        format!("--registry-url={}", hub.url()),
        format!("--hf-endpoint={}", hub.url()),
        "--no-ollama-models".into(),
    ];
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

/// A request to the node; the status and the body as text.
async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, format!("http://{}{path}", node.addr()));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The last NDJSON line of a pull, or its error body.
fn last_line(text: &str) -> Value {
    json_of(text.lines().last().unwrap_or("null"))
}

fn ollama_error(text: &str) -> String {
    let body = json_of(text);
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{text}");
    body["error"].as_str().unwrap().to_string()
}

fn blobs(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("store/blobs")).unwrap().count()
}

#[actix_rt::test]
async fn an_insecure_pull_reaches_a_plain_http_registry_and_only_then() {
    let hub = FakeHub::start();
    hub.publish(
        "library",
        "smol",
        "135m",
        &bundled_gguf(),
        Some("{{ .Prompt }}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &hub).await;
    // `host:port/ns/name:tag`: the hub is plain HTTP on loopback.
    let name = format!(
        "{}/library/smol:135m",
        hub.url().trim_start_matches("http://")
    );
    let (status, text) = call(&node, "POST", "/api/pull", Some(json!({"model": name}))).await;
    assert!(
        status >= 400,
        "a secure pull succeeded over plain HTTP: {status} {text}"
    );
    assert!(ollama_error(&text).contains("https://"), "{text}");
    let body = json!({"model": name, "insecure": true});
    let (status, text) = call(&node, "POST", "/api/pull", Some(body)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(last_line(&text), json!({"status": "success"}), "{text}");
    let chat = json!({"model": name, "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = call(&node, "POST", "/v1/chat/completions", Some(chat)).await;
    assert_eq!(status, 200, "served under its name: {text}");
    node.stop().await;
}

#[actix_rt::test]
async fn tags_show_copy_ps_and_delete_describe_stored_models() {
    let hub = FakeHub::start();
    let gguf = bundled_gguf();
    hub.publish("library", "smol", "135m", &gguf, Some("{{ .Prompt }}"));
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &hub).await;
    let (status, text) = call(
        &node,
        "POST",
        "/api/pull",
        Some(json!({"model": "smol:135m"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // /api/tags: real details, size, digest and time.
    let (_, text) = call(&node, "GET", "/api/tags", None).await;
    let tags = json_of(&text);
    let smol = &tags["models"][0];
    assert_eq!(smol["name"], "smol:135m");
    let details = json!({"parent_model": "", "format": "gguf", "family": "llama",
        "families": ["llama"], "parameter_size": "134.52M", "quantization_level": "Q4_1"});
    assert_eq!(smol["details"], details, "{text}");
    assert!(smol["size"].as_u64().unwrap() > gguf.len() as u64);
    let digest = smol["digest"].as_str().unwrap().to_string();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let modified = smol["modified_at"].as_str().unwrap();
    assert!(
        modified.starts_with("20") && modified.ends_with('Z'),
        "{modified}"
    );

    // /api/show by a short spelling: the store's template and parameters.
    let (status, text) = call(
        &node,
        "POST",
        "/api/show",
        Some(json!({"model": "SMOL:135m"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let show = json_of(&text);
    assert_eq!(show["details"], details);
    assert_eq!(show["template"], "{{ .Prompt }}");
    assert_eq!(show["parameters"], format!("{:<30} \"<|im_end|>\"", "stop"));
    assert_eq!(show["capabilities"], json!(["completion"]));
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert_eq!(show["model_info"]["llama.context_length"], 8192);
    assert_eq!(show["model_info"]["tokenizer.ggml.tokens"], Value::Null);
    assert!(show["modelfile"]
        .as_str()
        .unwrap()
        .contains("PARAMETER stop \"<|im_end|>\""));

    // /api/copy: a new name, no new blob, served at once.
    let before = blobs(dir.path());
    let copy = json!({"source": "smol:135m", "destination": "backup"});
    let (status, text) = call(&node, "POST", "/api/copy", Some(copy)).await;
    assert_eq!((status, text.as_str()), (200, ""));
    assert_eq!(blobs(dir.path()), before, "the copy shares the blobs");
    let chat = json!({"model": "backup", "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = call(&node, "POST", "/v1/chat/completions", Some(chat)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["model"], "backup:latest");
    let (_, text) = call(&node, "GET", "/api/tags", None).await;
    let tags = json_of(&text);
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["backup:latest", "smol:135m", "base"],
        "stored, then configured"
    );
    assert_eq!(
        tags["models"][0]["digest"],
        digest.as_str(),
        "the same manifest"
    );
    // A model configured by path: the file's size, no manifest, no readable header.
    let base = &tags["models"][2];
    assert_eq!((&base["size"], &base["digest"]), (&json!(4), &json!("")));
    assert_eq!(base["details"]["family"], "", "{base}");
    for (body, want) in [
        (json!({"source": "nope", "destination": "x"}), 404),
        (json!({"source": "smol:135m"}), 400),
        (json!({"destination": "x"}), 400),
        (json!({"source": "smol:135m", "destination": "../x"}), 400),
    ] {
        let (status, text) = call(&node, "POST", "/api/copy", Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {text}");
        ollama_error(&text);
    }

    // /api/ps: the loaded copy, with the manifest's digest.
    let (_, text) = call(&node, "GET", "/api/ps", None).await;
    let ps = json_of(&text);
    let loaded = ps["models"].as_array().unwrap();
    let backup = loaded
        .iter()
        .find(|m| m["name"] == "backup:latest")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(backup["digest"], digest.as_str());
    assert_eq!(backup["details"], details);
    assert!(backup["expires_at"].is_string() || backup["expires_at"].is_null());

    // /api/delete of the copy keeps the original whole.
    let (status, _) = call(
        &node,
        "DELETE",
        "/api/delete",
        Some(json!({"model": "backup"})),
    )
    .await;
    assert_eq!(status, 200);
    let chat = json!({"model": "smol:135m", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _) = call(&node, "POST", "/v1/chat/completions", Some(chat)).await;
    assert_eq!(status, 200);
    let (status, text) = call(
        &node,
        "DELETE",
        "/api/delete",
        Some(json!({"model": "backup"})),
    )
    .await;
    assert_eq!(status, 404);
    ollama_error(&text);
    node.stop().await;
}
