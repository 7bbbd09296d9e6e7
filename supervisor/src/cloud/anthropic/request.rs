//! OpenAI chat request → Anthropic request (see the parent module's docs).

use serde_json::{json, Map, Value};

use super::*;

/// Fields read by [`request_body`]; any other non-null field is refused.
pub(super) const KNOWN_FIELDS: &[&str] = &[
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

pub(super) fn request_body(
    openai: &Value,
    model: &str,
    stream: bool,
) -> Result<Value, TranslateError> {
    let req = known_fields(openai, KNOWN_FIELDS, "Anthropic")?;
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
pub(super) fn field<'a>(req: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    req.get(name).filter(|v| !v.is_null())
}

pub(super) fn max_tokens(req: &Map<String, Value>) -> Result<u64, TranslateError> {
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

pub(super) fn stop_sequences(stop: &Value) -> Result<Value, TranslateError> {
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
pub(super) fn json_instruction(format: &Value) -> Result<Option<String>, TranslateError> {
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
pub(super) fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Value), TranslateError> {
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
pub(super) fn text_only(content: Option<&Value>, param: &str) -> Result<String, TranslateError> {
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

pub(super) fn user_blocks(
    content: Option<&Value>,
    param: &str,
) -> Result<Vec<Value>, TranslateError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({ "type": "text", "text": s })]),
        Some(Value::Array(parts)) => parts.iter().map(|p| user_part(p, param)).collect(),
        _ => Err(bad(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

pub(super) fn user_part(part: &Value, param: &str) -> Result<Value, TranslateError> {
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
pub(super) fn image_block(url: &str) -> Option<Value> {
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

pub(super) fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn tool_result(m: &Value, i: usize) -> Result<Value, TranslateError> {
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

pub(super) fn tools(tools: &Value) -> Result<Value, TranslateError> {
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

pub(super) fn tool_choice(
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
