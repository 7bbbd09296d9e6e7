//! Google's Gemini API (`models/{m}:generateContent`, and
//! `:streamGenerateContent?alt=sse` whose events are each a whole
//! `GenerateContentResponse`) translated to and from OpenAI's chat
//! completions, as pure functions over JSON.
//!
//! # Request (OpenAI → Gemini)
//! - `system`/`developer` messages → `systemInstruction.parts`.
//! - `user` → role `user`, `assistant` → role `model`; consecutive turns of
//!   one role merge. Assistant `tool_calls` → `functionCall` parts (arguments
//!   parsed); `tool` messages → `functionResponse` parts in a user turn, named
//!   by looking up their `tool_call_id` among earlier tool calls; the result
//!   is `response: <JSON object>` when the content is one, else
//!   `{"result": <content>}`.
//! - `image_url` parts with `data:` URLs → `inlineData`; other URLs are
//!   refused (Gemini's `fileData` wants uploaded-file URIs).
//! - `generationConfig`: temperature, topP, topK, maxOutputTokens (from
//!   `max_completion_tokens`/`max_tokens`), stopSequences, candidateCount
//!   (`n`), presencePenalty, frequencyPenalty, seed, and `response_format` →
//!   `responseMimeType: application/json` (+ `responseSchema`).
//! - `tools` → one `functionDeclarations` tool; `tool_choice` none/auto/
//!   required/named → `functionCallingConfig` NONE/AUTO/ANY/ANY with
//!   `allowedFunctionNames`.
//! - Schemas (tool parameters, `responseSchema`) keep only the keywords of
//!   Gemini's OpenAPI-subset `Schema` ([`SCHEMA_KEYWORDS`]); the rest
//!   (`additionalProperties`, `$schema`, `strict`, `const`, …) is dropped,
//!   `type: [T, "null"]` becomes `type: T, nullable: true`, and `$ref` is
//!   refused (it cannot be dropped without changing the schema).
//! - Other fields → [`TranslateError::BadRequest`] naming them; `user`,
//!   `store`, `stream_options`, `parallel_tool_calls` and `null`s are ignored.
//!
//! # Response and stream (Gemini → OpenAI)
//! One choice per candidate; `text` parts → content (thought parts dropped);
//! `functionCall` parts → `tool_calls` with generated ids (`call_…`), their
//! whole arguments in one delta when streamed. finishReason STOP → `stop`
//! (`tool_calls` when the candidate called a function), MAX_TOKENS →
//! `length`, SAFETY/RECITATION/BLOCKLIST/PROHIBITED_CONTENT/SPII/
//! IMAGE_SAFETY/LANGUAGE → `content_filter`, anything else → `stop`. A
//! stream must show a finishReason for every candidate, else
//! [`ChatStream::finish`] fails.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::translate::{ChatStream, Provider, SseEvent, TranslateError, UpstreamRequest};

/// Keywords of Gemini's `Schema` object; every other keyword is stripped.
pub const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Google's Gemini API.
pub struct Google;

impl Provider for Google {
    fn name(&self) -> &'static str {
        "google"
    }

    fn chat_request(
        &self,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamRequest, TranslateError> {
        let path = if stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        };
        Ok(UpstreamRequest {
            path,
            body: request_body(openai)?,
        })
    }

    fn chat_response(&self, upstream: Value, model: &str) -> Result<Value, TranslateError> {
        response(&upstream, model, &Ids::fresh())
    }

    fn chat_stream(&self, model: &str, include_usage: bool) -> Box<dyn ChatStream> {
        Box::new(GoogleStream::new(model, include_usage, Ids::fresh()))
    }

    fn error_message(&self, status: u16, body: &str) -> String {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        // Some gateways wrap the error in a one-element array.
        let error = parsed
            .as_ref()
            .map(|v| v.get(0).unwrap_or(v))
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str);
        match error {
            Some(message) => message.to_owned(),
            None => truncated(status, body),
        }
    }
}

/// The completion id, `created`, and the seed of generated tool-call ids.
#[derive(Debug, Clone)]
struct Ids {
    completion: String,
    created: u64,
    calls: String,
}

impl Ids {
    fn fresh() -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Self {
            completion: format!("chatcmpl-{}", &nonce[..24]),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            calls: nonce[..16].to_owned(),
        }
    }

    fn call(&self, n: usize) -> String {
        format!("call_{}{n}", self.calls)
    }
}

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
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
];

/// OpenAI sampling fields copied as they are into `generationConfig`.
const GENERATION_FIELDS: &[(&str, &str)] = &[
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("seed", "seed"),
    ("n", "candidateCount"),
];

