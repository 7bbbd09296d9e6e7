//! Chat templates: the Jinja template stored in the GGUF (or given by the
//! config) rendered with minijinja, the way Hugging Face's tokenizer does it.
//! llama.cpp's own matcher only recognises known templates; this runs any.
//!
//! # Layout
//! - this file: [`ChatTemplate`], the context a template sees, the bounds.
//! - `env`: the minijinja environment: Jinja2 behaviour, HF's functions
//!   (`raise_exception`, `strftime_now`), Python methods, mutable namespace lists.
//! - `json`: `tojson` spelled byte for byte like Python's `json.dumps`.
//! - `caps`: what a template can take (probed once in [`ChatTemplate::new`])
//!   and the polyfills that adapt a chat to it.
//!
//! # Contract
//! [`ChatTemplate::render`] gives a template what `transformers` and
//! llama-server give it:
//! - `messages`: each with `role` and `content` (none when absent), and where
//!   present `reasoning_content` (also as `thinking`, which gpt-oss and LFM2.5
//!   read), `tool_calls` as `[{id, type: "function", function: {name,
//!   arguments}}]`, `tool_call_id` and `name`. `arguments` is an object parsed
//!   from the JSON text, unless the template only prints it as text.
//! - `tools` (the parsed OpenAI array; undefined when the request has none),
//!   `add_generation_prompt`, `bos_token`, `eos_token`, `enable_thinking`
//!   (true unless the kwargs say otherwise, as in llama-server),
//!   `reasoning_effort`, `date_string` and `datetime` (today, llama-server's
//!   spellings), `functions` for firefunction-v2 (the tools as indented JSON,
//!   as llama.cpp passes them), then every `chat_template_kwargs` entry,
//!   which overrides the rest.
//! - Before rendering, the messages go through the polyfills the probe
//!   asked for: system folding, tools described in the system message, tool
//!   calls and results as JSON text, `""` for none content (see `caps`).
//!
//! # Bounds
//! A render executes at most 50 M template instructions (minijinja fuel;
//! about a second of a release build) and writes at most [`MAX_OUTPUT`]
//! bytes; past either it fails with a [`TemplateError`].

mod caps;
mod env;
mod json;

use std::io;

use caps::Caps;
use llm_node_protocol::{ChatMessage, ChatPrompt, ToolCall};
use minijinja::{Environment, ErrorKind, Value};

/// Used when neither the GGUF nor the config has a template (llama-server does the same).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Largest prompt a render may produce.
pub const MAX_OUTPUT: usize = 16 << 20;

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    caps: Caps,
    /// firefunction-v2 reads the tools as JSON text from `functions`
    /// (llama.cpp's firefunction handler passes it so).
    functions_text: bool,
}

/// Compiling or rendering failed (a syntax error, a `raise_exception` call,
/// bad tools JSON, or a bound hit). The message says which.
#[derive(Debug, thiserror::Error)]
#[error("chat template error: {0}")]
pub struct TemplateError(String);

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let msg = match e.kind() {
            ErrorKind::OutOfFuel => format!(
                "rendering took too many steps (over {} instructions)",
                env::FUEL
            ),
            ErrorKind::WriteFailure => format!("rendered prompt is longer than {MAX_OUTPUT} bytes"),
            _ => e.to_string(),
        };
        Self(msg)
    }
}

