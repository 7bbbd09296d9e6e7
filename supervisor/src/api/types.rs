//! OpenAI request bodies and their validation into protocol types.
//!
//! Fields that OpenAI lets take several shapes (`content`, `stop`, `prompt`,
//! `input`) are read as raw JSON and checked by hand, so that every bad value
//! gets a 400 naming its `param` rather than serde's generic "did not match
//! any variant". Unknown fields are ignored, as OpenAI does; known features we
//! cannot honour (`echo`, `best_of`, streamed `n > 1`) are refused (`suffix` is fill-in-the-middle),
//! never silently dropped. The chat-only fields (tools, `tool_choice`,
//! `response_format`, …) are read by [`super::chat`].
//!
//! # Sampling defaults
//! Unset fields take OpenAI's defaults where OpenAI has the knob
//! (`temperature` 1.0, `top_p` 1.0, penalties 0) and llama-server's where it
//! does not (`top_k` 40, `min_p` 0.05, `repeat_penalty` 1.0 = off, penalties
//! looking at the last 64 tokens). `top_k` and `min_p` keep temperature 1.0
//! from sampling the long tail, which small models need.

use llm_node_protocol::{ChatMessage, ChatPrompt, Prompt, SamplingParams};
use serde::Deserialize;
use serde_json::Value;

use super::chat::{self, ChatOptions};
use super::error::ApiError;

/// Most choices one request may ask for (`n`); a model's slot count lowers it.
pub const MAX_N: u32 = 16;
/// Most alternatives per token (`top_logprobs`), as OpenAI.
pub const MAX_TOP_LOGPROBS: u8 = 20;
/// Most `logit_bias` entries.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// Most stop strings accepted (OpenAI allows 4).
pub const MAX_STOP: usize = 16;
/// Longest stop string accepted, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;
/// Most inputs in one embeddings request (as OpenAI).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

const DEFAULT_TEMPERATURE: f32 = 1.0;
const DEFAULT_TOP_P: f32 = 1.0;
const DEFAULT_TOP_K: i32 = 40;
const DEFAULT_MIN_P: f32 = 0.05;
const DEFAULT_PENALTY_LAST_N: i32 = 64;

/// Sampling fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingRequest {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    /// -1 (or absent) draws a random seed.
    pub seed: Option<i64>,
    pub max_tokens: Option<i64>,
    /// Preferred over `max_tokens` when both are set (OpenAI's newer name).
    pub max_completion_tokens: Option<i64>,
    /// A string or an array of strings.
    pub stop: Option<Value>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub ignore_eos: Option<bool>,
    /// Token id (as a string) → bias in [-100, 100].
    pub logit_bias: Option<Value>,
    /// Count of choices.
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<RequestMessage>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    /// `false`: at most one tool call per turn (default true).
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    /// llama-server's extensions: a JSON schema or a GBNF grammar for the output.
    pub json_schema: Option<Value>,
    pub grammar: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// gpt-oss: `low`, `medium` or `high`.
    pub reasoning_effort: Option<String>,
    /// Extra template variables, e.g. `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<Value>,
    #[serde(flatten)]
    pub sampling: SamplingRequest,
}

#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    /// A string, an array of content parts, or null.
    #[serde(default)]
    pub content: Value,
    /// An assistant turn's calls.
    #[serde(default)]
    pub tool_calls: Value,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
    /// An assistant turn's reasoning (sent back by agents in multi-turn chats).
    pub reasoning_content: Option<String>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    /// A string or an array holding one string.
    pub prompt: Value,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
    pub logprobs: Option<Value>,
    #[serde(flatten)]
    pub sampling: SamplingRequest,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string or an array of strings.
    pub input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<Value>,
}

