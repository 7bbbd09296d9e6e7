//! Ollama's `/api/chat` and `/api/generate` bodies, validated into the same
//! [`GenerationJob`] the OpenAI endpoints run.
//!
//! A body is translated into the OpenAI request it means (messages, `tools`,
//! `format` → `response_format`, `think` → `enable_thinking` /
//! `reasoning_effort`, `options` → sampling fields with Ollama's defaults) and
//! validated by [`super::types`], so both APIs share one set of checks and
//! one inference path. `suffix` is fill-in-the-middle with the model's FIM
//! tokens ([`Prompt::Infill`]; a model without them refuses it with a 400).
//! What this node cannot honour is refused with a 400 (`images`,
//! `template`, `context`, a `num_ctx` above the slot's context), never
//! silently dropped; options that do not apply here (GPU,
//! threads, mmap, mirostat, …) are ignored and named in a `warn!` line.
//!
//! # Sampling defaults
//! Ollama's: `temperature` 0.8, `top_k` 40, `top_p` 0.9, `min_p` 0,
//! `repeat_penalty` 1.1 over the last 64 tokens (`repeat_last_n`).
//!
//! # `keep_alive`
//! A Go duration (`"5m"`, `"1h30m"`, `"300ms"`), or a number of seconds;
//! negative keeps the model loaded, `0` unloads it after the request. Absent,
//! the node's configured idle TTL applies.

use std::time::Duration;

use llm_node_protocol::Prompt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::chat::ChatOptions;
use super::error::{invalid_body, ApiError};
use super::types::{ChatCompletionRequest, CompletionRequest, GenerationJob};

/// Ollama's sampling defaults (`api/types.go`, `DefaultOptions`).
fn defaults() -> [(&'static str, Value); 5] {
    [
        ("temperature", json!(0.8)),
        ("top_k", json!(40)),
        ("top_p", json!(0.9)),
        ("min_p", json!(0.0)),
        ("repeat_penalty", json!(1.1)),
    ]
}
/// Ollama's default `repeat_last_n`.
const DEFAULT_REPEAT_LAST_N: i32 = 64;

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Value>,
    pub tools: Option<Value>,
    /// llm-node's extension (OpenAI's values): `"required"` or a named
    /// function forces a call, on any model. Also read from `options`.
    pub tool_choice: Option<Value>,
    #[serde(flatten)]
    pub common: Common,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    pub context: Option<Value>,
    #[serde(default)]
    pub raw: bool,
    pub images: Option<Value>,
    #[serde(flatten)]
    pub common: Common,
}

/// The fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub format: Option<Value>,
    pub options: Option<Map<String, Value>>,
    pub stream: Option<bool>,
    pub think: Option<Value>,
    pub keep_alive: Option<Value>,
}

/// Which endpoint a job answers (the line shape differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Generate,
}

/// What a client asked `keep_alive` to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// `0`: unload once the request is over.
    Unload,
    Keep(crate::models::KeepAlive),
}

/// A validated Ollama request.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaJob {
    pub endpoint: Endpoint,
    pub model: String,
    /// `None` for an empty request: load (or, with `keep_alive: 0`, unload) only.
    pub generation: Option<GenerationJob>,
    pub stream: bool,
    pub keep_alive: Option<KeepAlive>,
    /// `options.num_ctx`, checked against the slot's context once it is known.
    pub num_ctx: Option<u32>,
}

/// `options` as the OpenAI sampling fields they mean.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedOptions {
    /// `temperature`, `top_p`, `max_tokens`, `stop`, … (Ollama's defaults filled in).
    pub sampling: Map<String, Value>,
    pub repeat_last_n: i32,
    pub num_ctx: Option<u32>,
    /// llm-node's `tool_choice` extension, also read from `options` (where
    /// Ollama's clients let any key through).
    pub tool_choice: Option<Value>,
    /// Options accepted but without effect here, for the `warn!` line.
    pub ignored: Vec<String>,
}