fn request_body(openai: &Value) -> Result<Value, TranslateError> {
    let req = openai
        .as_object()
        .ok_or_else(|| bad("messages", "the body must be a JSON object"))?;
    if let Some((field, _)) = req
        .iter()
        .find(|(k, v)| !v.is_null() && !KNOWN_FIELDS.contains(&k.as_str()))
    {
        return Err(bad(
            field.clone(),
            format!("`{field}` is not supported for Google models"),
        ));
    }
    let field = |k: &str| req.get(k).filter(|v: &&Value| !v.is_null());

    let (system, contents) = contents(field("messages"))?;
    let mut body = Map::new();
    body.insert("contents".into(), contents);
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let mut config = Map::new();
    for (from, to) in GENERATION_FIELDS {
        if let Some(v) = field(from) {
            if !v.is_number() {
                return Err(bad(*from, format!("`{from}` must be a number")));
            }
            config.insert((*to).into(), v.clone());
        }
    }
    for name in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = field(name) {
            let n = v
                .as_u64()
                .ok_or_else(|| bad(name, format!("`{name}` must be a positive integer")))?;
            config.insert("maxOutputTokens".into(), n.into());
            break;
        }
    }
    if let Some(stop) = field("stop") {
        let stops = match stop {
            Value::String(s) => json!([s]),
            Value::Array(a) if a.iter().all(Value::is_string) => stop.clone(),
            _ => {
                return Err(bad(
                    "stop",
                    "`stop` must be a string or an array of strings",
                ))
            }
        };
        config.insert("stopSequences".into(), stops);
    }
    if let Some(format) = field("response_format") {
        response_format(format, &mut config)?;
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = field("tools") {
        body.insert("tools".into(), self::tools(tools)?);
    }
    if let Some(choice) = field("tool_choice") {
        body.insert("toolConfig".into(), tool_config(choice)?);
    }
    Ok(Value::Object(body))
}

fn response_format(format: &Value, config: &mut Map<String, Value>) -> Result<(), TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .ok_or_else(|| bad("response_format", "`json_schema.schema` is missing"))?;
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert(
                "responseSchema".into(),
                clean_schema(schema, "response_format")?,
            );
        }
        _ => {
            return Err(bad(
                "response_format",
                "`response_format.type` must be text, json_object or json_schema",
            ))
        }
    }
    Ok(())
}

/// A JSON Schema cut down to Gemini's `Schema` (see the module docs).
///
/// # Errors
/// [`TranslateError::BadRequest`] naming `param` for a `$ref`.
pub fn clean_schema(schema: &Value, param: &str) -> Result<Value, TranslateError> {
    let Some(obj) = schema.as_object() else {
        return Ok(schema.clone());
    };
    if obj.contains_key("$ref") {
        return Err(bad(
            param,
            "schemas with `$ref` are not supported by Google models",
        ));
    }
    let mut out = Map::new();
    for (k, v) in obj {
        if !SCHEMA_KEYWORDS.contains(&k.as_str()) {
            continue;
        }
        let v = match k.as_str() {
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| Ok((name.clone(), clean_schema(s, param)?)))
                    .collect::<Result<_, TranslateError>>()?,
            ),
            "items" => clean_schema(v, param)?,
            "anyOf" => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| clean_schema(s, param))
                    .collect::<Result<_, _>>()?,
            ),
            "type" => match v.as_array() {
                Some(types) => {
                    let mut rest = types.iter().filter(|t| t.as_str() != Some("null"));
                    if types.len() > 1 && rest.clone().count() < types.len() {
                        out.insert("nullable".into(), true.into());
                    }
                    rest.next().cloned().unwrap_or_else(|| "string".into())
                }
                None => v.clone(),
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

fn tools(tools: &Value) -> Result<Value, TranslateError> {
    let list = tools
        .as_array()
        .ok_or_else(|| bad("tools", "`tools` must be an array"))?;
    let declarations = list
        .iter()
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
            let mut d = json!({ "name": name });
            if let Some(desc) = f.get("description").and_then(Value::as_str) {
                d["description"] = desc.into();
            }
            // A function without parameters must omit them: Gemini rejects an
            // object schema with no properties.
            let params = f.get("parameters").filter(|p| {
                p.get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
            });
            if let Some(p) = params {
                d["parameters"] = clean_schema(p, &format!("tools[{i}].function.parameters"))?;
            }
            Ok(d)
        })
        .collect::<Result<Vec<_>, TranslateError>>()?;
    Ok(json!([{ "functionDeclarations": declarations }]))
}