/// How embedding vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    /// Base64 of the little-endian `f32` bytes.
    Base64,
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationJob {
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices to generate (1 to [`MAX_N`]).
    pub n: u32,
    /// Chat requests: tools and output constraints, applied once the
    /// model's format is known.
    pub chat: Option<ChatOptions>,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingJob {
    pub model: String,
    pub inputs: Vec<crate::worker::EmbedInput>,
    pub format: EncodingFormat,
    /// Keep the first N components, normalised again (Matryoshka models).
    pub dimensions: Option<usize>,
}

/// Checks an optional number against a range and narrows it to `f32`.
fn ranged(
    param: &str,
    value: Option<f64>,
    default: f32,
    ok: impl Fn(f64) -> bool,
    range: &str,
) -> Result<f32, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && ok(v) => Ok(v as f32),
        Some(v) => Err(ApiError::invalid(
            param,
            format!("{param} must be in {range}, got {v}"),
        )),
    }
}

/// A string or an array of strings.
fn strings(param: &str, value: &Value) -> Result<Vec<String>, ApiError> {
    let not_strings = || {
        ApiError::invalid(
            param,
            format!("{param} must be a string or an array of strings"),
        )
    };
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(not_strings))
            .collect(),
        _ => Err(not_strings()),
    }
}

impl TryFrom<&SamplingRequest> for SamplingParams {
    type Error = ApiError;

    fn try_from(r: &SamplingRequest) -> Result<Self, ApiError> {
        let temperature = ranged(
            "temperature",
            r.temperature,
            DEFAULT_TEMPERATURE,
            |v| (0.0..=2.0).contains(&v),
            "[0, 2]",
        )?;
        let top_p = ranged(
            "top_p",
            r.top_p,
            DEFAULT_TOP_P,
            |v| v > 0.0 && v <= 1.0,
            "(0, 1]",
        )?;
        let min_p = ranged(
            "min_p",
            r.min_p,
            DEFAULT_MIN_P,
            |v| (0.0..=1.0).contains(&v),
            "[0, 1]",
        )?;
        let penalty = |param, v| ranged(param, v, 0.0, |v| (-2.0..=2.0).contains(&v), "[-2, 2]");
        let frequency_penalty = penalty("frequency_penalty", r.frequency_penalty)?;
        let presence_penalty = penalty("presence_penalty", r.presence_penalty)?;
        let repeat_penalty = ranged(
            "repeat_penalty",
            r.repeat_penalty,
            1.0,
            |v| v > 0.0 && v <= 10.0,
            "(0, 10]",
        )?;
        let top_k = match r.top_k {
            None => DEFAULT_TOP_K,
            Some(k) => i32::try_from(k).ok().filter(|k| *k >= 0).ok_or_else(|| {
                ApiError::invalid("top_k", format!("top_k must be >= 0, got {k}"))
            })?,
        };
        let seed = match r.seed {
            None | Some(-1) => None,
            Some(s) => Some(u32::try_from(s).map_err(|_| {
                ApiError::invalid(
                    "seed",
                    format!("seed must be -1 or in [0, {}], got {s}", u32::MAX),
                )
            })?),
        };
        let (max_param, max_value) = match r.max_completion_tokens {
            Some(v) => ("max_completion_tokens", Some(v)),
            None => ("max_tokens", r.max_tokens),
        };
        let max_tokens = match max_value {
            None => None,
            Some(v) => Some(u32::try_from(v).ok().filter(|v| *v >= 1).ok_or_else(|| {
                ApiError::invalid(
                    max_param,
                    format!("{max_param} must be at least 1, got {v}"),
                )
            })?),
        };
        let stop = match &r.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => strings("stop", value)?,
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::invalid(
                "stop",
                format!("at most {MAX_STOP} stop strings are supported"),
            ));
        }
        // Every generated token is matched against every stop string.
        if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                "stop",
                format!("a stop string may have at most {MAX_STOP_BYTES} bytes"),
            ));
        }
        Ok(SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p,
            seed,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            penalty_last_n: DEFAULT_PENALTY_LAST_N,
            max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            constraint: None,
            logit_bias: logit_bias(r.logit_bias.as_ref())?,
            logprobs: None,
            ignore_eos: r.ignore_eos.unwrap_or(false),
        })
    }
}

