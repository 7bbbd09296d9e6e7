//! One request, one trace, across the process boundary: the real node and its
//! real worker on the bundled model. The request id sent in comes back, and
//! names the worker's own log lines about the request (protocol field `trace`),
//! as the supervisor re-emits them into its log file.
//!
//! The worker logs per-request lines at `debug`; the node starts at `info`
//! and the level is raised at run time (`PUT /admin/log-level`), which reaches
//! the running worker through the protocol (`SetLogLevel`).

use std::time::{Duration, Instant};

use llm_node_tests::{chat, Node};
use serde_json::{json, Value};

#[test]
fn a_request_id_names_the_workers_log_lines_of_its_request() {
    // Only this test runs in this binary: the node starts at the default level.
    std::env::remove_var("RUST_LOG");
    let dir = std::env::temp_dir().join(format!("llm-node-tracing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = dir.join("node");
    let log_file = format!("--log-file={}", prefix.display());
    let node = Node::start(&["--log-format=json", &log_file]);
    let quiet = "req-before-the-switch";
    let r = node
        .http
        .post(node.url("/v1/chat/completions"))
        .header("x-request-id", quiet)
        .json(&chat("Say hi.", json!({"max_tokens": 4})))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = node
        .http
        .put(node.url("/admin/log-level"))
        .json(&json!({"level": "info,llm_node::worker=debug,llm_node_worker=debug"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = "req-trace-4242";
    let r = node
        .http
        .post(node.url("/v1/chat/completions"))
        .header("x-request-id", id)
        .json(&chat("Say hi.", json!({"max_tokens": 4})))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], id);
    assert!(r.headers()["traceparent"]
        .to_str()
        .unwrap()
        .starts_with("00-"));

    let lines = || -> Vec<Value> {
        std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<Value>>()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (worker, access) = loop {
        let all = lines();
        let worker: Vec<Value> = all
            .iter()
            .filter(|l| l["target"] == "llm_node::worker" && l.to_string().contains(id))
            .cloned()
            .collect();
        let access = all
            .iter()
            .find(|l| l["target"] == "access" && l["fields"]["request_id"] == id)
            .cloned();
        let finished = worker.iter().any(|l| l.to_string().contains("finished"));
        if let (true, Some(access)) = (finished, &access) {
            break (worker, access.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no worker lines naming {id}: {:#?}",
            all.iter()
                .filter(|l| l["target"] == "llm_node::worker")
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !lines()
            .iter()
            .any(|l| l["target"] == "llm_node::worker" && l.to_string().contains(quiet)),
        "the worker logged per-request lines before the level was raised"
    );
    // queued → started → finished, each naming the request, with the worker's model and pid.
    assert!(worker.len() >= 3, "{worker:#?}");
    assert!(
        worker.iter().all(|l| l["fields"]["pid"].as_u64().is_some()),
        "{worker:#?}"
    );
    let f = &access["fields"];
    assert_eq!(f["status"], 200);
    assert_eq!(f["completion_tokens"], 4, "{access}");
    assert!(f["prompt_tokens"].as_u64().unwrap() > 0, "{access}");
    node.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
