//! The fake cloud providers (`fake_providers/`) answer as documented, and the
//! node's translations (`llm_node::cloud::{anthropic, google}`) read those
//! answers: whole and streamed replies, tool calls, and each fault. The
//! dispatcher's own end-to-end tests use the same fakes through the node.

mod fake_providers;

use fake_providers::anthropic as fa;
use fake_providers::google as fg;
use fake_providers::Fault;
use llm_node::cloud::anthropic::Anthropic;
use llm_node::cloud::google::Google;
use llm_node::cloud::translate::{Provider, SseEvent, TranslateError};
use serde_json::{json, Value};

fn chat(stream: bool, tools: bool) -> Value {
    let mut r = json!({
        "model": "x",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Weather in SF?"}],
        "stream": stream,
    });
    if tools {
        r["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    }
    r
}

/// Posts the translated request; `(status, retry-after, body)`.
async fn post(
    p: &dyn Provider,
    base: &str,
    openai: &Value,
    model: &str,
) -> (u16, Option<String>, Result<String, reqwest::Error>) {
    let stream = openai["stream"] == json!(true);
    let up = p.chat_request(openai, model, stream).unwrap();
    let req = reqwest::Client::new()
        .post(format!("{base}{}", up.path))
        .json(&up.body);
    let req = match p.name() {
        "anthropic" => req
            .header("x-api-key", fa::KEY)
            .header("anthropic-version", "2023-06-01"),
        _ => req.header("x-goog-api-key", fg::KEY),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.text().await)
}

/// Splits an SSE body into events (LF or CRLF framing) and translates them.
fn translate_stream(p: &dyn Provider, body: &str) -> Result<Vec<Value>, TranslateError> {
    translate_stream_with(p, body, true)
}

fn translate_stream_with(
    p: &dyn Provider,
    body: &str,
    include_usage: bool,
) -> Result<Vec<Value>, TranslateError> {
    let body = body.replace("\r\n", "\n");
    let mut s = p.chat_stream("m", include_usage);
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let event = block.lines().find_map(|l| l.strip_prefix("event: "));
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        out.extend(s.feed(SseEvent {
            event,
            data: &data.join("\n"),
        })?);
    }
    out.extend(s.finish()?);
    Ok(out)
}

fn finish_reasons(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned))
        .collect()
}

#[actix_rt::test]
async fn fakes_serve_whole_and_streamed_answers_the_translations_read() {
    let anthropic = fa::start();
    let google = fg::start();
    let cases: [(&dyn Provider, String, &str); 2] = [
        (&Anthropic, anthropic.url(), "claude-sonnet-4-5"),
        (&Google, google.url(), "gemini-2.0-flash"),
    ];
    for (p, base, model) in cases {
        for tools in [false, true] {
            let (status, _, body) = post(p, &base, &chat(false, tools), model).await;
            assert_eq!(status, 200, "{}", p.name());
            let whole = p
                .chat_response(serde_json::from_str(&body.unwrap()).unwrap(), "m")
                .unwrap();
            let want = if tools { "tool_calls" } else { "stop" };
            assert_eq!(whole["choices"][0]["finish_reason"], want, "{}", p.name());

            let (status, _, body) = post(p, &base, &chat(true, tools), model).await;
            assert_eq!(status, 200);
            let chunks = translate_stream(p, &body.unwrap()).unwrap();
            assert_eq!(finish_reasons(&chunks), vec![want], "{}", p.name());
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
        }
    }
    let seen = anthropic.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].body["system"], "Be brief.");
    assert!(google.requests()[3]
        .uri
        .ends_with(":streamGenerateContent?alt=sse"));
    anthropic.stop().await;
    google.stop().await;
}