/// `logit_bias`: `{"token id": bias}` with biases in [-100, 100].
fn logit_bias(value: Option<&Value>) -> Result<Vec<(i32, f32)>, ApiError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::invalid(
                "logit_bias",
                "logit_bias must be an object of token id → bias",
            ))
        }
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            "logit_bias",
            format!("at most {MAX_LOGIT_BIAS} logit_bias entries"),
        ));
    }
    map.iter()
        .map(|(token, bias)| {
            let id = token.parse::<i32>().ok().filter(|t| *t >= 0);
            let bias = bias.as_f64().filter(|b| (-100.0..=100.0).contains(b));
            match (id, bias) {
                (Some(id), Some(bias)) => Ok((id, bias as f32)),
                (None, _) => Err(ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got {token:?}"),
                )),
                (_, None) => Err(ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias values must be numbers in [-100, 100] (token {token})"),
                )),
            }
        })
        .collect()
}

impl SamplingRequest {
    /// The number of choices.
    fn n(&self) -> Result<u32, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=i64::from(MAX_N)).contains(&n) => Ok(n as u32),
            Some(n) => Err(ApiError::invalid(
                "n",
                format!("n must be in [1, {MAX_N}], got {n}"),
            )),
        }
    }

    fn stream(&self) -> (bool, bool) {
        let stream = self.stream.unwrap_or(false);
        let usage = self
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        (stream, stream && usage)
    }
}

/// One message's role, mapped to what chat templates know.
fn role(index: usize, role: &str) -> Result<String, ApiError> {
    match role {
        "system" | "user" | "assistant" | "tool" => Ok(role.to_string()),
        "developer" => Ok("system".into()),
        other => Err(ApiError::invalid(
            format!("messages[{index}].role"),
            format!(
                "unsupported role {other:?}; expected system, developer, user, assistant or tool"
            ),
        )),
    }
}

/// One message's content flattened to text; text parts are joined by newlines.
fn content(index: usize, content: &Value) -> Result<String, ApiError> {
    let param = format!("messages[{index}].content");
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => {
                        return Err(ApiError::invalid(
                            format!("{param}[{j}].text"),
                            "text part without text",
                        ))
                    }
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            format!("{param}[{j}].type"),
                            format!(
                                "unsupported content part type {:?}; only text is supported",
                                kind.unwrap_or("")
                            ),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(ApiError::invalid(
            param,
            "content must be a string or an array of content parts",
        )),
    }
}

fn refuse_if(cond: bool, param: &str, message: &str) -> Result<(), ApiError> {
    match cond {
        true => Err(ApiError::invalid(param, message)),
        false => Ok(()),
    }
}

impl TryFrom<ChatCompletionRequest> for GenerationJob {
    type Error = ApiError;

    fn try_from(r: ChatCompletionRequest) -> Result<Self, ApiError> {
        refuse_if(
            r.messages.is_empty(),
            "messages",
            "messages must contain at least one message",
        )?;
        let options = ChatOptions::from_request(
            r.tools.as_ref(),
            r.tool_choice.as_ref(),
            r.response_format.as_ref(),
            r.json_schema.as_ref(),
            r.grammar.as_ref(),
            r.parallel_tool_calls.unwrap_or(true),
        )?;
        let mut messages = r
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, ApiError>>()?;
        chat::name_tool_results(&mut messages);
        let mut params = SamplingParams::try_from(&r.sampling)?;
        params.logprobs = chat_logprobs(r.logprobs, r.top_logprobs)?;
        let reasoning_effort = reasoning_effort(r.reasoning_effort.as_deref())?;
        let template_kwargs_json = template_kwargs(r.chat_template_kwargs.as_ref())?;
        let (stream, include_usage) = r.sampling.stream();
        Ok(GenerationJob {
            model: r.model,
            prompt: Prompt::Chat(ChatPrompt {
                messages,
                tools_json: options.tools_json(),
                template_kwargs_json,
                reasoning_effort,
                add_generation_prompt: true,
            }),
            params,
            stream,
            include_usage,
            n: r.sampling.n()?,
            chat: Some(options),
        })
    }
}