impl ChatTemplate {
    /// Compiles `source` and probes what it can take.
    ///
    /// # Errors
    /// [`TemplateError`] when the template does not parse.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = env::environment();
        env.add_template_owned("chat", env::rewrite_generation_tags(source).into_owned())
            .map_err(|e| TemplateError(format!("template does not compile: {e}")))?;
        let mut tmpl = Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            caps: Caps::FULL,
            functions_text: source.contains("functools["),
        };
        // Probe chats are tiny: a smaller budget keeps a runaway template
        // from costing the full one for every probe.
        tmpl.env.set_fuel(Some(env::PROBE_FUEL));
        tmpl.caps = Caps::probe(source, |prompt, caps| {
            tmpl.render_messages(&prompt.messages, prompt, caps).ok()
        });
        tmpl.env.set_fuel(Some(env::FUEL));
        Ok(tmpl)
    }

    /// Renders `prompt` (messages, tools, kwargs, and the generation prompt
    /// when asked).
    ///
    /// # Errors
    /// [`TemplateError`] when the template fails for these messages (a
    /// `raise_exception`, for example on roles that do not alternate), when
    /// `tools_json`, `template_kwargs_json` or a tool call's arguments are
    /// not valid JSON, or when rendering exceeds its bounds.
    pub fn render(&self, prompt: &ChatPrompt) -> Result<String, TemplateError> {
        let messages = self.caps.adapt(prompt)?;
        self.render_messages(&messages, prompt, self.caps)
    }

    /// Renders `messages` as they are (no polyfill) with the rest of `prompt`.
    fn render_messages(
        &self,
        messages: &[ChatMessage],
        prompt: &ChatPrompt,
        caps: Caps,
    ) -> Result<String, TemplateError> {
        let ctx = self.context(messages, prompt, caps)?;
        let tmpl = self.env.get_template("chat")?;
        let mut out = CappedWriter(Vec::new());
        tmpl.render_captured_to(ctx, &mut out)?;
        String::from_utf8(out.0).map_err(|_| TemplateError("rendered prompt is not UTF-8".into()))
    }

    /// The template's globals (see the module docs), kwargs last so they win.
    fn context(
        &self,
        messages: &[ChatMessage],
        prompt: &ChatPrompt,
        caps: Caps,
    ) -> Result<Value, TemplateError> {
        let messages = messages
            .iter()
            .map(|m| message_value(m, caps))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from(messages)),
            (
                "add_generation_prompt".into(),
                Value::from(prompt.add_generation_prompt),
            ),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
            ("enable_thinking".into(), Value::from(true)),
        ];
        // llama-server's extra context: the day the prompt is rendered.
        let now = chrono::Local::now();
        ctx.push((
            "date_string".into(),
            Value::from(now.format("%d %b %Y").to_string()),
        ));
        ctx.push((
            "datetime".into(),
            Value::from(now.format("%b %d %Y").to_string()),
        ));
        if let Some(tools) = &prompt.tools_json {
            ctx.push(("tools".into(), parse_json("tools", tools)?));
        }
        if self.functions_text {
            let functions = match &prompt.tools_json {
                Some(tools) => json::dumps(&parse_json("tools", tools)?, &json::Style::indented())?,
                None => String::new(),
            };
            ctx.push(("functions".into(), Value::from(functions)));
        }
        if let Some(effort) = &prompt.reasoning_effort {
            ctx.push(("reasoning_effort".into(), Value::from(effort.as_str())));
        }
        if let Some(kwargs) = &prompt.template_kwargs_json {
            let kwargs = parse_json("chat_template_kwargs", kwargs)?;
            if kwargs.kind() != minijinja::value::ValueKind::Map {
                return Err(TemplateError(
                    "chat_template_kwargs must be a JSON object".into(),
                ));
            }
            for key in kwargs.try_iter()? {
                let value = kwargs.get_item(&key)?;
                ctx.push((key.to_string(), value));
            }
        }
        Ok(Value::from_iter(ctx))
    }
}

/// One message in the shape templates index into.
fn message_value(m: &ChatMessage, caps: Caps) -> Result<Value, TemplateError> {
    let mut fields: Vec<(&str, Value)> = vec![("role", Value::from(m.role.as_str()))];
    let content = match (&m.content, caps.non_null_content) {
        (Some(c), _) => Value::from(c.as_str()),
        (None, true) => Value::from(""),
        (None, false) => Value::from(()),
    };
    fields.push(("content", content));
    if let Some(reasoning) = &m.reasoning_content {
        fields.push(("reasoning_content", Value::from(reasoning.as_str())));
        // gpt-oss and LFM2.5 read the same text as `thinking`.
        fields.push(("thinking", Value::from(reasoning.as_str())));
    }
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .map(|c| tool_call_value(c, caps))
            .collect::<Result<Vec<_>, _>>()?;
        fields.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        fields.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        fields.push(("name", Value::from(name.as_str())));
    }
    Ok(Value::from_iter(fields))
}

/// `{id, type: "function", function: {name, arguments}}`; no `id` when empty (as llama-server).
fn tool_call_value(c: &ToolCall, caps: Caps) -> Result<Value, TemplateError> {
    let arguments = if caps.object_arguments {
        parse_json(
            &format!("arguments of tool call {:?}", c.name),
            &c.arguments,
        )?
    } else {
        Value::from(c.arguments.as_str())
    };
    let function = Value::from_iter([
        ("name", Value::from(c.name.as_str())),
        ("arguments", arguments),
    ]);
    let mut fields = vec![];
    if !c.id.is_empty() {
        fields.push(("id", Value::from(c.id.as_str())));
    }
    fields.push(("type", Value::from("function")));
    fields.push(("function", function));
    Ok(Value::from_iter(fields))
}

/// Parses JSON text into a template value, keeping object key order.
fn parse_json(what: &str, text: &str) -> Result<Value, TemplateError> {
    serde_json::from_str(text).map_err(|e| TemplateError(format!("{what} is not valid JSON: {e}")))
}

/// Collects the rendered prompt and fails the render past [`MAX_OUTPUT`].
struct CappedWriter(Vec<u8>);

impl io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(io::Error::other("rendered prompt too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
