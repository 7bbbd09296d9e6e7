//! Anthropic's Messages API (`POST /v1/messages`) translated to and from
//! OpenAI's chat completions, as pure functions over JSON.
//!
//! # Request (OpenAI → Anthropic)
//! - `system`/`developer` messages, wherever they stand, join (blank line
//!   between) into the top-level `system`; `response_format` adds a JSON
//!   instruction there (Anthropic has no JSON mode, so JSON is asked for, not
//!   enforced).
//! - `user`/`assistant` turns become content blocks; consecutive turns of one
//!   role merge (Anthropic wants alternation); `tool` messages become
//!   `tool_result` blocks in a user turn; assistant `tool_calls` become
//!   `tool_use` blocks (arguments parsed from their JSON string).
//! - `image_url` parts: `data:` URLs → base64 image blocks, `http(s)` URLs →
//!   URL image blocks.
//! - `max_completion_tokens`/`max_tokens` → `max_tokens`, which Anthropic
//!   requires: [`DEFAULT_MAX_TOKENS`] when the client gives none.
//! - `temperature` (0–1 only), `top_p`, `top_k`, `stop` → `stop_sequences`,
//!   `tools`, `tool_choice` (none/auto/required→any/named→tool),
//!   `parallel_tool_calls: false` → `disable_parallel_tool_use`, `user` →
//!   `metadata.user_id`.
//! - `n` > 1 and every other field Anthropic cannot honour are a
//!   [`TranslateError::BadRequest`] naming the field; `stream_options` and
//!   `store` are ignored, and so is any field whose value is `null`.
//!
//! # Response and stream (Anthropic → OpenAI)
//! `text` blocks → `content`, `tool_use` blocks → `tool_calls` (Anthropic's
//! ids), `thinking` blocks dropped; `stop_reason` end_turn/stop_sequence/
//! pause_turn → `stop`, max_tokens → `length`, tool_use → `tool_calls`,
//! refusal → `content_filter`; usage counts cached input as prompt tokens.
//! A stream must end with `message_stop`, else [`ChatStream::finish`] fails.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::translate::{ChatStream, Provider, SseEvent, TranslateError, UpstreamRequest};

/// `max_tokens` sent when the client sets neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires one; 4096 is the smallest
/// output limit among current Claude models).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Appended to `system` for `response_format: json_object`.
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single JSON object and nothing else: no prose, no code fences.";

/// Anthropic's Messages API.
pub struct Anthropic;

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        Ok(UpstreamRequest {
            path: "/v1/messages".into(),
            body: request_body(openai, model, stream)?,
        })
    }

    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError> {
        response(&upstream, model, now())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn ChatStream> {
        Box::new(AnthropicStream::new(model, include_usage, now()))
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        match parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
        {
            Some(message) => message.to_owned(),
            None => truncated(status, body),
        }
    }
}

/// Seconds since the epoch, for `created`.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The body itself when no documented error shape is found, cut at 500 bytes.
fn truncated(status: u16, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return format!("upstream answered {status}");
    }
    let mut end = body.len().min(500);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::BadRequest {
        message: message.into(),
        param: Some(param.into()),
    }
}

fn upstream(message: impl Into<String>) -> TranslateError {
    TranslateError::Upstream(message.into())
}

// ---------------------------------------------------------------- request

/// Fields read by [`request_body`]; any other non-null field is refused.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "store",
    "user",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "n",
];

