//! The chat-specific part of a request: messages with tool calls, `tools`,
//! `tool_choice`, `response_format` (and llama-server's `grammar` /
//! `json_schema`), and how they become a prompt, a grammar constraint and the
//! options of the output parser once the model's [`ChatFormat`] is known.
//!
//! # Constraints
//! - `response_format: json_object` / `json_schema` (and `json_schema`,
//!   `grammar`) constrain the whole output with a grammar, on any model.
//! - `tool_choice: "required"` constrains the output to a JSON array of
//!   `{"name", "arguments"}` objects (at least one, each matching its tool's
//!   parameters); a named function constrains it to that function's
//!   arguments. The output parser is told ([`Forced`]), so this works the
//!   same on every model family, the 135M bundled one included (vLLM's
//!   approach; llama-server does not guarantee `required`).
//! - `tool_choice: "auto"` (the default with tools) uses a lazy grammar that
//!   starts at the family's tool-call opener where the family writes JSON
//!   bodies (see [`tools::lazy_trigger`]); elsewhere the model's own syntax
//!   is parsed unconstrained.

use llm_node_chat::format::ChatFormat;
use llm_node_chat::parse::{Forced, ParseOptions};
use llm_node_chat::tools;
use llm_node_protocol::{ChatMessage, Constraint, ToolCall};
use serde_json::{json, Map, Value};

use super::error::ApiError;

/// Most calls one forced (`required`) turn may make: the grammar closes the
/// array after this many, so a model that would repeat a call forever ends.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// What the client asked of tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Tools are shown to the model but calls are not parsed.
    None,
    Auto,
    Required,
    Function(String),
}

/// The chat options that need the model's format to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOptions {
    /// The `function` objects of `tools` (`name`, `description`, `parameters`).
    pub functions: Vec<Value>,
    pub tool_choice: ToolChoice,
    /// A constraint from `response_format`, `json_schema` or `grammar`, and
    /// the parameter it came from (named in the 400 if the model refuses it).
    pub output: Option<(Constraint, &'static str)>,
    /// `parallel_tool_calls` (default true): several calls in one turn.
    pub parallel: bool,
}

/// The grammar and parser options of one request on one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub constraint: Option<Constraint>,
    /// The request parameter a refused constraint is blamed on.
    pub constraint_param: Option<&'static str>,
    pub parse: ParseOptions,
    /// Several tool calls may be kept (`parallel_tool_calls`).
    pub parallel: bool,
}

impl ChatOptions {
    /// Reads `tools`, `tool_choice`, `response_format`, `json_schema`,
    /// `grammar` and `parallel_tool_calls`.
    ///
    /// # Errors
    /// A 400 naming the parameter that is malformed.
    pub fn from_request(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        response_format: Option<&Value>,
        json_schema: Option<&Value>,
        grammar: Option<&Value>,
        parallel: bool,
    ) -> Result<Self, ApiError> {
        let functions = functions(tools)?;
        let tool_choice = match tool_choice {
            None | Some(Value::Null) if functions.is_empty() => ToolChoice::None,
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(choice) => parse_tool_choice(choice, &functions)?,
        };
        let output = output_constraint(response_format, json_schema, grammar)?;
        if output.is_some() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Function(_))
        {
            return Err(ApiError::invalid(
                "response_format",
                "response_format cannot be combined with a forced tool_choice",
            ));
        }
        Ok(Self {
            functions,
            tool_choice,
            output,
            parallel,
        })
    }

    /// The `tools` array to render into the prompt (OpenAI's shape), if any.
    pub fn tools_json(&self) -> Option<String> {
        if self.functions.is_empty() {
            return None;
        }
        let tools: Vec<Value> = self
            .functions
            .iter()
            .map(|f| json!({"type": "function", "function": f}))
            .collect();
        Some(Value::Array(tools).to_string())
    }

    /// The constraint and parser options for a model of `format`.
    pub fn plan(&self, format: ChatFormat) -> Plan {
        let schemas = self
            .functions
            .iter()
            .filter_map(|f| Some((f["name"].as_str()?.to_owned(), parameters(f))))
            .collect();
        // `reasoning_open` is only known when the worker has rendered the
        // prompt (`Started`); the output assembler sets it then.
        let mut parse = ParseOptions {
            reasoning_open: false,
            tools: !matches!(self.tool_choice, ToolChoice::None),
            forced: None,
            tool_schemas: schemas,
        };
        let (constraint, param) = match &self.tool_choice {
            ToolChoice::Required => {
                parse.forced = Some(Forced::Calls);
                let most = if self.parallel { MAX_PARALLEL_CALLS } else { 1 };
                let schema = tools::required_calls_schema(&self.functions, most);
                (Some(Constraint::JsonSchema(schema.to_string())), "tools")
            }
            ToolChoice::Function(name) => {
                parse.forced = Some(Forced::Function(name.clone()));
                let f = self.functions.iter().find(|f| f["name"] == name.as_str());
                let schema = f
                    .map(parameters)
                    .unwrap_or_else(|| json!({"type": "object"}));
                (Some(Constraint::JsonSchema(schema.to_string())), "tools")
            }
            _ if self.output.is_some() => {
                let (c, p) = self.output.clone().expect("checked");
                (Some(c), p)
            }
            ToolChoice::Auto => match tools::lazy_trigger(format) {
                Some((trigger, suffix)) => (
                    Some(Constraint::LazyJsonSchema {
                        trigger: trigger.to_owned(),
                        schema: tools::one_call_schema(&self.functions).to_string(),
                        suffix: suffix.to_owned(),
                    }),
                    "tools",
                ),
                None => (None, "tools"),
            },
            ToolChoice::None => (None, "tools"),
        };
        Plan {
            constraint_param: constraint.as_ref().map(|_| param),
            constraint,
            parse,
            parallel: self.parallel,
        }
    }
}