/// gpt-oss `reasoning_effort`.
fn reasoning_effort(effort: Option<&str>) -> Result<Option<String>, ApiError> {
    match effort {
        None => Ok(None),
        Some(e @ ("low" | "medium" | "high")) => Ok(Some(e.to_owned())),
        Some(other) => Err(ApiError::invalid(
            "reasoning_effort",
            format!("reasoning_effort must be low, medium or high, got {other:?}"),
        )),
    }
}

/// `chat_template_kwargs` as JSON text.
fn template_kwargs(kwargs: Option<&Value>) -> Result<Option<String>, ApiError> {
    match kwargs {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::invalid(
            "chat_template_kwargs",
            "chat_template_kwargs must be an object",
        )),
    }
}

/// One request message as the template sees it.
fn message(i: usize, m: &RequestMessage) -> Result<ChatMessage, ApiError> {
    let role = role(i, &m.role)?;
    let tool_calls = match role.as_str() {
        "assistant" => chat::tool_calls(i, &m.tool_calls)?,
        _ => Vec::new(),
    };
    // An assistant turn that only calls tools has no content (templates test
    // `content is none`); elsewhere a missing content is empty text.
    let content = match (&m.content, tool_calls.is_empty()) {
        (Value::Null, false) => None,
        (c, _) => Some(content(i, c)?),
    };
    if role == "tool" && m.tool_call_id.is_none() {
        tracing::debug!(message = i, "tool message without tool_call_id");
    }
    Ok(ChatMessage {
        role,
        content,
        reasoning_content: m.reasoning_content.clone().filter(|r| !r.is_empty()),
        tool_calls,
        tool_call_id: m.tool_call_id.clone(),
        name: m.name.clone(),
    })
}

/// Chat `logprobs` / `top_logprobs` → alternatives per token.
fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<u8>, ApiError> {
    let top = match top {
        None => 0,
        Some(k) if (0..=i64::from(MAX_TOP_LOGPROBS)).contains(&k) => k as u8,
        Some(k) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {k}"),
            ))
        }
    };
    match logprobs {
        Some(true) => Ok(Some(top)),
        _ if top > 0 => Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        )),
        _ => Ok(None),
    }
}

impl TryFrom<CompletionRequest> for GenerationJob {
    type Error = ApiError;

    fn try_from(r: CompletionRequest) -> Result<Self, ApiError> {
        let prompts = strings("prompt", &r.prompt)?;
        let [prompt] = <[String; 1]>::try_from(prompts).map_err(|_| {
            ApiError::invalid("prompt", "exactly one prompt per request is supported")
        })?;
        refuse_if(r.echo == Some(true), "echo", "echo is not supported")?;
        // A suffix is fill-in-the-middle with the model's FIM tokens (a model
        // without them refuses it in the worker).
        let prompt = match r.suffix.filter(|s| !s.is_empty()) {
            Some(suffix) => Prompt::Infill {
                prefix: prompt,
                suffix,
            },
            None => Prompt::Text(prompt),
        };
        refuse_if(
            r.best_of.is_some_and(|b| b != 1),
            "best_of",
            "only best_of=1 is supported",
        )?;
        let mut params = SamplingParams::try_from(&r.sampling)?;
        // Legacy completions: `logprobs` is the number of alternatives (0–5).
        params.logprobs = match &r.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Number(k)) => match k.as_u64().filter(|k| *k <= 5) {
                Some(k) => Some(k as u8),
                None => {
                    return Err(ApiError::invalid(
                        "logprobs",
                        "logprobs must be an integer in [0, 5]",
                    ))
                }
            },
            Some(_) => {
                return Err(ApiError::invalid(
                    "logprobs",
                    "logprobs must be an integer in [0, 5]",
                ))
            }
        };
        let (stream, include_usage) = r.sampling.stream();
        Ok(GenerationJob {
            model: r.model,
            prompt,
            params,
            stream,
            include_usage,
            n: r.sampling.n()?,
            chat: None,
        })
    }
}