fn tool_config(choice: &Value) -> Result<Value, TranslateError> {
    let config = match choice {
        Value::String(s) => match s.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            _ => return Err(bad("tool_choice", "unknown `tool_choice`")),
        },
        named => {
            let name = named
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "`tool_choice.function.name` is missing"))?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
    };
    Ok(json!({ "functionCallingConfig": config }))
}

/// `(systemInstruction parts, contents)`.
fn contents(messages: Option<&Value>) -> Result<(Vec<Value>, Value), TranslateError> {
    let list = messages
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad("messages", "`messages` must be a non-empty array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // tool_call_id → function name, for functionResponse parts.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, parts) = match role {
            "system" | "developer" => {
                system.extend(parts(m.get("content"), &at("content"), false)?);
                continue;
            }
            "user" => ("user", parts(m.get("content"), &at("content"), true)?),
            "assistant" => ("model", model_parts(m, i, &mut call_names)?),
            "tool" => ("user", vec![function_response(m, i, &call_names)?]),
            other => return Err(bad(at("role"), format!("unknown role `{other}`"))),
        };
        match turns.last_mut() {
            Some((last, prior)) if *last == role => prior.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect();
    Ok((system, Value::Array(contents)))
}

fn parts(content: Option<&Value>, param: &str, images: bool) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    Ok(json!({ "text": p.get("text").and_then(Value::as_str).unwrap_or("") }))
                }
                Some("image_url") if images => {
                    let url = p
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let (mime, data) = url
                        .strip_prefix("data:")
                        .and_then(|r| r.split_once(";base64,"))
                        .ok_or_else(|| {
                            bad(param, "Google models take images as data: URLs only")
                        })?;
                    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
                }
                _ => Err(bad(param, "unsupported content part")),
            })
            .collect(),
        Some(_) => Err(bad(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

fn model_parts<'a>(
    m: &'a Value,
    i: usize,
    call_names: &mut HashMap<&'a str, &'a str>,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = parts(m.get("content"), &format!("messages[{i}].content"), false)?;
    let calls = m.get("tool_calls").and_then(Value::as_array);
    for (j, call) in calls.into_iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}]");
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(param.clone(), "a tool call needs `function.name`"))?;
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            call_names.insert(id, name);
        }
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let args: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
            .map_err(|_| {
                bad(
                    format!("{param}.function.arguments"),
                    "`arguments` is not valid JSON",
                )
            })?;
        out.push(json!({ "functionCall": { "name": name, "args": args } }));
    }
    if out.is_empty() {
        out.push(json!({ "text": "" }));
    }
    Ok(out)
}

fn function_response(
    m: &Value,
    i: usize,
    call_names: &HashMap<&str, &str>,
) -> Result<Value, TranslateError> {
    let param = format!("messages[{i}].tool_call_id");
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(param.clone(), "`tool_call_id` is missing"))?;
    let name = call_names
        .get(id)
        .ok_or_else(|| bad(param, "`tool_call_id` matches no earlier tool call"))?;
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        other => parts(other, &format!("messages[{i}].content"), false)?
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
    };
    let response = match serde_json::from_str::<Value>(&content) {
        Ok(obj @ Value::Object(_)) => obj,
        _ => json!({ "result": content }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

// ---------------------------------------------------------------- response

fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

fn usage(meta: &Value) -> Value {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount") + n("thoughtsTokenCount");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount").and_then(Value::as_u64)
            .unwrap_or(prompt + completion),
    })
}

/// `(text, function calls)` of one candidate; thought parts are skipped.
fn candidate_parts(c: &Value) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in c
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let args = f.get("args").cloned().unwrap_or_else(|| json!({}));
            calls.push((name, args.to_string()));
        }
    }
    (text, calls)
}

/// The candidates of an answer, or the error that it carries.
fn candidates(up: &Value) -> Result<&[Value], TranslateError> {
    if let Some(message) = up.pointer("/error/message").and_then(Value::as_str) {
        return Err(upstream(message));
    }
    if !up.is_object() {
        return Err(upstream("Google's answer is not a GenerateContentResponse"));
    }
    Ok(up
        .get("candidates")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice))
}