/// A function's `parameters` schema (an empty object schema when absent).
fn parameters(function: &Value) -> Value {
    match &function["parameters"] {
        Value::Null => json!({"type": "object", "properties": {}}),
        p => p.clone(),
    }
}

/// The `function` objects of `tools`, checked.
fn functions(tools: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let items = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("tools", "tools must be an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, tool) in items.iter().enumerate() {
        let param = format!("tools[{i}]");
        if tool["type"] != "function" {
            return Err(ApiError::invalid(
                format!("{param}.type"),
                "only tools of type \"function\" are supported",
            ));
        }
        let f = &tool["function"];
        let name = f["name"].as_str().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid_name {
            return Err(ApiError::invalid(
                format!("{param}.function.name"),
                "a function name must be 1-64 characters of a-z, A-Z, 0-9, _, - or .",
            ));
        }
        if !matches!(f["parameters"], Value::Null | Value::Object(_)) {
            return Err(ApiError::invalid(
                format!("{param}.function.parameters"),
                "parameters must be a JSON schema object",
            ));
        }
        if out.iter().any(|o: &Value| o["name"] == name) {
            return Err(ApiError::invalid(
                format!("{param}.function.name"),
                format!("duplicate function name {name:?}"),
            ));
        }
        out.push(f.clone());
    }
    Ok(out)
}

fn parse_tool_choice(choice: &Value, functions: &[Value]) -> Result<ToolChoice, ApiError> {
    let needs_tools = |c: ToolChoice| match functions.is_empty() {
        true => Err(ApiError::invalid(
            "tool_choice",
            "tool_choice needs a non-empty tools list",
        )),
        false => Ok(c),
    };
    match choice {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" if functions.is_empty() => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => needs_tools(ToolChoice::Required),
            other => Err(ApiError::invalid(
                "tool_choice",
                format!("tool_choice must be none, auto, required or a function, got {other:?}"),
            )),
        },
        Value::Object(_) => {
            let name = choice["function"]["name"].as_str().ok_or_else(|| {
                ApiError::invalid(
                    "tool_choice",
                    "tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                )
            })?;
            if !functions.iter().any(|f| f["name"] == name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not in tools"),
                ));
            }
            needs_tools(ToolChoice::Function(name.to_owned()))
        }
        _ => Err(ApiError::invalid(
            "tool_choice",
            "tool_choice must be a string or an object",
        )),
    }
}

/// `response_format`, llama-server's `json_schema` and `grammar`.
fn output_constraint(
    response_format: Option<&Value>,
    json_schema: Option<&Value>,
    grammar: Option<&Value>,
) -> Result<Option<(Constraint, &'static str)>, ApiError> {
    if let Some(g) = grammar.filter(|g| !g.is_null()) {
        let g = g
            .as_str()
            .filter(|g| !g.trim().is_empty())
            .ok_or_else(|| ApiError::invalid("grammar", "grammar must be a GBNF string"))?;
        return Ok(Some((Constraint::Grammar(g.to_owned()), "grammar")));
    }
    if let Some(schema) = json_schema.filter(|s| !s.is_null()) {
        check_schema("json_schema", schema)?;
        return Ok(Some((
            Constraint::JsonSchema(schema.to_string()),
            "json_schema",
        )));
    }
    let Some(format) = response_format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => {
            // A schema, if given (llama-server's extension), narrows it.
            let schema = match &format["schema"] {
                Value::Null => json!({"type": "object"}),
                s => {
                    check_schema("response_format.schema", s)?;
                    s.clone()
                }
            };
            Ok(Some((
                Constraint::JsonSchema(schema.to_string()),
                "response_format",
            )))
        }
        Some("json_schema") => {
            let schema = &format["json_schema"]["schema"];
            if schema.is_null() {
                return Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "response_format json_schema needs json_schema.schema",
                ));
            }
            check_schema("response_format.json_schema.schema", schema)?;
            Ok(Some((
                Constraint::JsonSchema(schema.to_string()),
                "response_format",
            )))
        }
        _ => Err(ApiError::invalid(
            "response_format.type",
            "response_format type must be text, json_object or json_schema",
        )),
    }
}

/// A JSON schema must be an object or a boolean; llama.cpp's converter
/// checks the rest when the request reaches the model.
fn check_schema(param: &str, schema: &Value) -> Result<(), ApiError> {
    match schema {
        Value::Object(_) | Value::Bool(_) => Ok(()),
        _ => Err(ApiError::invalid(param, "a JSON schema must be an object")),
    }
}

