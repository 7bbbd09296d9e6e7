//! OTLP trace export of the `llm-node` binary (with the fake worker) into a
//! fake collector on loopback that decodes the real wire format
//! (`opentelemetry-proto`'s prost types for OTLP/HTTP protobuf): a request
//! that comes with a `traceparent` is exported in the caller's trace with the
//! service name, the HTTP and usage attributes and its child spans; a
//! collector that refuses or never answers neither slows nor fails requests,
//! is reported once, and does not hold up shutdown.

mod common;
use common::fake_worker;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

/// One exported span and the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// A collector answering `POST /v1/traces` on a loopback port.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = spans.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || {
                    let store = store.clone();
                    actix_web::App::new().route(
                        "/v1/traces",
                        actix_web::web::post().to(move |body: actix_web::web::Bytes| {
                            let store = store.clone();
                            async move { receive(&store, &body) }
                        }),
                    )
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            })
        });
        let addr = rx.recv().unwrap();
        Collector {
            url: format!("http://{addr}"),
            spans,
        }
    }

    /// Waits up to 15 s for the spans of `trace_id` to include every name in `names`.
    fn wait_trace(&self, trace_id: &[u8], names: &[&str]) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let trace: Vec<Received> = (self.spans.lock().unwrap().iter())
                .filter(|r| r.span.trace_id == trace_id)
                .cloned()
                .collect();
            if names
                .iter()
                .all(|n| trace.iter().any(|r| r.span.name == *n))
            {
                return trace;
            }
            assert!(Instant::now() < deadline, "missing {names:?} in {trace:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn receive(store: &Mutex<Vec<Received>>, body: &[u8]) -> actix_web::HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return actix_web::HttpResponse::BadRequest().finish();
    };
    for resource_spans in request.resource_spans {
        let attributes = resource_spans.resource.map(|r| r.attributes);
        let service = string(&attributes.unwrap_or_default(), "service.name").unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                store.lock().unwrap().push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    actix_web::HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    let kv = attributes.iter().find(|kv| kv.key == key)?;
    kv.value.as_ref()?.value.as_ref()
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match value(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match value(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct Spawned {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Spawned {
    /// SIGTERM, then how long the node took to exit.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        started.elapsed()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the binary with `RUST_LOG=warn` (export does not depend on the log
/// level) and the batch processor's delay at 100 ms (unless `env` says otherwise).
fn spawn(dir: &Path, otlp: &str, env: &[(&str, &str)]) -> Spawned {
    let model = dir.join("m.gguf");
    std::fs::write(&model, "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm-node"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("LLM_NODE_LOOPBACK_ONLY", "true")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .envs(env.iter().copied())
        .args([
            "--host=127.0.0.1",
            "--port=0",
            "--log-format=json",
            "--registry-url=http://127.0.0.1:9",
            "--hf-endpoint=http://127.0.0.1:9",
            "--no-ollama-models",
            "--drain-timeout-secs=1",
        ])
        .arg(format!("--otlp-endpoint={otlp}"))
        .arg(format!("--store-dir={}", dir.join("store").display()))
        .arg(format!("--model=m={}", model.display()))
        .arg(format!("--worker-bin={}", fake_worker().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr: Arc<Mutex<String>> = Arc::default();
    let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let base = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}: {}", stderr.lock().unwrap()))
        .to_string();
    Spawned {
        child,
        base,
        stderr,
    }
}

fn chat(
    http: &reqwest::blocking::Client,
    base: &str,
    traceparent: Option<&str>,
) -> reqwest::blocking::Response {
    let body =
        json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    let mut request = http.post(format!("{base}/v1/chat/completions")).json(&body);
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    request.send().unwrap()
}

#[test]
fn a_request_with_a_traceparent_is_exported_in_the_callers_trace() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(
        dir.path(),
        &collector.url,
        &[("OTEL_SERVICE_NAME", "llm-node-under-test")],
    );
    let http = reqwest::blocking::Client::new();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = chat(&http, &node.base, Some(&format!("00-{trace}-{parent}-01")));
    assert_eq!(r.status().as_u16(), 200);
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_string();
    let _ = r.text();

    let spans = collector.wait_trace(
        &hex(trace),
        &[
            "POST /v1/chat/completions",
            "model_acquire",
            "queue_wait",
            "generation",
        ],
    );
    let request = spans
        .iter()
        .find(|r| r.span.name == "POST /v1/chat/completions")
        .unwrap();
    assert_eq!(request.service, "llm-node-under-test");
    let span = &request.span;
    assert_eq!(
        span.parent_span_id,
        hex(parent),
        "the caller's span is the parent"
    );
    assert_eq!(span.kind, SpanKind::Server as i32);
    // The response names this very span as the caller's child.
    assert_eq!(
        echoed,
        format!("00-{trace}-{}-01", hex_of(&span.span_id)),
        "{span:#?}"
    );
    let a = &span.attributes;
    assert_eq!(string(a, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        string(a, "http.route").as_deref(),
        Some("/v1/chat/completions")
    );
    assert_eq!(int(a, "http.response.status_code"), Some(200));
    assert_eq!(string(a, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(string(a, "gen_ai.request.model").as_deref(), Some("m"));
    assert_eq!(int(a, "gen_ai.usage.output_tokens"), Some(3));
    assert!(int(a, "gen_ai.usage.input_tokens").unwrap() > 0, "{a:?}");
    assert!(
        matches!(value(a, "llm_node.ttft_ms"), Some(any_value::Value::DoubleValue(ms)) if *ms >= 0.0),
        "{a:?}"
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    for child in ["model_acquire", "queue_wait", "generation"] {
        let c = &spans.iter().find(|r| r.span.name == child).unwrap().span;
        assert_eq!(
            c.parent_span_id, span.span_id,
            "{child} is the request's child"
        );
        assert!(
            c.start_time_unix_nano >= span.start_time_unix_nano,
            "{child}"
        );
    }
    let generation = &spans
        .iter()
        .find(|r| r.span.name == "generation")
        .unwrap()
        .span;
    assert_eq!(int(&generation.attributes, "completion_tokens"), Some(3));
    assert!(int(&generation.attributes, "prompt_tokens").unwrap() > 0);
    assert_eq!(
        string(&generation.attributes, "outcome").as_deref(),
        Some("ok")
    );

    // Without a traceparent the node's trace id is the exported span's.
    let r = chat(&http, &node.base, None);
    assert_eq!(r.status().as_u16(), 200);
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_string();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let own_trace = echoed.split('-').nth(1).unwrap().to_string();
    assert_eq!(request_id, own_trace);
    let spans = collector.wait_trace(&hex(&own_trace), &["POST /v1/chat/completions"]);
    let root = spans
        .iter()
        .find(|r| r.span.name == "POST /v1/chat/completions")
        .unwrap();
    assert!(root.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        echoed,
        format!("00-{own_trace}-{}-01", hex_of(&root.span.span_id))
    );

    // The level still switches at run time with export on (its filter is the
    // log outputs' own): access lines are `info`.
    let access = |node: &Spawned| node.stderr.lock().unwrap().contains(r#""target":"access""#);
    assert!(!access(&node), "the level is warn");
    let r = http
        .put(format!("{}/admin/log-level", node.base))
        .json(&json!({"level": "info"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(chat(&http, &node.base, None).status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !access(&node) {
        assert!(Instant::now() < deadline, "no access line after the switch");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` requests, each of which must succeed well within `limit`.
fn requests_stay_fast(node: &Spawned, n: usize, limit: Duration) {
    let http = reqwest::blocking::Client::new();
    for i in 0..n {
        let started = Instant::now();
        let parent = format!("00-{:032x}-00f067aa0ba902b7-01", i + 1);
        let r = chat(&http, &node.base, Some(&parent));
        assert_eq!(r.status().as_u16(), 200, "request {i}");
        let _ = r.text();
        assert!(
            started.elapsed() < limit,
            "request {i} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn an_unreachable_collector_neither_slows_nor_fails_requests_and_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    // Refused at once: every batch fails, one warning says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut node = spawn(dir.path(), &format!("http://127.0.0.1:{port}"), &[]);
    // The first request may wait for the model to load.
    requests_stay_fast(&node, 1, Duration::from_secs(20));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        requests_stay_fast(&node, 1, Duration::from_secs(2));
    }
    let took = node.stop();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let stderr = node.stderr.lock().unwrap().clone();
    let warnings = stderr.matches("OTLP export failed").count();
    assert_eq!(warnings, 1, "{stderr}");
}

#[test]
fn a_collector_that_never_answers_does_not_hold_up_requests_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut node = spawn(
        dir.path(),
        &url,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ],
    );
    requests_stay_fast(&node, 1, Duration::from_secs(20));
    // More spans than the queue holds while the exporter is stuck: dropped, not waited for.
    requests_stay_fast(&node, 30, Duration::from_secs(2));
    let took = node.stop();
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    drop(silent);
}

#[test]
fn spans_still_queued_at_shutdown_are_sent_before_the_node_exits() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    // The batch processor would wait ten minutes before sending on its own.
    let mut node = spawn(
        dir.path(),
        &collector.url,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let http = reqwest::blocking::Client::new();
    let r = chat(
        &http,
        &node.base,
        Some(&format!("00-{trace}-b7ad6b7169203331-01")),
    );
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.text();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.span.trace_id == hex(trace)),
        "nothing is sent before the delay or the shutdown"
    );
    let took = node.stop();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    collector.wait_trace(&hex(trace), &["POST /v1/chat/completions", "generation"]);
}
