//! The objects `/api/chat` and `/api/generate` answer, one per NDJSON line
//! (`application/x-ndjson`) or one whole: rendered here, in Ollama's field
//! order (its `api/types.go`: `ChatResponse`, `GenerateResponse`, `Metrics`),
//! tested byte for byte against the examples of Ollama's `docs/api.md`.
//!
//! - A chunk: `{"model","created_at","message":{"role","content"[,"thinking"][,"tool_calls"]},"done":false}`
//!   (`/api/generate`: `"response"` and `"thinking"` instead of `"message"`).
//! - The last object adds `"done":true`, `"done_reason"` and the metrics
//!   (durations in nanoseconds); like Go's `omitempty`, zero metrics and empty
//!   `thinking` / `tool_calls` are left out.
//! - Tool calls carry `arguments` as a JSON object, as Ollama sends them.
//! - A failure after the first line is one `{"error": "…"}` line, then the end.

use serde::Serialize;
use serde_json::Value;

use super::ollama_job::Endpoint;

/// Ollama's timing and count fields (durations in nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    pub total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_duration: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the assistant produced, in one line or in the whole answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub content: String,
    pub thinking: String,
    /// `(name, arguments)`; arguments are an object when the model wrote one.
    pub tool_calls: Vec<(String, Value)>,
}

/// How the last object ends the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// `stop`, `length`, `load` or `unload`.
    pub reason: &'static str,
    pub metrics: Metrics,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a Value,
}

fn calls(output: &Output) -> Vec<ToolCallOut<'_>> {
    output
        .tool_calls
        .iter()
        .map(|(name, arguments)| ToolCallOut {
            function: FunctionOut { name, arguments },
        })
        .collect()
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ChatLine<'a> {
    model: &'a str,
    created_at: &'a str,
    message: MessageOut<'a>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(flatten)]
    metrics: Metrics,
}

#[derive(Serialize)]
struct GenerateLine<'a> {
    model: &'a str,
    created_at: &'a str,
    response: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    thinking: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'static str>,
    #[serde(flatten)]
    metrics: Metrics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

/// Renders the objects of one answer.
#[derive(Debug, Clone)]
pub struct Lines {
    pub endpoint: Endpoint,
    /// The model's configured id.
    pub model: String,
}

impl Lines {
    /// One object (no newline): a chunk when `end` is `None`, else the last one.
    pub fn object(&self, created_at: &str, output: &Output, end: Option<End>) -> Vec<u8> {
        let (done, done_reason, metrics) = match end {
            Some(end) => (true, Some(end.reason), end.metrics),
            None => (false, None, Metrics::default()),
        };
        let json = match self.endpoint {
            Endpoint::Chat => serde_json::to_vec(&ChatLine {
                model: &self.model,
                created_at,
                message: MessageOut {
                    role: "assistant",
                    content: &output.content,
                    thinking: &output.thinking,
                    tool_calls: calls(output),
                },
                done,
                done_reason,
                metrics,
            }),
            Endpoint::Generate => serde_json::to_vec(&GenerateLine {
                model: &self.model,
                created_at,
                response: &output.content,
                thinking: &output.thinking,
                done,
                done_reason,
                metrics,
                tool_calls: calls(output),
            }),
        };
        json.expect("response objects serialize")
    }

    /// One NDJSON line, stamped now.
    pub fn line(&self, output: &Output, end: Option<End>) -> Vec<u8> {
        let mut line = self.object(&now(), output, end);
        line.push(b'\n');
        line
    }
}

/// The line that ends a stream that failed after it began.
pub fn error_line(message: &str) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "error": message })).expect("strings serialize");
    line.push(b'\n');
    line
}