/// Options Ollama knows that do not apply to this node (load-time and
/// hardware settings, samplers llama.cpp's chain here does not run).
const IGNORED: &[&str] = &[
    "num_keep",
    "typical_p",
    "tfs_z",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
    "numa",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "embedding_only",
    "num_thread",
    "draft_num_predict",
];

/// Maps `options` to sampling fields.
///
/// # Errors
/// A 400 naming `options.<key>` for a value of the wrong type or range.
pub fn map_options(options: Option<&Map<String, Value>>) -> Result<MappedOptions, ApiError> {
    let mut out = MappedOptions {
        repeat_last_n: DEFAULT_REPEAT_LAST_N,
        ..MappedOptions::default()
    };
    for (key, value) in defaults() {
        out.sampling.insert(key.into(), value);
    }
    let Some(options) = options else {
        return Ok(out);
    };
    for (key, value) in options {
        if value.is_null() {
            continue;
        }
        let param = format!("options.{key}");
        let int = || {
            value
                .as_i64()
                .ok_or_else(|| ApiError::invalid(&param, format!("{param} must be an integer")))
        };
        match key.as_str() {
            "temperature" | "top_p" | "min_p" | "repeat_penalty" | "presence_penalty"
            | "frequency_penalty" => {
                if !value.is_number() {
                    return Err(ApiError::invalid(
                        &param,
                        format!("{param} must be a number"),
                    ));
                }
                out.sampling.insert(key.clone(), value.clone());
            }
            "top_k" | "seed" => {
                out.sampling.insert(key.clone(), json!(int()?));
            }
            "stop" => {
                out.sampling.insert(key.clone(), value.clone());
            }
            "num_predict" => match int()? {
                // -1: until the end of the answer; -2: until the context is
                // full. Here both run until the slot's context is full.
                -1 | -2 => {}
                n if n >= 1 => {
                    out.sampling.insert("max_tokens".into(), json!(n));
                }
                n => {
                    return Err(ApiError::invalid(
                        &param,
                        format!("{param} must be -1, -2 or at least 1, got {n}"),
                    ))
                }
            },
            "repeat_last_n" => {
                out.repeat_last_n =
                    i32::try_from(int()?)
                        .ok()
                        .filter(|n| *n >= -1)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                &param,
                                format!("{param} must be -1 (the context) or >= 0"),
                            )
                        })?;
            }
            "num_ctx" => {
                out.num_ctx = Some(u32::try_from(int()?).ok().filter(|n| *n >= 1).ok_or_else(
                    || ApiError::invalid(&param, format!("{param} must be at least 1")),
                )?);
            }
            "tool_choice" => out.tool_choice = Some(value.clone()),
            other if IGNORED.contains(&other) => out.ignored.push(other.to_owned()),
            other => out.ignored.push(format!("{other} (unknown)")),
        }
    }
    Ok(out)
}

/// Parses `keep_alive`: a Go duration string or a number of seconds.
///
/// # Errors
/// A 400 naming `keep_alive` for anything else.
pub fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    let bad = |v: &Value| {
        ApiError::invalid(
            "keep_alive",
            format!("keep_alive must be a duration such as \"5m\" or a number of seconds, got {v}"),
        )
    };
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad(&Value::Number(n.clone())))?,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(v @ Value::String(s)) => go_duration(s.trim()).ok_or_else(|| bad(v))?,
        Some(v) => return Err(bad(v)),
    };
    Ok(Some(match secs {
        s if !s.is_finite() => return Err(bad(&json!(value))),
        s if s < 0.0 => KeepAlive::Keep(crate::models::KeepAlive::Forever),
        0.0 => KeepAlive::Unload,
        s => KeepAlive::Keep(crate::models::KeepAlive::For(Duration::from_secs_f64(
            s.min(1e9),
        ))),
    }))
}

/// A Go `time.ParseDuration` string in seconds (`"1h30m"`, `"-1s"`, `"2.5s"`);
/// a bare number is seconds, as Ollama reads it.
fn go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if let Ok(n) = rest.parse::<f64>() {
        return Some(sign * n);
    }
    if rest == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(sign * total)
}

