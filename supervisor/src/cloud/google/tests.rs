//! Tests of `google.rs` on the documented Gemini API shapes.

use serde_json::json;

use super::*;

fn ids() -> Ids {
    Ids {
        completion: "chatcmpl-g".into(),
        created: 1,
        calls: "x".into(),
    }
}

fn req(openai: Value) -> Result<Value, TranslateError> {
    Google
        .chat_request(&openai, "gemini-2.0-flash", false)
        .map(|r| r.body)
}

fn param_of(e: TranslateError) -> Option<String> {
    match e {
        TranslateError::BadRequest { param, .. } => param,
        TranslateError::Upstream(_) => None,
    }
}

#[test]
fn paths_for_whole_and_streamed_answers() {
    let r = json!({"messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        Google
            .chat_request(&r, "gemini-2.0-flash", false)
            .unwrap()
            .path,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        Google
            .chat_request(&r, "gemini-2.0-flash", true)
            .unwrap()
            .path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
}

#[test]
fn request_maps_system_turns_and_generation_config() {
    let body = req(json!({
        "model": "google:gemini-2.0-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"}
        ],
        "temperature": 1.2, "top_p": 0.9, "top_k": 40, "n": 2, "seed": 7,
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "max_completion_tokens": 100, "stop": ["A", "B"], "user": "u",
        "response_format": {"type": "json_object"}
    }))
    .unwrap();
    assert_eq!(
        body,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
                {"role": "model", "parts": [{"text": "Hello"}]},
                {"role": "user", "parts": [{"text": "Again"}]}
            ],
            "generationConfig": {
                "temperature": 1.2, "topP": 0.9, "topK": 40, "candidateCount": 2, "seed": 7,
                "presencePenalty": 0.1, "frequencyPenalty": 0.2,
                "maxOutputTokens": 100, "stopSequences": ["A", "B"],
                "responseMimeType": "application/json"
            }
        })
    );
}

#[test]
fn tools_and_tool_turns_translate_with_names_from_ids() {
    let body = req(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"}
        ],
        "tools": [
            {"type": "function", "function": {
                "name": "get_weather", "description": "Weather by city",
                "parameters": {"$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object", "additionalProperties": false, "strict": true,
                    "properties": {"city": {"type": "string", "const": "x"},
                                   "unit": {"type": ["string", "null"], "enum": ["C", "F"]},
                                   "tags": {"type": "array", "items": {"type": "string",
                                                                      "additionalProperties": false}}},
                    "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time",
                "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": true
    }))
    .unwrap();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}}]}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather by city",
             "parameters": {"type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "nullable": true, "enum": ["C", "F"]},
                               "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["city"]}},
            {"name": "get_time"}
        ]}])
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
}

#[test]
fn tool_choice_table() {
    for (choice, want) in [
        (json!("none"), json!({"mode": "NONE"})),
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("required"), json!({"mode": "ANY"})),
    ] {
        assert_eq!(
            tool_config(&choice).unwrap(),
            json!({ "functionCallingConfig": want })
        );
    }
}

#[test]
fn json_schema_becomes_response_schema() {
    let body = req(json!({
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
            "schema": {"type": "object", "additionalProperties": false,
                       "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}
    }))
    .unwrap();
    assert_eq!(
        body["generationConfig"],
        json!({"responseMimeType": "application/json",
               "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}},
                                  "required": ["a"]}})
    );
}

#[test]
fn unsupported_requests_name_the_param() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": user, "logprobs": true}), "logprobs"),
        (
            json!({"messages": user, "logit_bias": {"1": 2}}),
            "logit_bias",
        ),
        (
            json!({"messages": user, "temperature": "hot"}),
            "temperature",
        ),
        (json!({"messages": user, "stop": [1]}), "stop"),
        (
            json!({"messages": user, "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"messages": user, "response_format": {"type": "json_schema",
                "json_schema": {"schema": {"$ref": "#/$defs/a"}}}}),
            "response_format",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}}]}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": user, "tools": [{"type": "code_interpreter"}]}),
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
}

#[test]
fn whole_response_with_text_function_call_and_usage() {
    let up = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": []
        }],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                          "totalTokenCount": 15},
        "modelVersion": "gemini-2.0-flash"
    });
    assert_eq!(
        response(&up, "google:gemini-2.0-flash", &ids()).unwrap(),
        json!({
            "id": "chatcmpl-g", "object": "chat.completion", "created": 1,
            "model": "google:gemini-2.0-flash",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Let me check.", "refusal": null,
                    "tool_calls": [{"id": "call_x0", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        })
    );
}

#[test]
fn blocked_prompt_and_error_bodies() {
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}});
    let r = response(&blocked, "m", &ids()).unwrap();
    assert_eq!(r["choices"][0]["finish_reason"], "content_filter");
    assert!(matches!(
        response(&json!({}), "m", &ids()),
        Err(TranslateError::Upstream(_))
    ));
    assert_eq!(
        response(
            &json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}),
            "m",
            &ids()
        ),
        Err(TranslateError::Upstream("bad".into()))
    );
}