/// Now, as Ollama's `created_at`: RFC 3339 in UTC with up to nanoseconds.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A tool call's arguments as Ollama sends them: the object the model wrote,
/// or its text when it is not JSON.
pub fn arguments(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(_) if text.trim().is_empty() => Value::Object(serde_json::Map::new()),
        Err(_) => Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A documented example with its whitespace outside strings removed
    /// (the examples are pretty-printed; the wire form is compact).
    fn compact(doc: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in doc.chars() {
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
                out.push(c);
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    }

    fn lines(endpoint: Endpoint, model: &str) -> Lines {
        Lines {
            endpoint,
            model: model.into(),
        }
    }

    fn text(content: &str) -> Output {
        Output {
            content: content.into(),
            ..Output::default()
        }
    }

    fn rendered(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_generate_chunk_is_the_documented_one() {
        // docs/api.md, "Generate request (Streaming)", a chunk.
        let doc = r#"{
          "model": "llama3.2",
          "created_at": "2023-08-04T08:52:19.385406455-07:00",
          "response": "The",
          "done": false
        }"#;
        let got = lines(Endpoint::Generate, "llama3.2").object(
            "2023-08-04T08:52:19.385406455-07:00",
            &text("The"),
            None,
        );
        assert_eq!(rendered(got), compact(doc));
    }

    #[test]
    fn the_last_generate_object_is_the_documented_one() {
        // docs/api.md, "Request (with suffix)" (our answers have no `context`).
        let doc = r#"{
          "model": "codellama:code",
          "created_at": "2024-07-22T20:47:51.147561Z",
          "response": "\n  if a == 0:\n    return b\n  else:\n    return compute_gcd(b % a, a)\n\ndef compute_lcm(a, b):\n  result = (a * b) / compute_gcd(a, b)\n",
          "done": true,
          "done_reason": "stop",
          "total_duration": 1162761250,
          "load_duration": 6683708,
          "prompt_eval_count": 17,
          "prompt_eval_duration": 201222000,
          "eval_count": 63,
          "eval_duration": 953997000
        }"#;
        let response = "\n  if a == 0:\n    return b\n  else:\n    return compute_gcd(b % a, a)\n\ndef compute_lcm(a, b):\n  result = (a * b) / compute_gcd(a, b)\n";
        let end = End {
            reason: "stop",
            metrics: Metrics {
                total_duration: 1162761250,
                load_duration: 6683708,
                prompt_eval_count: 17,
                prompt_eval_duration: 201222000,
                eval_count: 63,
                eval_duration: 953997000,
            },
        };
        let got = lines(Endpoint::Generate, "codellama:code").object(
            "2024-07-22T20:47:51.147561Z",
            &text(response),
            Some(end),
        );
        assert_eq!(rendered(got), compact(doc));
    }

    #[test]
    fn load_and_unload_answers_are_the_documented_ones() {
        // docs/api.md, "Load a model" has no done_reason (older Ollama); ours
        // says "load", as Ollama does since. "Unload a model" matches whole.
        let unload = r#"{
          "model": "llama3.2",
          "created_at": "2024-09-12T03:54:03.516566Z",
          "response": "",
          "done": true,
          "done_reason": "unload"
        }"#;
        let l = lines(Endpoint::Generate, "llama3.2");
        let end = |reason| {
            Some(End {
                reason,
                metrics: Metrics::default(),
            })
        };
        let got = l.object(
            "2024-09-12T03:54:03.516566Z",
            &Output::default(),
            end("unload"),
        );
        assert_eq!(rendered(got), compact(unload));
        let load = r#"{
          "model": "llama3.2",
          "created_at": "2023-12-18T19:52:07.071755Z",
          "response": "",
          "done": true
        }"#;
        let got = l.object(
            "2023-12-18T19:52:07.071755Z",
            &Output::default(),
            end("load"),
        );
        assert_eq!(
            rendered(got),
            compact(load).replace("true}", "true,\"done_reason\":\"load\"}")
        );
    }

    #[test]
    fn a_chat_chunk_and_the_whole_chat_answer_are_the_documented_ones() {
        // docs/api.md, "Chat request (With History)", a chunk.
        let chunk = r#"{
          "model": "llama3.2",
          "created_at": "2023-08-04T08:52:19.385406455-07:00",
          "message": {
            "role": "assistant",
            "content": "The"
          },
          "done": false
        }"#;
        let l = lines(Endpoint::Chat, "llama3.2");
        let got = l.object("2023-08-04T08:52:19.385406455-07:00", &text("The"), None);
        assert_eq!(rendered(got), compact(chunk));
        // "Chat request (No streaming)" with the done_reason Ollama sends
        // after `done` (its ChatResponse field order; the document's examples
        // disagree with each other on where it goes).
        let whole = r#"{
          "model": "llama3.2",
          "created_at": "2023-12-12T14:13:43.416799Z",
          "message": {
            "role": "assistant",
            "content": "Hello! How are you today?"
          },
          "done": true,
          "done_reason": "stop",
          "total_duration": 5191566416,
          "load_duration": 2154458,
          "prompt_eval_count": 26,
          "prompt_eval_duration": 383809000,
          "eval_count": 298,
          "eval_duration": 4799921000
        }"#;
        let end = End {
            reason: "stop",
            metrics: Metrics {
                total_duration: 5191566416,
                load_duration: 2154458,
                prompt_eval_count: 26,
                prompt_eval_duration: 383809000,
                eval_count: 298,
                eval_duration: 4799921000,
            },
        };
        let got = l.object(
            "2023-12-12T14:13:43.416799Z",
            &text("Hello! How are you today?"),
            Some(end),
        );
        assert_eq!(rendered(got), compact(whole));
    }

    #[test]
    fn a_tool_call_chunk_is_the_documented_one() {
        // docs/api.md, "Chat request (Streaming with tools)", the call chunk.
        let doc = r#"{
          "model": "llama3.2",
          "created_at": "2025-07-07T20:22:19.184789Z",
          "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
              {
                "function": {
                  "name": "get_weather",
                  "arguments": {
                    "city": "Tokyo"
                  }
                }
              }
            ]
          },
          "done": false
        }"#;
        let output = Output {
            tool_calls: vec![("get_weather".into(), arguments(r#"{"city": "Tokyo"}"#))],
            ..Output::default()
        };
        let got =
            lines(Endpoint::Chat, "llama3.2").object("2025-07-07T20:22:19.184789Z", &output, None);
        assert_eq!(rendered(got), compact(doc));
    }

    #[test]
    fn thinking_rides_next_to_the_content() {
        let output = Output {
            content: String::new(),
            thinking: "hm".into(),
            tool_calls: Vec::new(),
        };
        let chat = lines(Endpoint::Chat, "m").object("t", &output, None);
        assert_eq!(
            rendered(chat),
            r#"{"model":"m","created_at":"t","message":{"role":"assistant","content":"","thinking":"hm"},"done":false}"#
        );
        let generate = lines(Endpoint::Generate, "m").object("t", &output, None);
        assert_eq!(
            rendered(generate),
            r#"{"model":"m","created_at":"t","response":"","thinking":"hm","done":false}"#
        );
    }

    #[test]
    fn lines_end_with_a_newline_and_errors_are_one_line() {
        let line = lines(Endpoint::Chat, "m").line(&text("x"), None);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(error_line("worker gone"), b"{\"error\":\"worker gone\"}\n");
    }

    #[test]
    fn arguments_are_objects_when_the_model_wrote_json() {
        assert_eq!(arguments(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(arguments(""), json!({}));
        assert_eq!(arguments("{broken"), json!("{broken"));
    }
}