/// `format`: `"json"` or a JSON schema, as OpenAI's `response_format`.
fn response_format(format: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({"type": "json_object"}))),
        Some(schema @ Value::Object(_)) => Ok(Some(json!({"type": "json_schema",
            "json_schema": {"name": "format", "schema": schema}}))),
        Some(_) => Err(ApiError::invalid(
            "format",
            "format must be \"json\" or a JSON schema object",
        )),
    }
}

/// `think`: a boolean, or gpt-oss's `"low"`, `"medium"`, `"high"`.
fn think(fields: &mut Map<String, Value>, think: Option<&Value>) -> Result<(), ApiError> {
    let enable = match think {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(level)) if matches!(level.as_str(), "low" | "medium" | "high") => {
            fields.insert("reasoning_effort".into(), json!(level));
            true
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "think",
                format!("think must be true, false, \"low\", \"medium\" or \"high\", got {other}"),
            ))
        }
    };
    fields.insert(
        "chat_template_kwargs".into(),
        json!({ "enable_thinking": enable }),
    );
    Ok(())
}

/// One Ollama message as OpenAI's.
fn message(i: usize, m: &Value) -> Result<Value, ApiError> {
    let param = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(m) = m else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            "each message must be an object",
        ));
    };
    if m.get("images")
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid(
            param("images"),
            "images are not supported: this node serves text-only models",
        ));
    }
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(param("role"), "role must be a string"))?
        .to_lowercase();
    let content = match m.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                param("content"),
                "content must be a string",
            ))
        }
    };
    let mut out = json!({"role": role, "content": content});
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                param("tool_calls"),
                "tool_calls must be an array",
            ))
        }
    };
    if !calls.is_empty() {
        let calls = calls
            .iter()
            .enumerate()
            .map(|(j, call)| {
                let f = &call["function"];
                let arguments = match &f["arguments"] {
                    Value::Null => "{}".to_owned(),
                    Value::String(s) => s.clone(),
                    args => args.to_string(),
                };
                let id = call["id"]
                    .as_str()
                    .map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
                json!({"id": id, "type": "function",
                    "function": {"name": f["name"], "arguments": arguments}})
            })
            .collect::<Vec<_>>();
        out["tool_calls"] = Value::Array(calls);
        if content.is_empty() {
            out["content"] = Value::Null;
        }
    }
    if let Some(thinking) = m.get("thinking").and_then(Value::as_str) {
        out["reasoning_content"] = json!(thinking);
    }
    if let Some(name) = m.get("tool_name").and_then(Value::as_str) {
        out["name"] = json!(name);
    }
    if let Some(id) = m.get("tool_call_id").and_then(Value::as_str) {
        out["tool_call_id"] = json!(id);
    }
    Ok(out)
}

/// An error from the OpenAI validation, named as the Ollama request names it.
pub(super) fn ollama_names(e: ApiError) -> ApiError {
    match e {
        ApiError::InvalidRequest { message, param } => {
            let rename = |s: &str| {
                s.replace("response_format.json_schema.schema", "format")
                    .replace("response_format", "format")
                    .replace("max_tokens", "options.num_predict")
            };
            ApiError::InvalidRequest {
                message: rename(&message),
                param: param.map(|p| rename(&p)),
            }
        }
        other => other,
    }
}

/// The sampling and chat fields shared by both endpoints, as OpenAI's.
fn openai_fields(
    common: &Common,
    model: &str,
) -> Result<(Map<String, Value>, MappedOptions), ApiError> {
    let options = map_options(common.options.as_ref())?;
    if !options.ignored.is_empty() {
        tracing::warn!(model, ignored = ?options.ignored,
            "Ollama options without effect on this node were ignored");
    }
    let mut fields = options.sampling.clone();
    fields.insert("model".into(), json!(model));
    if let Some(format) = response_format(common.format.as_ref())? {
        fields.insert("response_format".into(), format);
    }
    think(&mut fields, common.think.as_ref())?;
    Ok((fields, options))
}