/// An assistant message's `tool_calls`, checked into protocol calls.
///
/// # Errors
/// A 400 naming the malformed field.
pub fn tool_calls(index: usize, value: &Value) -> Result<Vec<ToolCall>, ApiError> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::invalid(
                format!("messages[{index}].tool_calls"),
                "tool_calls must be an array",
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let param = format!("messages[{index}].tool_calls[{j}]");
            let f = &call["function"];
            let name = f["name"].as_str().ok_or_else(|| {
                ApiError::invalid(format!("{param}.function.name"), "a tool call needs a name")
            })?;
            // OpenAI sends the arguments as JSON text; accept an object too.
            let arguments = match &f["arguments"] {
                Value::String(s) => {
                    serde_json::from_str::<Map<String, Value>>(s).map_err(|_| {
                        ApiError::invalid(
                            format!("{param}.function.arguments"),
                            "arguments must be a JSON object (as text)",
                        )
                    })?;
                    s.clone()
                }
                Value::Object(o) => Value::Object(o.clone()).to_string(),
                Value::Null => "{}".to_owned(),
                _ => {
                    return Err(ApiError::invalid(
                        format!("{param}.function.arguments"),
                        "arguments must be a JSON object (as text)",
                    ))
                }
            };
            Ok(ToolCall {
                id: call["id"].as_str().unwrap_or_default().to_owned(),
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

/// Fills a `tool` message's function name from the assistant call it answers,
/// for templates that print it.
pub fn name_tool_results(messages: &mut [ChatMessage]) {
    let mut names = std::collections::HashMap::new();
    for m in messages.iter_mut() {
        for call in &m.tool_calls {
            names.insert(call.id.clone(), call.name.clone());
        }
        if m.role == "tool" && m.name.is_none() {
            if let Some(id) = &m.tool_call_id {
                m.name = names.get(id).cloned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    fn options(tool_choice: Value) -> Result<ChatOptions, ApiError> {
        ChatOptions::from_request(Some(&weather()), Some(&tool_choice), None, None, None, true)
    }

    fn param_of(r: Result<ChatOptions, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tool_choice_defaults_to_auto_with_tools_and_none_without() {
        let o = ChatOptions::from_request(Some(&weather()), None, None, None, None, true).unwrap();
        assert_eq!(o.tool_choice, ToolChoice::Auto);
        let o = ChatOptions::from_request(None, None, None, None, None, true).unwrap();
        assert_eq!(o.tool_choice, ToolChoice::None);
        assert!(o.tools_json().is_none());
    }

    #[test]
    fn required_and_named_choices_force_a_json_call() {
        let plan = options(json!("required"))
            .unwrap()
            .plan(ChatFormat::GENERIC);
        assert_eq!(plan.parse.forced, Some(Forced::Calls));
        let Some(Constraint::JsonSchema(schema)) = plan.constraint else {
            panic!()
        };
        assert!(schema.contains("get_weather"), "{schema}");
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let plan = options(named).unwrap().plan(ChatFormat::GENERIC);
        assert_eq!(
            plan.parse.forced,
            Some(Forced::Function("get_weather".into()))
        );
        let Some(Constraint::JsonSchema(schema)) = plan.constraint else {
            panic!()
        };
        assert!(schema.contains("\"city\""), "{schema}");
    }

    #[test]
    fn bad_tools_and_choices_name_their_parameter() {
        assert_eq!(param_of(options(json!("sometimes"))), "tool_choice");
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert_eq!(param_of(options(unknown)), "tool_choice");
        let bad = json!([{"type": "function", "function": {"name": "a b"}}]);
        assert_eq!(
            param_of(ChatOptions::from_request(
                Some(&bad),
                None,
                None,
                None,
                None,
                true
            )),
            "tools[0].function.name"
        );
        let rf = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}});
        assert_eq!(
            param_of(ChatOptions::from_request(
                None,
                None,
                Some(&rf),
                None,
                None,
                true
            )),
            "response_format.json_schema.schema"
        );
    }

    #[test]
    fn response_formats_become_schemas() {
        let rf = json!({"type": "json_object"});
        let o = ChatOptions::from_request(None, None, Some(&rf), None, None, true).unwrap();
        assert_eq!(
            o.output,
            Some((
                Constraint::JsonSchema("{\"type\":\"object\"}".into()),
                "response_format"
            ))
        );
        let rf = json!({"type": "text"});
        let o = ChatOptions::from_request(None, None, Some(&rf), None, None, true).unwrap();
        assert_eq!(o.output, None);
    }

    #[test]
    fn history_tool_calls_accept_text_or_object_arguments() {
        let calls = json!([
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": 2}}},
        ]);
        let calls = tool_calls(1, &calls).unwrap();
        assert_eq!(calls[0].arguments, "{\"x\":1}");
        assert_eq!(calls[1].arguments, "{\"y\":2}");
        let bad = json!([{"function": {"name": "f", "arguments": "not json"}}]);
        assert!(tool_calls(1, &bad).is_err());
    }
}