fn request_body(openai: &Value, model: &str, stream: bool) -> Result<Value, TranslateError> {
    let req = openai
        .as_object()
        .ok_or_else(|| bad("messages", "the body must be a JSON object"))?;
    if let Some((field, _)) = req
        .iter()
        .find(|(k, v)| !v.is_null() && !KNOWN_FIELDS.contains(&k.as_str()))
    {
        return Err(bad(
            field.clone(),
            format!("`{field}` is not supported for Anthropic models"),
        ));
    }
    let field = |k: &str| field(req, k);

    let (mut system, messages) = messages(field("messages"))?;
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages);
    body.insert("max_tokens".into(), max_tokens(req)?.into());
    if stream {
        body.insert("stream".into(), true.into());
    }
    if let Some(n) = field("n") {
        if n.as_u64() != Some(1) {
            return Err(bad(
                "n",
                "Anthropic models return one choice: `n` must be 1",
            ));
        }
    }
    if let Some(t) = field("temperature") {
        let t = t
            .as_f64()
            .ok_or_else(|| bad("temperature", "`temperature` must be a number"))?;
        if !(0.0..=1.0).contains(&t) {
            return Err(bad(
                "temperature",
                "Anthropic models take `temperature` between 0 and 1",
            ));
        }
        body.insert("temperature".into(), t.into());
    }
    for (from, to) in [("top_p", "top_p"), ("top_k", "top_k")] {
        if let Some(v) = field(from) {
            if !v.is_number() {
                return Err(bad(from, format!("`{from}` must be a number")));
            }
            body.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = field("stop") {
        body.insert("stop_sequences".into(), stop_sequences(stop)?);
    }
    if let Some(user) = field("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(format) = field("response_format") {
        if let Some(instruction) = json_instruction(format)? {
            system.push(instruction);
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    if let Some(tools) = field("tools") {
        body.insert("tools".into(), self::tools(tools)?);
    }
    let parallel = field("parallel_tool_calls").and_then(Value::as_bool);
    if let Some(choice) = tool_choice(field("tool_choice"), parallel)? {
        body.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(body))
}

/// A field of the request, `null` counting as absent.
fn field<'a>(req: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    req.get(name).filter(|v| !v.is_null())
}

fn max_tokens(req: &Map<String, Value>) -> Result<u64, TranslateError> {
    for name in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = field(req, name) {
            return v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(name, format!("`{name}` must be a positive integer")));
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

fn stop_sequences(stop: &Value) -> Result<Value, TranslateError> {
    match stop {
        Value::String(s) => Ok(json!([s])),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(stop.clone()),
        _ => Err(bad(
            "stop",
            "`stop` must be a string or an array of strings",
        )),
    }
}

/// The system instruction standing in for `response_format`.
fn json_instruction(format: &Value) -> Result<Option<String>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(JSON_OBJECT_INSTRUCTION.into())),
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .ok_or_else(|| bad("response_format", "`json_schema.schema` is missing"))?;
            Ok(Some(format!(
                "{JSON_OBJECT_INSTRUCTION} It must conform to this JSON Schema: {schema}"
            )))
        }
        _ => Err(bad(
            "response_format",
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

/// `(system texts, Anthropic messages)`.
fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Value), TranslateError> {
    let list = messages
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("messages", "`messages` must be a non-empty array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(text_only(m.get("content"), &at("content"))?);
                continue;
            }
            "user" => ("user", user_blocks(m.get("content"), &at("content"))?),
            "assistant" => ("assistant", assistant_blocks(m, i)?),
            "tool" => ("user", vec![tool_result(m, i)?]),
            other => {
                return Err(bad(at("role"), format!("unknown role `{other}`")));
            }
        };
        match turns.last_mut() {
            Some((last, prior)) if *last == role => prior.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    Ok((system, Value::Array(messages)))
}

/// The text of a string content or of an array of `text` parts.
fn text_only(content: Option<&Value>, param: &str) -> Result<String, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                _ => Err(bad(param, "only text parts are accepted here")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.join("")),
        Some(_) => Err(bad(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

fn user_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({ "type": "text", "text": s })]),
        Some(Value::Array(parts)) => parts.iter().map(|p| user_part(p, param)).collect(),
        _ => Err(bad(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

fn user_part(part: &Value, param: &str) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({
            "type": "text",
            "text": part.get("text").and_then(Value::as_str).unwrap_or_default(),
        })),
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(param, "`image_url.url` is missing"))?;
            image_block(url).ok_or_else(|| bad(param, "an image must be a data: or http(s) URL"))
        }
        _ => Err(bad(param, "only text and image_url parts are supported")),
    }
}

/// `data:<type>;base64,<data>` → a base64 source; `http(s)://` → a URL source.
fn image_block(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest.split_once(";base64,")?;
        return Some(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Some(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    None
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
    let text = text_only(m.get("content"), &format!("messages[{i}].content"))?;
    let mut blocks = Vec::new();
    if !text.is_empty() {
        blocks.push(json!({ "type": "text", "text": text }));
    }
    let calls = m.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str);
        let name = call.pointer("/function/name").and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(bad(param, "a tool call needs `id` and `function.name`"));
        };
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
            .map_err(|_| {
            bad(
                format!("{param}.function.arguments"),
                "`arguments` is not valid JSON",
            )
        })?;
        blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    if blocks.is_empty() {
        // Anthropic refuses empty content; an empty assistant turn says nothing.
        blocks.push(json!({ "type": "text", "text": "" }));
    }
    Ok(blocks)
}

fn tool_result(m: &Value, i: usize) -> Result<Value, TranslateError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                format!("messages[{i}].tool_call_id"),
                "`tool_call_id` is missing",
            )
        })?;
    let content = text_only(m.get("content"), &format!("messages[{i}].content"))?;
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": content }))
}

fn tools(tools: &Value) -> Result<Value, TranslateError> {
    let list = tools
        .as_array()
        .ok_or_else(|| bad("tools", "`tools` must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t
                .get("function")
                .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| bad(format!("tools[{i}]"), "only function tools are supported"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("tools[{i}].function.name"), "a tool needs a name"))?;
            let mut tool = json!({
                "name": name,
                "input_schema": f.get("parameters").cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
            });
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                tool["description"] = d.into();
            }
            Ok(tool)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Value>, TranslateError> {
    let mut out = match choice {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => json!({ "type": "none" }),
            "auto" => json!({ "type": "auto" }),
            "required" => json!({ "type": "any" }),
            _ => return Err(bad("tool_choice", "unknown `tool_choice`")),
        }),
        Some(named) => {
            let name = named
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "`tool_choice.function.name` is missing"))?;
            Some(json!({ "type": "tool", "name": name }))
        }
    };
    if parallel == Some(false) {
        let c = out.get_or_insert_with(|| json!({ "type": "auto" }));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- response

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic's (cached input counts as prompt).
fn usage(input: u64, output: u64) -> Value {
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input + output,
    })
}

