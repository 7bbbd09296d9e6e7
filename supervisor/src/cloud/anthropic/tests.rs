//! Tests of `anthropic.rs` on the documented Messages API shapes.

use serde_json::json;

use super::*;

fn req(openai: Value) -> Result<Value, TranslateError> {
    Anthropic
        .chat_request(&openai, "claude-sonnet-4-5", false)
        .map(|r| r.body)
}

fn param_of(e: TranslateError) -> Option<String> {
    match e {
        TranslateError::BadRequest { param, .. } => param,
        TranslateError::Upstream(_) => None,
    }
}

#[test]
fn request_maps_system_turns_sampling_and_defaults() {
    let body = Anthropic
        .chat_request(
            &json!({
                "model": "anthropic:claude-sonnet-4-5",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                    {"role": "user", "content": "Hi"},
                    {"role": "user", "content": [{"type": "text", "text": "there"}]},
                    {"role": "assistant", "content": "Bonjour"},
                    {"role": "user", "content": "Again"}
                ],
                "temperature": 0.5, "top_p": 0.9, "top_k": 40,
                "stop": "END", "user": "u-1", "stream_options": {"include_usage": true}
            }),
            "claude-sonnet-4-5",
            true,
        )
        .unwrap();
    assert_eq!(body.path, "/v1/messages");
    assert_eq!(
        body.body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": "Be brief.\n\nUse French.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
                {"role": "user", "content": [{"type": "text", "text": "Again"}]}
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
            "stream": true,
            "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}
        })
    );
}

#[test]
fn max_tokens_prefers_max_completion_tokens() {
    let cases = [
        (json!({}), DEFAULT_MAX_TOKENS),
        (json!({"max_tokens": 100}), 100),
        (json!({"max_completion_tokens": 50, "max_tokens": 100}), 50),
    ];
    for (extra, want) in cases {
        let mut r = json!({"messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        assert_eq!(req(r).unwrap()["max_tokens"], want);
    }
}

#[test]
fn tools_tool_choice_and_tool_turns_translate() {
    let body = req(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "24C"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false
    }))
    .unwrap();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"}]}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"name": "get_weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn tool_choice_table() {
    let cases = [
        (json!("none"), json!({"type": "none"})),
        (json!("auto"), json!({"type": "auto"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ];
    for (choice, want) in cases {
        assert_eq!(tool_choice(Some(&choice), None).unwrap(), Some(want));
    }
}

#[test]
fn response_format_becomes_a_system_instruction() {
    let body = req(json!({
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "r", "schema": {"type": "object"}}}
    }))
    .unwrap();
    let system = body["system"].as_str().unwrap();
    assert!(system.starts_with("S\n\nRespond with a single JSON object"));
    assert!(system.ends_with("JSON Schema: {\"type\":\"object\"}"));
    let body = req(json!({
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}
    }))
    .unwrap();
    assert_eq!(body["system"], JSON_OBJECT_INSTRUCTION);
}

#[test]
fn images_map_to_base64_and_url_sources() {
    let body = req(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
        {"type": "text", "text": "What?"}]}]}))
    .unwrap();
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
            {"type": "text", "text": "What?"}
        ])
    );
}

#[test]
fn unsupported_requests_name_the_param() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": user, "n": 2}), "n"),
        (json!({"messages": user, "seed": 1}), "seed"),
        (json!({"messages": user, "logprobs": true}), "logprobs"),
        (
            json!({"messages": user, "frequency_penalty": 0.5}),
            "frequency_penalty",
        ),
        (json!({"messages": user, "temperature": 1.5}), "temperature"),
        (json!({"messages": user, "stop": 3}), "stop"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a",
                "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": user, "tools": [{"type": "web_search"}]}),
            "tools[0]",
        ),
    ];
    for (r, param) in cases {
        assert_eq!(
            param_of(req(r.clone()).unwrap_err()),
            Some(param.into()),
            "{r}"
        );
    }
    // Harmless or null fields pass.
    req(json!({"messages": user, "n": 1, "seed": null, "store": false})).unwrap();
}

