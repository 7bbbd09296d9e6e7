//! OpenAI chat request → Google request (see the parent module's docs).

use std::collections::HashMap;

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
pub(super) const GENERATION_FIELDS: &[(&str, &str)] = &[
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("seed", "seed"),
    ("n", "candidateCount"),
];

pub(super) fn request_body(openai: &Value) -> Result<Value, TranslateError> {
    let req = known_fields(openai, KNOWN_FIELDS, "Google")?;
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

pub(super) fn response_format(
    format: &Value,
    config: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
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

pub(super) fn tools(tools: &Value) -> Result<Value, TranslateError> {
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

pub(super) fn tool_config(choice: &Value) -> Result<Value, TranslateError> {
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
pub(super) fn contents(messages: Option<&Value>) -> Result<(Vec<Value>, Value), TranslateError> {
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

pub(super) fn parts(
    content: Option<&Value>,
    param: &str,
    images: bool,
) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn model_parts<'a>(
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

pub(super) fn function_response(
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