#[test]
fn finish_reason_table() {
    for (reason, called, want) in [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("OTHER", false, "stop"),
        ("MALFORMED_FUNCTION_CALL", false, "stop"),
    ] {
        assert_eq!(finish_reason(reason, called), want, "{reason}");
    }
}

#[test]
fn error_message_reads_the_documented_shape() {
    let body = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
    assert_eq!(
        Google.error_message(429, body),
        "Resource has been exhausted"
    );
    assert_eq!(
        Google.error_message(429, &format!("[{body}]")),
        "Resource has been exhausted"
    );
    assert_eq!(Google.error_message(500, "oops"), "oops");
}

// ---------------------------------------------------------------- streams

fn run(events: &[&str], include_usage: bool) -> Result<Vec<Value>, TranslateError> {
    let mut s = GoogleStream::new("google:gemini", include_usage, ids());
    let mut out = Vec::new();
    for data in events {
        out.extend(s.feed(SseEvent { event: None, data })?);
    }
    out.extend(s.finish()?);
    Ok(out)
}

fn chunk(index: u64, delta: Value, finish: Value) -> Value {
    json!({
        "id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1,
        "model": "google:gemini",
        "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]
    })
}

fn role(index: u64) -> Value {
    chunk(
        index,
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )
}

/// A documented `alt=sse` text stream: usage on every chunk, finishReason last.
const TEXT: &[&str] = &[
    r#"{"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.0-flash"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": " sky is blue."}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 4,"totalTokenCount": 12},"modelVersion": "gemini-2.0-flash"}"#,
    r#"{"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 5,"totalTokenCount": 13},"modelVersion": "gemini-2.0-flash"}"#,
];

#[test]
fn text_stream_becomes_role_content_finish_and_usage_chunks() {
    let mut usage_chunk = json!({
        "id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1,
        "model": "google:gemini", "choices": [],
        "usage": {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}
    });
    let mut want = vec![
        role(0),
        chunk(0, json!({"content": "The"}), Value::Null),
        chunk(0, json!({"content": " sky is blue."}), Value::Null),
        chunk(0, json!({}), json!("stop")),
    ];
    assert_eq!(run(TEXT, false).unwrap(), want);
    for c in &mut want {
        c["usage"] = Value::Null;
    }
    want.push(usage_chunk.take());
    assert_eq!(run(TEXT, true).unwrap(), want);
}

#[test]
fn function_call_stream_gives_whole_calls_and_tool_calls_finish() {
    let events = [
        r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris"}}},{"functionCall": {"id": "gem-7", "name": "get_time","args": {}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 20,"candidatesTokenCount": 10,"totalTokenCount": 30}}"#,
    ];
    assert_eq!(
        run(&events, false).unwrap(),
        vec![
            role(0),
            chunk(
                0,
                json!({"tool_calls": [{"index": 0, "id": "call_x0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                Value::Null
            ),
            chunk(
                0,
                json!({"tool_calls": [{"index": 1, "id": "gem-7", "type": "function",
                "function": {"name": "get_time", "arguments": "{}"}}]}),
                Value::Null
            ),
            chunk(0, json!({}), json!("tool_calls")),
        ]
    );
}

#[test]
fn max_tokens_and_two_candidates() {
    let events = [
        r#"{"candidates": [{"content": {"parts": [{"text": "A"}],"role": "model"},"index": 0},{"content": {"parts": [{"text": "B"}],"role": "model"},"index": 1}]}"#,
        r#"{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"finishReason": "MAX_TOKENS","index": 0},{"content": {"parts": [{"text": "b"}],"role": "model"},"finishReason": "STOP","index": 1}]}"#,
    ];
    assert_eq!(
        run(&events, false).unwrap(),
        vec![
            role(0),
            chunk(0, json!({"content": "A"}), Value::Null),
            role(1),
            chunk(1, json!({"content": "B"}), Value::Null),
            chunk(0, json!({"content": "a"}), Value::Null),
            chunk(0, json!({}), json!("length")),
            chunk(1, json!({"content": "b"}), Value::Null),
            chunk(1, json!({}), json!("stop")),
        ]
    );
}

#[test]
fn error_event_and_cut_stream_fail() {
    let err = r#"{"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}"#;
    assert_eq!(
        run(&[TEXT[0], err], false).unwrap_err(),
        TranslateError::Upstream("Internal error encountered.".into())
    );
    for cut in 0..TEXT.len() {
        assert!(
            matches!(run(&TEXT[..cut], true), Err(TranslateError::Upstream(_))),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        run(&["not json"], false),
        Err(TranslateError::Upstream(_))
    ));
}

#[test]
fn stream_chunks_keep_openai_shape() {
    let chunks = run(TEXT, false).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(
            c["choices"][0]["finish_reason"].is_null(),
            i != chunks.len() - 1
        );
        assert!(c["choices"][0]["delta"].is_object());
    }
}

#[test]
fn generated_ids_are_fresh_per_answer() {
    let (a, b) = (Ids::fresh(), Ids::fresh());
    assert_ne!(a.completion, b.completion);
    assert_ne!(a.call(0), b.call(0));
    assert!(a.call(0).starts_with("call_"));
}