/// Builds the job of a chat turn from OpenAI-shaped `fields`.
fn chat_job(fields: Map<String, Value>, repeat_last_n: i32) -> Result<GenerationJob, ApiError> {
    let request: ChatCompletionRequest =
        serde_json::from_value(Value::Object(fields)).map_err(|e| invalid_body(&e))?;
    let mut job = GenerationJob::try_from(request).map_err(ollama_names)?;
    job.params.penalty_last_n = repeat_last_n;
    Ok(job)
}

impl TryFrom<ChatBody> for OllamaJob {
    type Error = ApiError;

    fn try_from(body: ChatBody) -> Result<Self, ApiError> {
        let (mut fields, options) = openai_fields(&body.common, &body.model)?;
        let generation = if body.messages.is_empty() {
            None
        } else {
            let messages = body
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| message(i, m))
                .collect::<Result<Vec<_>, _>>()?;
            fields.insert("messages".into(), Value::Array(messages));
            if let Some(tools) = &body.tools {
                fields.insert("tools".into(), tools.clone());
            }
            if let Some(choice) = body.tool_choice.as_ref().or(options.tool_choice.as_ref()) {
                fields.insert("tool_choice".into(), choice.clone());
            }
            Some(chat_job(fields, options.repeat_last_n)?)
        };
        Ok(OllamaJob {
            endpoint: Endpoint::Chat,
            model: body.model,
            generation,
            stream: body.common.stream.unwrap_or(true),
            keep_alive: keep_alive(body.common.keep_alive.as_ref())?,
            num_ctx: options.num_ctx,
        })
    }
}

impl TryFrom<GenerateBody> for OllamaJob {
    type Error = ApiError;

    fn try_from(body: GenerateBody) -> Result<Self, ApiError> {
        let refuse = |param: &str, message: &str| Err(ApiError::invalid(param, message));
        if body
            .images
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return refuse(
                "images",
                "images are not supported: this node serves text-only models",
            );
        }
        if body.template.as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse(
                "template",
                "template is not supported: the model's chat template is used (send raw: true with a formatted prompt instead)",
            );
        }
        if body
            .context
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return refuse(
                "context",
                "context is not supported (deprecated by Ollama): send the conversation to /api/chat",
            );
        }
        let (mut fields, options) = openai_fields(&body.common, &body.model)?;
        let suffix = body.suffix.filter(|s| !s.is_empty());
        let generation = match (body.prompt.is_empty(), body.raw) {
            // Fill-in-the-middle: the model's FIM tokens, no template.
            _ if suffix.is_some() => {
                let mut job = raw_job(fields, String::new(), options.repeat_last_n)?;
                job.prompt = Prompt::Infill {
                    prefix: body.prompt,
                    suffix: suffix.unwrap_or_default(),
                };
                Some(job)
            }
            (true, _) => None,
            (false, false) => {
                let mut messages = Vec::new();
                if let Some(system) = body.system.as_ref().filter(|s| !s.is_empty()) {
                    messages.push(json!({"role": "system", "content": system}));
                }
                messages.push(json!({"role": "user", "content": body.prompt}));
                fields.insert("messages".into(), Value::Array(messages));
                Some(chat_job(fields, options.repeat_last_n)?)
            }
            (false, true) => Some(raw_job(fields, body.prompt, options.repeat_last_n)?),
        };
        Ok(OllamaJob {
            endpoint: Endpoint::Generate,
            model: body.model,
            generation,
            stream: body.common.stream.unwrap_or(true),
            keep_alive: keep_alive(body.common.keep_alive.as_ref())?,
            num_ctx: options.num_ctx,
        })
    }
}