#[actix_rt::test]
async fn fakes_answer_faults_in_the_providers_error_shapes() {
    let anthropic = fa::start();
    let google = fg::start();
    let faults = [
        (Fault::Unauthorized, 401, None),
        (
            Fault::RateLimited {
                retry_after_secs: 7,
            },
            429,
            Some("7".to_owned()),
        ),
        (Fault::ServerError, 500, None),
    ];
    for (fault, want_status, want_retry) in faults {
        anthropic.set_fault(fault);
        google.set_fault(fault);
        for (p, base) in [
            (&Anthropic as &dyn Provider, anthropic.url()),
            (&Google, google.url()),
        ] {
            let (status, retry, body) = post(p, &base, &chat(false, false), "m").await;
            assert_eq!((status, &retry), (want_status, &want_retry), "{}", p.name());
            let message = p.error_message(status, &body.unwrap());
            assert!(!message.starts_with('{'), "{message}");
        }
    }
    anthropic.set_fault(Fault::CutStream { after_events: 3 });
    google.set_fault(Fault::CutStream { after_events: 1 });
    for (p, base) in [
        (&Anthropic as &dyn Provider, anthropic.url()),
        (&Google, google.url()),
    ] {
        let (status, _, body) = post(p, &base, &chat(true, false), "m").await;
        assert_eq!(status, 200);
        // The body either breaks off, or what came is not a whole stream.
        if let Ok(body) = body {
            assert!(matches!(
                translate_stream(p, &body),
                Err(TranslateError::Upstream(_))
            ));
        }
    }
    anthropic.set_fault(Fault::ErrorEvent { after_events: 3 });
    google.set_fault(Fault::ErrorEvent { after_events: 1 });
    for (p, base, message) in [
        (&Anthropic as &dyn Provider, anthropic.url(), "Overloaded"),
        (
            &Google,
            google.url(),
            "The model is overloaded. Please try again later.",
        ),
    ] {
        let (status, _, body) = post(p, &base, &chat(true, false), "m").await;
        assert_eq!(status, 200);
        assert_eq!(
            translate_stream(p, &body.unwrap()),
            Err(TranslateError::Upstream(message.into()))
        );
    }
    anthropic.stop().await;
    google.stop().await;
}

fn venv_python() -> String {
    let cache = std::env::var("LLM_NODE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/llm-node",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = format!("{cache}/venv/bin/python");
    assert!(
        std::path::Path::new(&python).is_file(),
        "no Python client environment at {python}: run scripts/setup.sh (the README's test command does)"
    );
    python
}

/// The chunks translated from each fake's streams, framed as the dispatcher
/// frames them (`data: …` then `data: [DONE]`), are read by the unmodified
/// `openai` SDK (tests/python/openai_cloud_chunks.py): its raw iterator and
/// its accumulating `stream()` helper.
#[actix_rt::test]
async fn the_openai_sdk_reads_the_translated_streams() {
    let python = venv_python();
    let anthropic = fa::start();
    let google = fg::start();
    let dir = tempfile::tempdir().unwrap();
    let weather = json!([{"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}]);
    // (provider, base URL, model, contents and usages without / with tools)
    type Case<'a> = (&'a dyn Provider, String, &'a str, [Value; 2], [Value; 2]);
    let cases: [Case; 2] = [
        (
            &Anthropic,
            anthropic.url(),
            "claude-sonnet-4-5",
            [json!(fa::TEXT), json!("I'll look that up.")],
            [
                json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}),
                json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}),
            ],
        ),
        (
            &Google,
            google.url(),
            "gemini-2.0-flash",
            [json!(fg::TEXT.concat()), json!("")],
            [
                json!({"prompt_tokens": 9, "completion_tokens": 11, "total_tokens": 20}),
                json!({"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}),
            ],
        ),
    ];
    for (p, base, model, contents, usages) in cases {
        for (t, tools) in [false, true].into_iter().enumerate() {
            let (_, _, body) = post(p, &base, &chat(true, tools), model).await;
            let body = body.unwrap();
            for include_usage in [false, true] {
                let chunks = translate_stream_with(p, &body, include_usage).unwrap();
                let mut sse: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
                sse.push_str("data: [DONE]\n\n");
                let name = format!("{}-tools{tools}-usage{include_usage}", p.name());
                let want = json!({
                    "content": contents[t],
                    "tool_calls": if tools { weather.clone() } else { json!([]) },
                    "finish_reason": if tools { "tool_calls" } else { "stop" },
                    "usage": if include_usage { usages[t].clone() } else { Value::Null },
                });
                std::fs::write(dir.path().join(format!("{name}.sse")), sse).unwrap();
                std::fs::write(dir.path().join(format!("{name}.json")), want.to_string()).unwrap();
            }
        }
    }
    anthropic.stop().await;
    google.stop().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_cloud_chunks.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(dir.path())
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed (8 streams)"),
        "openai_cloud_chunks.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