#[test]
fn whole_response_with_text_and_tool_use() {
    // The Messages API reference's tool-use example.
    let up = json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
             "name": "get_weather", "input": {"location": "San Francisco, CA"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 472, "output_tokens": 89,
                  "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0}
    });
    assert_eq!(
        response(&up, "anthropic:claude-sonnet-4-5", 7).unwrap(),
        json!({
            "id": "chatcmpl-msg_01Aq9w938a90dw8q",
            "object": "chat.completion",
            "created": 7,
            "model": "anthropic:claude-sonnet-4-5",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll check the weather.",
                    "refusal": null,
                    "tool_calls": [{
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {"name": "get_weather",
                                     "arguments": "{\"location\":\"San Francisco, CA\"}"}
                    }]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 482, "completion_tokens": 89, "total_tokens": 571}
        })
    );
    assert!(matches!(
        response(&json!({"type": "error"}), "m", 0),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn stop_reason_table() {
    for (reason, want) in [
        (Some("end_turn"), "stop"),
        (Some("stop_sequence"), "stop"),
        (Some("pause_turn"), "stop"),
        (Some("max_tokens"), "length"),
        (Some("tool_use"), "tool_calls"),
        (Some("refusal"), "content_filter"),
        (None, "stop"),
    ] {
        assert_eq!(finish_reason(reason), want, "{reason:?}");
    }
}

#[test]
fn error_message_reads_the_documented_shape() {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    assert_eq!(Anthropic.error_message(529, body), "Overloaded");
    assert_eq!(Anthropic.error_message(502, "bad gateway"), "bad gateway");
    assert_eq!(Anthropic.error_message(502, ""), "upstream answered 502");
    assert_eq!(Anthropic.error_message(500, &"é".repeat(400)).len(), 500);
}

// ---------------------------------------------------------------- streams

/// Feeds `(event, data)` pairs, then finishes; all chunks, or the first error.
fn run(events: &[(&str, &str)], include_usage: bool) -> Result<Vec<Value>, TranslateError> {
    let mut s = AnthropicStream::new("anthropic:claude", include_usage, 1);
    let mut out = Vec::new();
    for (event, data) in events {
        out.extend(s.feed(SseEvent {
            event: Some(event),
            data,
        })?);
    }
    out.extend(s.finish()?);
    Ok(out)
}

fn chunk(delta: Value, finish: Value) -> Value {
    json!({
        "id": "chatcmpl-msg_1", "object": "chat.completion.chunk", "created": 1,
        "model": "anthropic:claude",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    })
}

const START: (&str, &str) = (
    "message_start",
    r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
);
const STOP: (&str, &str) = ("message_stop", r#"{"type":"message_stop"}"#);

fn role() -> Value {
    chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )
}

/// The documented "basic streaming request" sequence.
fn text_events(stop_reason: &str) -> Vec<(&'static str, String)> {
    vec![
        (START.0, START.1.into()),
        ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into()),
        ("ping", r#"{"type": "ping"}"#.into()),
        ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#.into()),
        ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#.into()),
        ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#.into()),
        ("message_delta", format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop_reason}","stop_sequence":null}},"usage":{{"output_tokens":15}}}}"#)),
        (STOP.0, STOP.1.into()),
    ]
}

fn borrowed<'a>(events: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    events.iter().map(|(e, d)| (*e, d.as_str())).collect()
}

#[test]
fn text_stream_becomes_role_content_finish_chunks() {
    let events = text_events("end_turn");
    assert_eq!(
        run(&borrowed(&events), false).unwrap(),
        vec![
            role(),
            chunk(json!({"content": "Hello"}), Value::Null),
            chunk(json!({"content": "!"}), Value::Null),
            chunk(json!({}), json!("stop")),
        ]
    );
}

#[test]
fn max_tokens_stream_ends_in_length_and_usage() {
    let events = text_events("max_tokens");
    let chunks = run(&borrowed(&events), true).unwrap();
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[3]["usage"], Value::Null);
    assert_eq!(
        chunks[4],
        json!({
            "id": "chatcmpl-msg_1", "object": "chat.completion.chunk", "created": 1,
            "model": "anthropic:claude", "choices": [],
            "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
        })
    );
}

#[test]
fn tool_use_stream_gives_ids_names_and_argument_fragments() {
    // The documented tool-use stream, with two tool_use blocks after a text block.
    let events = [
        START,
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"get_weather","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco\"}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"get_time","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":2}"#,
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        ),
        STOP,
    ];
    let call = |i: u64, id: &str, name: &str| {
        chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        )
    };
    let args = |i: u64, a: &str| {
        chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": a}}]}),
            Value::Null,
        )
    };
    assert_eq!(
        run(&events, false).unwrap(),
        vec![
            role(),
            chunk(json!({"content": "Checking."}), Value::Null),
            call(0, "toolu_a", "get_weather"),
            args(0, "{\"location\": \"San Fra"),
            args(0, "ncisco\"}"),
            call(1, "toolu_b", "get_time"),
            args(1, "{}"),
            chunk(json!({}), json!("tool_calls")),
        ]
    );
}

#[test]
fn error_event_fails_the_stream() {
    let events = [
        START,
        (
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ];
    assert_eq!(
        run(&events, false).unwrap_err(),
        TranslateError::Upstream("Overloaded".into())
    );
}

#[test]
fn cut_stream_fails_at_finish() {
    let events = text_events("end_turn");
    for cut in 0..events.len() {
        let err = run(&borrowed(&events[..cut]), true).unwrap_err();
        assert!(matches!(err, TranslateError::Upstream(_)), "cut at {cut}");
    }
}

#[test]
fn stream_chunks_keep_openai_shape() {
    let events = text_events("end_turn");
    let chunks = run(&borrowed(&events), false).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        let last = i == chunks.len() - 1;
        assert_eq!(c["choices"][0]["finish_reason"].is_null(), !last);
        assert_eq!(c["choices"][0]["index"], 0);
        assert!(c["choices"][0]["delta"].is_object());
    }
}

#[test]
fn garbage_event_is_an_upstream_error() {
    assert!(matches!(
        run(&[("message_start", "{nope")], false),
        Err(TranslateError::Upstream(_))
    ));
}