/// `raw: true`: the prompt as it is, no template; `format` still applies.
/// (A fill-in-the-middle job replaces the prompt.)
fn raw_job(
    mut fields: Map<String, Value>,
    prompt: String,
    repeat_last_n: i32,
) -> Result<GenerationJob, ApiError> {
    let format = fields.remove("response_format");
    fields.remove("reasoning_effort");
    fields.remove("chat_template_kwargs");
    fields.insert("prompt".into(), json!(prompt));
    let request: CompletionRequest =
        serde_json::from_value(Value::Object(fields)).map_err(|e| invalid_body(&e))?;
    let mut job = GenerationJob::try_from(request).map_err(ollama_names)?;
    job.params.penalty_last_n = repeat_last_n;
    if let Some(format) = format {
        let options = ChatOptions::from_request(None, None, Some(&format), None, None, true)
            .map_err(ollama_names)?;
        job.chat = Some(options);
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use llm_node_protocol::Constraint;

    use super::*;
    use crate::models::KeepAlive as Keep;

    fn param_of(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn chat(body: Value) -> Result<OllamaJob, ApiError> {
        OllamaJob::try_from(serde_json::from_value::<ChatBody>(body).unwrap())
    }

    fn generate(body: Value) -> Result<OllamaJob, ApiError> {
        OllamaJob::try_from(serde_json::from_value::<GenerateBody>(body).unwrap())
    }

    #[test]
    fn keep_alive_reads_go_durations_and_seconds() {
        let secs = |s: f64| Some(KeepAlive::Keep(Keep::For(Duration::from_secs_f64(s))));
        let forever = Some(KeepAlive::Keep(Keep::Forever));
        let cases = [
            (json!(null), None),
            (json!(""), None),
            (json!("5m"), secs(300.0)),
            (json!("1h30m"), secs(5400.0)),
            (json!("300ms"), secs(0.3)),
            (json!("2.5s"), secs(2.5)),
            (json!("1h0m0s"), secs(3600.0)),
            (json!("10"), secs(10.0)),
            (json!(10), secs(10.0)),
            (json!(1.5), secs(1.5)),
            (json!(0), Some(KeepAlive::Unload)),
            (json!("0"), Some(KeepAlive::Unload)),
            (json!("0s"), Some(KeepAlive::Unload)),
            (json!(-1), forever),
            (json!("-1"), forever),
            (json!("-1m"), forever),
        ];
        for (value, want) in cases {
            assert_eq!(keep_alive(Some(&value)).unwrap(), want, "{value}");
        }
        for bad in [
            json!("5 minutes"),
            json!("m"),
            json!("5x"),
            json!(true),
            json!([1]),
        ] {
            assert_eq!(param_of(keep_alive(Some(&bad))), "keep_alive", "{bad}");
        }
    }

    #[test]
    fn options_map_to_sampling_fields_with_ollamas_defaults() {
        let map = |v: Value| map_options(Some(v.as_object().unwrap()));
        let none = map_options(None).unwrap();
        assert_eq!(
            Value::Object(none.sampling.clone()),
            json!({"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1})
        );
        assert_eq!(none.repeat_last_n, 64);
        let cases = [
            (json!({"temperature": 0}), "temperature", json!(0)),
            (json!({"top_k": 7}), "top_k", json!(7)),
            (json!({"top_p": 0.5}), "top_p", json!(0.5)),
            (json!({"min_p": 0.1}), "min_p", json!(0.1)),
            (json!({"seed": 42}), "seed", json!(42)),
            (json!({"num_predict": 9}), "max_tokens", json!(9)),
            (
                json!({"stop": ["\n", "user:"]}),
                "stop",
                json!(["\n", "user:"]),
            ),
            (json!({"repeat_penalty": 1.2}), "repeat_penalty", json!(1.2)),
            (
                json!({"presence_penalty": 1.5}),
                "presence_penalty",
                json!(1.5),
            ),
            (
                json!({"frequency_penalty": 1.0}),
                "frequency_penalty",
                json!(1.0),
            ),
        ];
        for (options, field, want) in cases {
            assert_eq!(
                map(options.clone()).unwrap().sampling[field],
                want,
                "{options}"
            );
        }
        for unlimited in [-1, -2] {
            let m = map(json!({ "num_predict": unlimited })).unwrap();
            assert!(!m.sampling.contains_key("max_tokens"), "{unlimited}");
        }
        let m = map(
            json!({"repeat_last_n": 33, "num_ctx": 1024, "num_thread": 8,
            "typical_p": 0.7, "wat": 1}),
        )
        .unwrap();
        assert_eq!((m.repeat_last_n, m.num_ctx), (33, Some(1024)));
        assert_eq!(m.ignored, ["num_thread", "typical_p", "wat (unknown)"]);
        let m = map(json!({"tool_choice": "required"})).unwrap();
        assert_eq!(m.tool_choice, Some(json!("required")));
        for (bad, param) in [
            (json!({"num_predict": 0}), "options.num_predict"),
            (json!({"num_predict": -3}), "options.num_predict"),
            (json!({"num_predict": "9"}), "options.num_predict"),
            (json!({"temperature": "hot"}), "options.temperature"),
            (json!({"top_k": 1.5}), "options.top_k"),
            (json!({"repeat_last_n": -2}), "options.repeat_last_n"),
            (json!({"num_ctx": 0}), "options.num_ctx"),
        ] {
            assert_eq!(param_of(map(bad.clone())), param, "{bad}");
        }
    }

    #[test]
    fn the_documented_every_option_example_is_accepted() {
        // docs/api.md, "Generate request (With options)".
        let job = generate(
            json!({"model": "llama3.2", "prompt": "Why is the sky blue?",
            "stream": false, "options": {
            "num_keep": 5, "seed": 42, "num_predict": 100, "draft_num_predict": 4, "top_k": 20,
            "top_p": 0.9, "min_p": 0.0, "typical_p": 0.7, "repeat_last_n": 33,
            "temperature": 0.8, "repeat_penalty": 1.2, "presence_penalty": 1.5,
            "frequency_penalty": 1.0, "penalize_newline": true, "stop": ["\n", "user:"],
            "numa": false, "num_ctx": 1024, "num_batch": 2, "num_gpu": 1, "main_gpu": 0,
            "use_mmap": true, "num_thread": 8}}),
        )
        .unwrap();
        let p = job.generation.unwrap().params;
        assert_eq!(
            (p.seed, p.max_tokens, p.top_k, p.penalty_last_n),
            (Some(42), Some(100), 20, 33)
        );
        assert_eq!((p.temperature, p.repeat_penalty, p.min_p), (0.8, 1.2, 0.0));
        assert_eq!(p.stop, ["\n", "user:"]);
        assert!(!job.stream);
        assert_eq!(job.num_ctx, Some(1024));
    }

    #[test]
    fn a_chat_with_tools_history_becomes_the_template_messages() {
        let job = chat(json!({"model": "m", "messages": [
            {"role": "user", "content": "what is the weather in Toronto?"},
            {"role": "assistant", "content": "", "thinking": "hmm",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
            {"role": "tool", "content": "11 degrees celsius", "tool_name": "get_weather"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "think": "high", "keep_alive": "1h"}))
        .unwrap();
        assert!(job.stream, "streams unless told otherwise");
        let g = job.generation.unwrap();
        let Prompt::Chat(c) = &g.prompt else { panic!() };
        let assistant = &c.messages[1];
        assert_eq!(assistant.content, None);
        assert_eq!(assistant.reasoning_content.as_deref(), Some("hmm"));
        assert_eq!(assistant.tool_calls[0].name, "get_weather");
        assert_eq!(assistant.tool_calls[0].arguments, r#"{"city":"Toronto"}"#);
        assert_eq!(c.messages[2].name.as_deref(), Some("get_weather"));
        assert_eq!(c.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            c.template_kwargs_json.as_deref(),
            Some(r#"{"enable_thinking":true}"#)
        );
        assert!(c.tools_json.is_some());
        assert_eq!(
            job.keep_alive,
            Some(KeepAlive::Keep(Keep::For(Duration::from_secs(3600))))
        );
    }

    #[test]
    fn format_becomes_a_whole_output_constraint_on_chat_generate_and_raw() {
        let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}});
        let jobs = [
            chat(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "format": schema}),
            ),
            generate(json!({"model": "m", "prompt": "x", "format": schema})),
            generate(json!({"model": "m", "prompt": "x", "format": schema, "raw": true})),
        ];
        for job in jobs {
            let g = job.unwrap().generation.unwrap();
            let plan = g
                .chat
                .unwrap()
                .plan(llm_node_chat::format::ChatFormat::GENERIC);
            assert_eq!(
                plan.constraint,
                Some(Constraint::JsonSchema(schema.to_string()))
            );
        }
        let g = generate(json!({"model": "m", "prompt": "x", "format": "json"})).unwrap();
        let plan = g
            .generation
            .unwrap()
            .chat
            .unwrap()
            .plan(llm_node_chat::format::ChatFormat::GENERIC);
        assert_eq!(
            plan.constraint,
            Some(Constraint::JsonSchema(r#"{"type":"object"}"#.into()))
        );
    }

    #[test]
    fn generate_uses_the_template_unless_raw() {
        let g = generate(json!({"model": "m", "prompt": "hi", "system": "be brief"}))
            .unwrap()
            .generation
            .unwrap();
        let Prompt::Chat(c) = g.prompt else { panic!() };
        let roles: Vec<_> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        let g = generate(json!({"model": "m", "prompt": "[INST] hi [/INST]", "raw": true}))
            .unwrap()
            .generation
            .unwrap();
        assert_eq!(g.prompt, Prompt::Text("[INST] hi [/INST]".into()));
    }

    #[test]
    fn a_suffix_asks_for_fill_in_the_middle() {
        let g = generate(
            json!({"model": "m", "prompt": "def f(a, b):", "suffix": "    return c",
            "system": "ignored", "options": {"temperature": 0}}),
        )
        .unwrap()
        .generation
        .unwrap();
        assert_eq!(
            g.prompt,
            Prompt::Infill {
                prefix: "def f(a, b):".into(),
                suffix: "    return c".into()
            }
        );
        assert_eq!(g.params.temperature, 0.0);
        let g = generate(json!({"model": "m", "suffix": "tail"}))
            .unwrap()
            .generation;
        assert!(g.is_some(), "a suffix alone is a request too");
    }

    #[test]
    fn empty_requests_only_load_or_unload() {
        let job = generate(json!({"model": "m"})).unwrap();
        assert_eq!((job.generation, job.keep_alive), (None, None));
        let job = chat(json!({"model": "m", "messages": [], "keep_alive": 0})).unwrap();
        assert_eq!(
            (job.generation, job.keep_alive),
            (None, Some(KeepAlive::Unload))
        );
    }

    #[test]
    fn what_this_node_cannot_do_is_refused_by_name() {
        let user = |extra: Value| {
            let mut m = json!({"role": "user", "content": "x"});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"model": "m", "messages": [m]})
        };
        let cases = [
            (
                chat(user(json!({"images": ["aGk="]}))),
                "messages[0].images",
            ),
            (chat(user(json!({"role": "wizard"}))), "messages[0].role"),
            (chat(user(json!({"content": 3}))), "messages[0].content"),
            (
                generate(json!({"model": "m", "prompt": "x", "images": ["aGk="]})),
                "images",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "template": "{{ .Prompt }}"})),
                "template",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "context": [1, 2]})),
                "context",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "format": 5})),
                "format",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "format": "xml"})),
                "format",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "think": "max"})),
                "think",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "options": {"temperature": 9}})),
                "temperature",
            ),
            (
                generate(json!({"model": "m", "prompt": "x", "keep_alive": "soon"})),
                "keep_alive",
            ),
        ];
        for (result, param) in cases {
            assert_eq!(param_of(result), param);
        }
    }
}
