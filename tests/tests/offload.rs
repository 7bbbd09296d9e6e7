//! Offload truth and the memory estimate, on the real worker and the bundled
//! model: what the worker reports about where llama.cpp put the model, and how
//! close the GGUF-based estimate comes to what llama.cpp really allocated.
//! This machine has no GPU: the worker runs on the CPU and must say so.

use llm_node_tests::{chat, Node, MODEL};
use serde_json::Value;

/// `a` within `pct` % of `b`.
fn within(a: u64, b: u64, pct: f64) -> bool {
    (a as f64 - b as f64).abs() <= b as f64 * pct / 100.0
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The estimate placement uses vs llama.cpp's own buffers, by kind and in total.
fn assert_estimate_matches_allocation(m: &Value, label: &str) {
    let (est, alloc) = (&m["estimate"], &m["offload"]["allocated"]);
    let pairs = [
        ("weights", u(&est["weights_bytes"]), u(&alloc["weights"])),
        ("kv", u(&est["kv_bytes"]), u(&alloc["kv"])),
        (
            "compute+output",
            u(&est["compute_bytes"]),
            u(&alloc["compute"]) + u(&alloc["output"]),
        ),
        (
            "total",
            u(&est["device_bytes"]) + u(&est["host_bytes"]),
            u(&alloc["weights"]) + u(&alloc["kv"]) + u(&alloc["compute"]) + u(&alloc["output"]),
        ),
    ];
    for (what, estimated, allocated) in pairs {
        eprintln!(
            "{label}: {what}: estimated {:.2} MiB, llama.cpp allocated {:.2} MiB",
            estimated as f64 / 1048576.0,
            allocated as f64 / 1048576.0
        );
        assert!(
            allocated > 0,
            "{label}: llama.cpp reported no {what} buffer: {m}"
        );
        assert!(
            within(estimated, allocated, 10.0),
            "{label}: {what} estimated {estimated} vs allocated {allocated}: {m}"
        );
    }
}

#[test]
fn cpu_worker_reports_cpu_backend_and_no_offloaded_layer_on_the_real_model() {
    let node = Node::start_with(2, &[]);
    let m = node.admin_model(MODEL);
    let o = &m["offload"];
    assert_eq!(o["backend"], "CPU", "{m}");
    assert!(
        o["backends"].as_array().unwrap().iter().any(|b| b == "CPU"),
        "{m}"
    );
    assert_eq!(o["devices"], serde_json::json!([]), "{m}");
    assert_eq!(o["layers_offloaded"], 0, "{m}");
    // SmolLM2-135M: 30 repeating layers plus the output layer.
    assert_eq!(o["layers_total"], 31, "{m}");
    assert_eq!(o["device_bytes"], 0, "{m}");
    assert_estimate_matches_allocation(&m, "ctx 1024 x 2");

    let r = node.metrics();
    assert!(
        r.contains(&format!(
            "llm_node_model_offloaded_layers{{backend=\"CPU\",model=\"{MODEL}\"}} 0"
        )),
        "{r}"
    );
    assert!(
        r.contains(&format!("llm_node_model_layers{{model=\"{MODEL}\"}} 31")),
        "{r}"
    );
    assert!(r.contains(&format!(
        "llm_node_model_device_memory_bytes{{model=\"{MODEL}\"}} 0"
    )));
}

#[test]
fn memory_estimate_is_within_ten_percent_of_llama_cpp_allocations_at_a_larger_context() {
    let node = Node::spawn_ctx(4, 4096, &[]);
    node.wait_ready(MODEL);
    assert_estimate_matches_allocation(&node.admin_model(MODEL), "ctx 4096 x 4");
}

#[test]
fn a_q8_0_kv_cache_is_allocated_as_estimated_and_the_model_still_chats() {
    let node = Node::spawn_ctx(
        4,
        4096,
        &["--cache-type-k", "q8_0", "--cache-type-v", "q8_0"],
    );
    node.wait_ready(MODEL);
    let m = node.admin_model(MODEL);
    assert_eq!(
        m["kv_cache"],
        serde_json::json!({"type_k": "q8_0", "type_v": "q8_0"}),
        "{m}"
    );
    // SmolLM2-135M: 30 layers × (192 + 192) × 4 × 4096 cells, f16 = 360 MiB;
    // q8_0 stores 34 bytes per 32 elements: 191.25 MiB.
    let kv = u(&m["offload"]["allocated"]["kv"]);
    let q8 = 30 * 384 * 4 * 4096 * 34 / 32;
    assert!(
        within(kv, q8, 1.0),
        "llama.cpp's KV buffer {kv} vs q8_0's {q8}: {m}"
    );
    assert_estimate_matches_allocation(&m, "ctx 4096 x 4, q8_0 cache");
    // A quantised V cache needs flash attention (llama.cpp turns it on); the
    // model must still answer.
    let (status, body) = node.post(
        "/v1/chat/completions",
        &chat(
            "Say hello.",
            serde_json::json!({"max_tokens": 8, "temperature": 0}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8, "{body}");
}

#[test]
fn a_gpu_node_with_a_cpu_only_worker_says_so_in_admin_gpus() {
    // The simulated GPU stands in for NVML; the worker is this machine's CPU build.
    let node = Node::start_with(1, &["--simulated-gpus", "H100:80"]);
    let (status, gpus) = node.get("/admin/gpus");
    assert_eq!(status, 200);
    assert_eq!(
        gpus["worker_backends"],
        serde_json::json!(["CPU"]),
        "{gpus}"
    );
    let warning = gpus["warning"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning: {gpus}"));
    assert!(warning.contains("1 GPU(s) detected (H100)"), "{warning}");
    assert!(warning.contains("models run on the CPU"), "{warning}");
    // And the model really ran on the CPU, whatever placement chose.
    let m = node.admin_model(MODEL);
    assert_eq!(m["offload"]["backend"], "CPU", "{m}");
    assert_eq!(m["offload"]["layers_offloaded"], 0, "{m}");
}
