//! What a template can take, found by rendering needle conversations once
//! (the way llama.cpp's and minja's capability detection do), and the
//! polyfills that adapt a chat to a template that cannot take all of it.
//!
//! Polyfills, applied in this order:
//! 1. `developer` becomes `system` (except for gpt-oss, whose harmony format
//!    has a developer role).
//! 2. Tools a template never prints are described in the system message
//!    (minja's wording: "You can call any of the following tools ...").
//! 3. Tool calls a template never prints become the assistant's content, as
//!    JSON `{"tool_calls": [{"name", "arguments", "id"}], "content"}`.
//! 4. Tool results a template never prints become user messages, as JSON
//!    `{"tool_response": {"tool", "content", "tool_call_id"}}`.
//! 5. A leading system message a template drops or rejects is merged into the
//!    next message, joined with `"\n"` (llama-server's merge).

use llm_node_protocol::{ChatMessage, ChatPrompt, ToolCall};
use minijinja::Value;

use super::json::{dumps, Style};
use super::{parse_json, TemplateError};

/// What one template takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// A system message shows up in the output.
    pub system_role: bool,
    /// The `tools` list shows up in the output.
    pub tools: bool,
    /// Assistant `tool_calls` show up in the output.
    pub tool_calls: bool,
    /// `tool` messages show up in the output.
    pub tool_responses: bool,
    /// Tool-call `arguments` go in as an object rather than JSON text.
    pub object_arguments: bool,
    /// An assistant turn with only tool calls needs `content == ""`, not none.
    pub non_null_content: bool,
    /// Keep the `developer` role (gpt-oss).
    pub developer_role: bool,
}

impl Caps {
    /// What a template that takes everything gets: no polyfill.
    pub const FULL: Self = Self {
        system_role: true,
        tools: true,
        tool_calls: true,
        tool_responses: true,
        object_arguments: true,
        non_null_content: false,
        developer_role: true,
    };

    /// Probes a template. `render` renders a prompt with the given caps
    /// (which decide only the message shape, no polyfill) and gives `None`
    /// when the template fails.
    pub fn probe(source: &str, render: impl Fn(&ChatPrompt, Caps) -> Option<String>) -> Self {
        let chat = |messages: Vec<ChatMessage>| ChatPrompt {
            messages,
            ..ChatPrompt::default()
        };
        let user = ChatMessage::text("user", "<User Needle>");
        let full = Self {
            developer_role: source.contains("<|channel|>"),
            ..Self::FULL
        };

        let system = ChatMessage::text("system", "<System Needle>");
        let system_role = render(&chat(vec![system, user.clone()]), full)
            .is_some_and(|o| o.contains("<System Needle>"));

        let tools = r#"[{"type": "function", "function": {"name": "some_tool", "description": "Some tool.", "parameters": {"type": "object", "properties": {"arg": {"type": "string", "description": "Some argument."}}, "required": ["arg"]}}}]"#;
        let with_tools = ChatPrompt {
            tools_json: Some(tools.into()),
            ..chat(vec![user.clone()])
        };
        let tools = render(&with_tools, full).is_some_and(|o| o.contains("some_tool"));

        // Arguments with a boolean: a template that prints the object itself
        // (expecting text) shows `"flag": True`, Python's dict spelling.
        let args = r#"{"argument_needle": "print('Hello, World!')", "flag": true}"#;
        let call = ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call00001".into(),
                name: "ipython".into(),
                arguments: args.into(),
            }],
            ..ChatMessage::default()
        };
        let blank_call = ChatMessage {
            content: Some(String::new()),
            ..call.clone()
        };
        let shown = |caps: Self| {
            [&call, &blank_call].iter().any(|c| {
                render(&chat(vec![user.clone(), (*c).clone()]), caps).is_some_and(|o| {
                    o.contains("argument_needle")
                        && !o.contains("\\\"argument_needle")
                        && !o.contains("\"flag\": True")
                })
            })
        };
        let as_text = Self {
            object_arguments: false,
            ..full
        };
        let (objects, text) = (shown(full), shown(as_text));
        // Objects unless only text works (llama-server prefers objects too).
        let object_arguments = objects || !text;
        let mut caps = Self {
            system_role,
            tools,
            tool_calls: objects || text,
            object_arguments,
            ..full
        };

        let result = ChatMessage {
            tool_call_id: Some("call00001".into()),
            name: Some("ipython".into()),
            ..ChatMessage::text("tool", "Some response!")
        };
        let turn = chat(vec![user.clone(), call, result.clone()]);
        let blank_turn = chat(vec![user, blank_call, result]);
        caps.tool_responses = [&turn, &blank_turn]
            .iter()
            .any(|t| render(t, caps).is_some_and(|o| o.contains("Some response!")));

        // None content where a tool-call turn is not the last one (QwQ
        // splits every earlier assistant content), after the polyfills.
        let adapted = caps.adapt(&turn).map(chat).ok();
        let fails = |caps: Self| adapted.as_ref().is_some_and(|p| render(p, caps).is_none());
        caps.non_null_content = fails(caps)
            && !fails(Self {
                non_null_content: true,
                ..caps
            });
        caps
    }

    /// The messages of `prompt` adapted to these caps (see the module docs).
    ///
    /// # Errors
    /// [`TemplateError`] when tools or tool-call arguments that a polyfill
    /// prints are not valid JSON.
    pub fn adapt(&self, prompt: &ChatPrompt) -> Result<Vec<ChatMessage>, TemplateError> {
        let mut messages = prompt.messages.clone();
        if !self.developer_role {
            for m in messages.iter_mut().filter(|m| m.role == "developer") {
                m.role = "system".into();
            }
        }
        if let (false, Some(tools)) = (self.tools, &prompt.tools_json) {
            let text = format!(
                "You can call any of the following tools to satisfy the user's requests: {}",
                dumps(&parse_json("tools", tools)?, &Style::indented())?
            );
            add_system(&mut messages, &text);
        }
        for m in &mut messages {
            if !self.tool_calls && !m.tool_calls.is_empty() {
                m.content = Some(tool_calls_text(m)?);
                m.tool_calls.clear();
            }
            if !self.tool_responses && m.role == "tool" {
                m.role = "user".into();
                m.content = Some(tool_response_text(m)?);
                m.name = None;
                m.tool_call_id = None;
            }
        }
        if !self.system_role {
            fold_system_message(&mut messages);
        }
        Ok(messages)
    }
}