fn input_tokens(u: &Value) -> u64 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| u.get(*k).and_then(Value::as_u64))
    .sum()
}

fn response(up: &Value, model: &str, created: u64) -> Result<Value, TranslateError> {
    let blocks = up
        .get("content")
        .and_then(Value::as_array)
        .filter(|_| up.get("type").and_then(Value::as_str) == Some("message"))
        .ok_or_else(|| upstream("Anthropic's answer is not a message"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            _ => {} // thinking, redacted_thinking, server tool blocks: not OpenAI's
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = tool_calls.into();
    }
    let u = up.get("usage").unwrap_or(&Value::Null);
    let output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
    let id = up.get("id").and_then(Value::as_str).unwrap_or("msg");
    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(up.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage(input_tokens(u), output),
    }))
}

// ---------------------------------------------------------------- stream

/// One Anthropic stream turned into OpenAI chunks.
///
/// Events: `message_start` → the role chunk; `content_block_start` of a
/// `tool_use` → a tool-call chunk with id and name; `text_delta` → content;
/// `input_json_delta` → argument fragments; `message_delta` → the chunk with
/// `finish_reason`; `message_stop` → the end (the usage chunk comes from
/// [`ChatStream::finish`]); `ping` and unknown events are skipped; `error`
/// fails.
pub struct AnthropicStream {
    model: String,
    include_usage: bool,
    created: u64,
    id: String,
    /// Anthropic content-block index → OpenAI tool-call index.
    tools: HashMap<u64, usize>,
    input_tokens: u64,
    output_tokens: u64,
    started: bool,
    stopped: bool,
}

impl AnthropicStream {
    fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            model: model.into(),
            include_usage,
            created,
            id: "chatcmpl-anthropic".into(),
            tools: HashMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            started: false,
            stopped: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn on_event(&mut self, ev: &Value) -> Result<Vec<Value>, TranslateError> {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
        if kind != "message_start" && kind != "ping" && kind != "error" && !self.started {
            return Err(upstream(format!(
                "Anthropic sent `{kind}` before message_start"
            )));
        }
        Ok(match kind {
            "message_start" => {
                let msg = ev.get("message").unwrap_or(&Value::Null);
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                let u = msg.get("usage").unwrap_or(&Value::Null);
                self.input_tokens = input_tokens(u);
                self.output_tokens = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
                self.started = true;
                vec![self.chunk(
                    json!({ "role": "assistant", "content": "", "refusal": null }),
                    None,
                )]
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let at = self.tools.len();
                        self.tools.insert(index, at);
                        vec![self.chunk(
                            json!({ "tool_calls": [{
                                "index": at,
                                "id": block.get("id"),
                                "type": "function",
                                "function": { "name": block.get("name"), "arguments": "" },
                            }] }),
                            None,
                        )]
                    }
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) if !t.is_empty() => vec![self.chunk(json!({ "content": t }), None)],
                        _ => vec![],
                    },
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let delta = ev.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        vec![self.chunk(json!({ "content": t }), None)]
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        match self.tools.get(&index) {
                            Some(at) if !part.is_empty() => vec![self.chunk(
                                json!({ "tool_calls": [{ "index": at, "function": { "arguments": part } }] }),
                                None,
                            )],
                            _ => vec![],
                        }
                    }
                    _ => vec![], // thinking_delta, signature_delta
                }
            }
            "message_delta" => {
                if let Some(out) = ev.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output_tokens = out;
                }
                match ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => vec![self.chunk(json!({}), Some(finish_reason(Some(reason))))],
                    None => vec![],
                }
            }
            "message_stop" => {
                self.stopped = true;
                vec![]
            }
            "error" => {
                let message = ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("Anthropic reported an error mid-stream");
                return Err(upstream(message));
            }
            _ => vec![], // ping, content_block_stop, and event types added later
        })
    }
}

impl ChatStream for AnthropicStream {
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError> {
        if self.stopped {
            return Ok(vec![]);
        }
        let ev: Value = serde_json::from_str(event.data)
            .map_err(|_| upstream("Anthropic sent an event that is not JSON"))?;
        self.on_event(&ev)
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if !self.stopped {
            return Err(upstream("Anthropic's stream ended before message_stop"));
        }
        if !self.include_usage {
            return Ok(vec![]);
        }
        Ok(vec![json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(self.input_tokens, self.output_tokens),
        })])
    }
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