fn response(up: &Value, model: &str, ids: &Ids) -> Result<Value, TranslateError> {
    let cands = candidates(up)?;
    let mut choices = Vec::new();
    let mut n = 0;
    for (pos, c) in cands.iter().enumerate() {
        let (text, calls) = candidate_parts(c);
        let mut message = json!({
            "role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
            "refusal": null,
        });
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(name, args)| {
                    n += 1;
                    json!({ "id": ids.call(n - 1), "type": "function",
                            "function": { "name": name, "arguments": args } })
                })
                .collect();
            message["tool_calls"] = calls.into();
        }
        let called = message.get("tool_calls").is_some();
        let reason = c
            .get("finishReason")
            .and_then(Value::as_str)
            .unwrap_or("STOP");
        choices.push(json!({
            "index": c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64),
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(reason, called),
        }));
    }
    if choices.is_empty() {
        // A prompt blocked before generation: no candidates, a blockReason.
        if up.pointer("/promptFeedback/blockReason").is_none() {
            return Err(upstream("Google's answer has no candidates"));
        }
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    Ok(json!({
        "id": ids.completion,
        "object": "chat.completion",
        "created": ids.created,
        "model": model,
        "choices": choices,
        "usage": usage(up.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
}

// ---------------------------------------------------------------- stream

/// One Gemini SSE stream turned into OpenAI chunks.
///
/// Every event is a whole `GenerateContentResponse`. The first candidate
/// seen at each index gets a role chunk; text parts → content deltas;
/// each `functionCall` part → one tool-call delta with id, name and all its
/// arguments; a `finishReason` → that choice's final chunk. The last
/// `usageMetadata` seen becomes the usage chunk at [`ChatStream::finish`].
pub struct GoogleStream {
    model: String,
    include_usage: bool,
    ids: Ids,
    /// Per candidate index: tool calls so far (for the next delta's index).
    calls: HashMap<u64, usize>,
    /// Candidate indexes with a role chunk sent / with a finish reason seen.
    started: Vec<u64>,
    finished: Vec<u64>,
    /// Generated tool-call ids so far (unique across candidates).
    call_ids: usize,
    usage: Option<Value>,
}

impl GoogleStream {
    fn new(model: &str, include_usage: bool, ids: Ids) -> Self {
        Self {
            model: model.into(),
            include_usage,
            ids,
            calls: HashMap::new(),
            started: Vec::new(),
            finished: Vec::new(),
            call_ids: 0,
            usage: None,
        }
    }

    fn chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> Value {
        let mut c = json!({
            "id": self.ids.completion,
            "object": "chat.completion.chunk",
            "created": self.ids.created,
            "model": self.model,
            "choices": [{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn candidate(&mut self, pos: usize, c: &Value, out: &mut Vec<Value>) {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
        if self.finished.contains(&index) {
            return;
        }
        if !self.started.contains(&index) {
            self.started.push(index);
            out.push(self.chunk(
                index,
                json!({ "role": "assistant", "content": "", "refusal": null }),
                None,
            ));
        }
        let (text, calls) = candidate_parts(c);
        if !text.is_empty() {
            out.push(self.chunk(index, json!({ "content": text }), None));
        }
        for (name, args) in calls {
            let at = *self.calls.entry(index).and_modify(|n| *n += 1).or_insert(0);
            let id = self.ids.call(self.call_ids);
            self.call_ids += 1;
            out.push(self.chunk(
                index,
                json!({ "tool_calls": [{ "index": at, "id": id, "type": "function",
                                         "function": { "name": name, "arguments": args } }] }),
                None,
            ));
        }
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            self.finished.push(index);
            let called = self.calls.contains_key(&index);
            out.push(self.chunk(index, json!({}), Some(finish_reason(reason, called))));
        }
    }
}

impl ChatStream for GoogleStream {
    fn feed(&mut self, event: SseEvent<'_>) -> Result<Vec<Value>, TranslateError> {
        let up: Value = serde_json::from_str(event.data)
            .map_err(|_| upstream("Google sent an event that is not JSON"))?;
        let cands = candidates(&up)?.to_vec();
        if let Some(meta) = up.get("usageMetadata") {
            self.usage = Some(meta.clone());
        }
        let mut out = Vec::new();
        if cands.is_empty() && up.pointer("/promptFeedback/blockReason").is_some() {
            let blocked = json!({ "index": 0, "finishReason": "SAFETY" });
            self.candidate(0, &blocked, &mut out);
        }
        for (pos, c) in cands.iter().enumerate() {
            self.candidate(pos, c, &mut out);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if self.finished.is_empty() || self.started.iter().any(|i| !self.finished.contains(i)) {
            return Err(upstream("Google's stream ended before a finishReason"));
        }
        if !self.include_usage {
            return Ok(vec![]);
        }
        Ok(vec![json!({
            "id": self.ids.completion,
            "object": "chat.completion.chunk",
            "created": self.ids.created,
            "model": self.model,
            "choices": [],
            "usage": usage(self.usage.as_ref().unwrap_or(&Value::Null)),
        })])
    }
}

#[cfg(test)]
#[path = "google_tests.rs"]
mod tests;