/// Appends `text` to the leading system message, or starts the chat with one.
fn add_system(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            let content = first.content.get_or_insert_with(String::new);
            content.push_str("\n\n");
            content.push_str(text);
        }
        _ => messages.insert(0, ChatMessage::text("system", text)),
    }
}

fn tool_calls_text(m: &ChatMessage) -> Result<String, TemplateError> {
    let calls = m
        .tool_calls
        .iter()
        .map(|c| {
            let mut fields = vec![
                ("name", Value::from(c.name.as_str())),
                (
                    "arguments",
                    parse_json("tool call arguments", &c.arguments)?,
                ),
            ];
            if !c.id.is_empty() {
                fields.push(("id", Value::from(c.id.as_str())));
            }
            Ok(Value::from_iter(fields))
        })
        .collect::<Result<Vec<_>, TemplateError>>()?;
    let mut obj = vec![("tool_calls", Value::from(calls))];
    if let Some(content) = m.content.as_deref().filter(|c| !c.is_empty()) {
        obj.push(("content", Value::from(content)));
    }
    Ok(dumps(&Value::from_iter(obj), &Style::indented())?)
}

fn tool_response_text(m: &ChatMessage) -> Result<String, TemplateError> {
    let mut fields = vec![];
    if let Some(name) = &m.name {
        fields.push(("tool", Value::from(name.as_str())));
    }
    fields.push(("content", Value::from(m.content.clone())));
    if let Some(id) = &m.tool_call_id {
        fields.push(("tool_call_id", Value::from(id.as_str())));
    }
    let obj = Value::from_iter([("tool_response", Value::from_iter(fields))]);
    Ok(dumps(&obj, &Style::indented())?)
}

/// Merges a leading system message into the message after it (system text,
/// `"\n"`, then its content), or drops it when it is alone: llama-server's
/// polyfill for templates without a system role.
fn fold_system_message(messages: &mut Vec<ChatMessage>) {
    if messages.first().is_none_or(|m| m.role != "system") {
        return;
    }
    let system = messages.remove(0);
    if let Some(next) = messages.first_mut() {
        let sys = system.content.unwrap_or_default();
        let content = next.content.take().unwrap_or_default();
        next.content = Some(format!("{sys}\n{content}"));
    }
}