impl TryFrom<EmbeddingRequest> for EmbeddingJob {
    type Error = ApiError;

    fn try_from(r: EmbeddingRequest) -> Result<Self, ApiError> {
        let inputs = super::embed_input::inputs(&r.input)?;
        refuse_if(
            inputs.len() > MAX_EMBEDDING_INPUTS,
            "input",
            &format!("at most {MAX_EMBEDDING_INPUTS} inputs per request"),
        )?;
        let dimensions = crate::api::ollama_embed::dimensions(r.dimensions.as_ref())?;
        let format = match r.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!("encoding_format must be float or base64, got {other:?}"),
                ))
            }
        };
        Ok(EmbeddingJob {
            model: r.model,
            inputs,
            format,
            dimensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(body: Value) -> Result<GenerationJob, ApiError> {
        GenerationJob::try_from(serde_json::from_value::<ChatCompletionRequest>(body).unwrap())
    }

    fn completion(body: Value) -> Result<GenerationJob, ApiError> {
        GenerationJob::try_from(serde_json::from_value::<CompletionRequest>(body).unwrap())
    }

    fn embedding(body: Value) -> Result<EmbeddingJob, ApiError> {
        EmbeddingJob::try_from(serde_json::from_value::<EmbeddingRequest>(body).unwrap())
    }

    fn param_of(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    /// A valid chat body with `extra` merged in.
    fn chat_with(extra: Value) -> Value {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    }

    #[test]
    fn minimal_chat_gets_the_documented_defaults() {
        let job = chat(chat_with(json!({}))).unwrap();
        assert_eq!(job.model, "m");
        assert!(!job.stream);
        let p = job.params;
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.min_p),
            (1.0, 1.0, 40, 0.05)
        );
        assert_eq!((p.seed, p.max_tokens, p.repeat_penalty), (None, None, 1.0));
        assert!(p.stop.is_empty());
    }

    #[test]
    fn chat_fields_are_carried_over() {
        let job = chat(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null},
            ],
            "temperature": 0, "top_p": 0.5, "top_k": 7, "seed": 42, "max_tokens": 9,
            "max_completion_tokens": 3, "stop": "\n", "stream": true,
            "stream_options": {"include_usage": true}, "user": "ignored", "n": 1,
        }))
        .unwrap();
        let Prompt::Chat(chat) = &job.prompt else {
            panic!()
        };
        let pairs: Vec<_> = chat
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            pairs,
            [("system", "be brief"), ("user", "a\nb"), ("assistant", "")]
        );
        let p = &job.params;
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.seed),
            (0.0, 0.5, 7, Some(42))
        );
        assert_eq!(p.max_tokens, Some(3), "max_completion_tokens wins");
        assert_eq!(p.stop, ["\n"]);
        assert!(job.stream && job.include_usage);
    }

    #[test]
    fn a_tool_conversation_becomes_template_messages() {
        let job = chat(json!({"model": "m", "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "reasoning_content": "think",
             "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
         ],
         "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
         "reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": false},
         "logprobs": true, "top_logprobs": 2, "logit_bias": {"7": -100}}))
        .unwrap();
        let Prompt::Chat(c) = &job.prompt else {
            panic!()
        };
        let assistant = &c.messages[2];
        assert_eq!(
            assistant.content, None,
            "a tool-calling turn has no content"
        );
        assert_eq!(assistant.reasoning_content.as_deref(), Some("think"));
        assert_eq!(assistant.tool_calls[0].name, "get_weather");
        assert_eq!(assistant.tool_calls[0].arguments, "{\"city\":\"Paris\"}");
        let tool = &c.messages[3];
        assert_eq!(tool.tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(
            tool.name.as_deref(),
            Some("get_weather"),
            "named from the call it answers"
        );
        assert!(c.tools_json.as_deref().unwrap().contains("get_weather"));
        assert_eq!(c.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            c.template_kwargs_json.as_deref(),
            Some("{\"enable_thinking\":false}")
        );
        assert_eq!(job.params.logprobs, Some(2));
        assert_eq!(job.params.logit_bias, vec![(7, -100.0)]);
    }

    #[test]
    fn bad_chat_requests_name_their_param() {
        let cases = [
            (json!({"messages": []}), "messages"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_p": 1.01}), "top_p"),
            (json!({"top_k": -1}), "top_k"),
            (json!({"min_p": 2}), "min_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": -5}), "max_tokens"),
            (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
            (json!({"frequency_penalty": 2.1}), "frequency_penalty"),
            (json!({"presence_penalty": -3}), "presence_penalty"),
            (json!({"repeat_penalty": 0}), "repeat_penalty"),
            (json!({"seed": -2}), "seed"),
            (json!({"n": 17}), "n"),
            (json!({"stop": 5}), "stop"),
            (json!({"stop": ["a", 1]}), "stop"),
            (json!({"stop": vec!["s"; 17]}), "stop"),
            (
                json!({"tools": [{"type": "function"}]}),
                "tools[0].function.name",
            ),
            (json!({"tools": {}}), "tools"),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"response_format": {"type": "xml"}}),
                "response_format.type",
            ),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (
                json!({"logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"logit_bias": {"5": 101}}), "logit_bias"),
            (json!({"reasoning_effort": "max"}), "reasoning_effort"),
            (json!({"chat_template_kwargs": []}), "chat_template_kwargs"),
            (
                json!({"messages": [{"role": "assistant", "content": null,
                    "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
        ];
        for (extra, param) in cases {
            assert_eq!(param_of(chat(chat_with(extra.clone()))), param, "{extra}");
        }
    }

    #[test]
    fn stream_options_need_stream() {
        let job = chat(chat_with(
            json!({"stream_options": {"include_usage": true}}),
        ))
        .unwrap();
        assert!(!job.stream && !job.include_usage);
    }

    #[test]
    fn completion_prompt_is_one_string() {
        let job = completion(json!({"model": "m", "prompt": ["once"], "max_tokens": 2})).unwrap();
        assert_eq!(job.prompt, Prompt::Text("once".into()));
        assert_eq!(job.params.max_tokens, Some(2));
        for (body, param) in [
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": [1, 2]}), "prompt"),
            (json!({"model": "m", "prompt": "a", "echo": true}), "echo"),
            (
                json!({"model": "m", "prompt": "a", "best_of": 2}),
                "best_of",
            ),
            (
                json!({"model": "m", "prompt": "a", "logprobs": 6}),
                "logprobs",
            ),
            (json!({"model": "m", "prompt": "a", "top_p": 0}), "top_p"),
        ] {
            assert_eq!(param_of(completion(body.clone())), param, "{body}");
        }
        assert!(completion(json!({"model": "m", "prompt": "a", "logprobs": null})).is_ok());
    }

    #[test]
    fn embedding_inputs_and_formats() {
        let job = embedding(json!({"model": "m", "input": "x"})).unwrap();
        assert_eq!(
            (job.inputs, job.format),
            (
                vec![crate::worker::EmbedInput::Text("x".into())],
                EncodingFormat::Float
            )
        );
        let job =
            embedding(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}))
                .unwrap();
        assert_eq!((job.inputs.len(), job.format), (2, EncodingFormat::Base64));
        for (body, param) in [
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": [1, -2]}), "input"),
            (json!({"model": "m", "input": 7}), "input"),
            (
                json!({"model": "m", "input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "a", "dimensions": 0}),
                "dimensions",
            ),
            (
                json!({"model": "m", "input": "a", "dimensions": "8"}),
                "dimensions",
            ),
        ] {
            assert_eq!(param_of(embedding(body.clone())), param, "{body}");
        }
        let job = embedding(json!({"model": "m", "input": [[1, 2], [3]]})).unwrap();
        assert_eq!(job.inputs.len(), 2, "token arrays");
        let job = embedding(json!({"model": "m", "input": "a", "dimensions": 8})).unwrap();
        assert_eq!(job.dimensions, Some(8));
    }
}
