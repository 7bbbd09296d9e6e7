//! The bodies of tool-call blocks: complete text in, calls out.
//!
//! Each function takes the text between a block's opening and closing
//! markers (the closer may be missing when the output ended at an
//! end-of-generation token) and returns the calls it holds, plus any text
//! after them that is content, or `None` when the body is not a well-formed
//! call (the caller then keeps the whole block as content).
//!
//! Arguments are always a JSON object's text. JSON syntaxes keep the model's
//! own text of the object; XML syntaxes build it, typing each value by the
//! tool's parameter schema when it is known and as a string otherwise.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::format::ToolSyntax;

/// One parsed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub name: String,
    pub arguments: String,
}

/// Calls and the content that followed them in the block.
pub(crate) type Parsed = (Vec<Call>, String);

/// Tool parameter schemas by function name.
pub(crate) type Schemas = BTreeMap<String, Value>;

/// Parses the body of a block opened by `trigger` of `syntax`.
pub(crate) fn parse_block(
    syntax: ToolSyntax,
    trigger: &str,
    body: &str,
    schemas: &Schemas,
) -> Option<Parsed> {
    use ToolSyntax as T;
    match (syntax, trigger) {
        (T::Hermes, _) => hermes(body).map(none_after),
        (T::Qwen3Coder, "<function=") => xml_functions(&format!("<function={body}"), schemas),
        (T::Qwen3Coder | T::SeedOss, _) => xml_functions(body, schemas),
        (T::Llama3, "{") => json_objects(&format!("{{{body}")),
        (T::Llama3 | T::FunctionaryV31, "<|python_tag|>") | (T::Llama3, _) => {
            python_tag(body).map(none_after)
        }
        (T::FunctionaryV31, _) => functionary_function(body).map(none_after),
        (T::MistralJson, _) => json_array_then_content(body),
        (T::MistralArgs, _) => mistral_args(body),
        (T::DeepSeekR1 | T::DeepSeekV31, _) => deepseek(body).map(none_after),
        (T::Granite | T::CommandR7b, _) => json_array_then_content(body),
        (T::CommandRPlus, _) => command_r_plus(body),
        (T::FireFunctionV2, _) => json_array_then_content(&format!("[{body}")),
        (T::KimiK2, _) => kimi(body).map(none_after),
        (T::Glm45, _) => glm(body, schemas).map(|c| none_after(vec![c])),
        (T::MiniMaxM2, _) => minimax(body, schemas).map(none_after),
        (T::Apriel, _) => apriel(body).map(none_after),
        (T::None | T::Harmony | T::FunctionaryV32, _) => None,
    }
}

fn none_after(calls: Vec<Call>) -> Parsed {
    (calls, String::new())
}

/// A JSON object text, or `None`.
pub(crate) fn object_text(text: &str) -> Option<String> {
    let text = text.trim();
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(_)) => Some(text.to_owned()),
        _ => None,
    }
}

/// Arguments from their raw JSON value: an object as written, or a string
/// holding an object's text; missing or null means no arguments.
fn arguments_text(raw: Option<&RawValue>) -> Option<String> {
    let Some(raw) = raw else {
        return Some("{}".to_owned());
    };
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::Object(_) => Some(raw.get().trim().to_owned()),
        Value::Null => Some("{}".to_owned()),
        Value::String(s) => object_text(&s),
        _ => None,
    }
}

/// A call from a JSON object with a name (`name`, `tool_name`, or an OpenAI
/// `function` object) and arguments (`arguments` or `parameters`).
fn json_call(raw: &RawValue) -> Option<Call> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
    if let Some(f) = map.get("function") {
        if let Ok(inner) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(f.get()) {
            if inner.contains_key("name") {
                return json_call(f);
            }
        }
    }
    let name = map.get("name").or_else(|| map.get("tool_name"))?;
    let name: String = serde_json::from_str(name.get()).ok()?;
    if name.is_empty() {
        return None;
    }
    let args = map.get("arguments").or_else(|| map.get("parameters"));
    Some(Call {
        name,
        arguments: arguments_text(args.map(|b| &**b))?,
    })
}

/// The JSON value at the start of `text` (after whitespace) and the rest.
fn leading_value(text: &str) -> Option<(Box<RawValue>, &str)> {
    let trimmed = text.trim_start();
    let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Box<RawValue>>();
    let value = stream.next()?.ok()?;
    let end = stream.byte_offset();
    Some((value, &trimmed[end..]))
}

/// Calls from a JSON array (or one object) of call objects.
fn json_list(raw: &RawValue) -> Option<Vec<Call>> {
    let text = raw.get().trim_start();
    if text.starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
        if items.is_empty() {
            return None;
        }
        items.iter().map(|i| json_call(i)).collect()
    } else {
        json_call(raw).map(|c| vec![c])
    }
}

/// A JSON array (or object) of calls; what follows it is content.
fn json_array_then_content(body: &str) -> Option<Parsed> {
    let (value, rest) = leading_value(body)?;
    Some((json_list(&value)?, rest.trim().to_owned()))
}

/// The arguments of a forced call list (`tool_choice: required`).
pub(crate) fn forced_calls(text: &str) -> Option<Vec<Call>> {
    match leading_value(text) {
        Some((value, rest)) if rest.trim().is_empty() => json_list(&value),
        // Cut short (max_tokens) inside the array: the complete calls stand.
        _ => complete_prefix_calls(text),
    }
}

/// The complete call objects at the start of an array that was cut off
/// (`[{..}, {..}, {"na`); `None` when not even one is complete.
fn complete_prefix_calls(text: &str) -> Option<Vec<Call>> {
    let mut rest = text.trim_start().strip_prefix('[')?;
    let mut calls = Vec::new();
    while let Some((value, after)) = leading_value(rest) {
        calls.push(json_call(&value)?);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => break,
        }
    }
    (!calls.is_empty()).then_some(calls)
}

/// Hermes: one JSON object (some models write XML functions instead).
fn hermes(body: &str) -> Option<Vec<Call>> {
    let body = body.trim();
    if body.starts_with("<function=") {
        return xml_functions(body, &Schemas::new()).map(|(c, _)| c);
    }
    let (value, rest) = leading_value(body)?;
    if !rest.trim().is_empty() {
        return None;
    }
    json_list(&value)
}

/// Llama 3: objects separated by `;` or whitespace, nothing else.
fn json_objects(text: &str) -> Option<Parsed> {
    let mut calls = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if rest.is_empty() {
            break;
        }
        let (value, after) = leading_value(rest)?;
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(value.get()).ok()?;
        // A bare object is a call only with Llama 3's `parameters` key
        // (or `arguments`): `{"name": "Ann"}` as an answer stays content.
        if !map.contains_key("parameters") && !map.contains_key("arguments") {
            return None;
        }
        calls.push(json_call(&value)?);
        rest = after;
    }
    (!calls.is_empty()).then_some((calls, String::new()))
}

/// `<|python_tag|>`: a JSON call, or code for the `python` tool.
fn python_tag(body: &str) -> Option<Vec<Call>> {
    if let Some((value, rest)) = leading_value(body) {
        if rest.trim().is_empty() {
            if let Some(c) = json_call(&value) {
                return Some(vec![c]);
            }
        }
    }
    let code = body.trim();
    if code.is_empty() {
        return None;
    }
    let arguments = serde_json::json!({ "code": code }).to_string();
    Some(vec![Call {
        name: "python".to_owned(),
        arguments,
    }])
}

/// Functionary v3.1: `NAME>{args}` (after `<function=`).
fn functionary_function(body: &str) -> Option<Vec<Call>> {
    let (name, args) = body.split_once('>')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(vec![Call {
        name: name.to_owned(),
        arguments: object_text(args)?,
    }])
}

/// Mistral Small 3.2 / Devstral: `NAME[CALL_ID]id[ARGS]{..}`, repeated with
/// `[TOOL_CALLS]` between calls (the first one was the trigger).
fn mistral_args(body: &str) -> Option<Parsed> {
    let mut calls = Vec::new();
    let mut content = String::new();
    for part in body.split("[TOOL_CALLS]") {
        if part.trim_start().starts_with('[') {
            let (mut more, after) = json_array_then_content(part)?;
            calls.append(&mut more);
            content.push_str(&after);
            continue;
        }
        let (head, args) = part.split_once("[ARGS]")?;
        let name = head.split("[CALL_ID]").next()?.trim();
        if name.is_empty() {
            return None;
        }
        let (value, after) = leading_value(args)?;
        calls.push(Call {
            name: name.to_owned(),
            arguments: object_text(value.get())?,
        });
        content.push_str(after.trim());
    }
    Some((calls, content))
}

/// DeepSeek: `<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>` items, each
/// `function<｜tool▁sep｜>NAME\n```json\n{..}\n```` (R1) or
/// `NAME<｜tool▁sep｜>{..}` (V3.1).
fn deepseek(body: &str) -> Option<Vec<Call>> {
    const BEGIN: &str = "<｜tool▁call▁begin｜>";
    const END: &str = "<｜tool▁call▁end｜>";
    const SEP: &str = "<｜tool▁sep｜>";
    let mut calls = Vec::new();
    let mut rest = body.trim_start();
    while let Some(after) = rest.strip_prefix(BEGIN) {
        let (item, next) = after.split_once(END).unwrap_or((after, ""));
        let (left, right) = item.split_once(SEP)?;
        let call = if left.trim() == "function" && right.contains('\n') {
            let (name, args) = right.split_once('\n')?;
            Call {
                name: name.trim().to_owned(),
                arguments: object_text(strip_fence(args))?,
            }
        } else {
            Call {
                name: left.trim().to_owned(),
                arguments: object_text(strip_fence(right))?,
            }
        };
        if call.name.is_empty() {
            return None;
        }
        calls.push(call);
        rest = next.trim_start();
    }
    (rest.is_empty() && !calls.is_empty()).then_some(calls)
}

/// Removes a Markdown code fence (```` ```json ````) around `text`.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let inner = inner.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// Command R+: `\n```json\n[..]\n```` after `Action:`.
fn command_r_plus(body: &str) -> Option<Parsed> {
    let t = body.trim_start();
    let inner = t.strip_prefix("```")?;
    let inner = inner.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    let (json, after) = inner.split_once("```").unwrap_or((inner, ""));
    let (value, rest) = leading_value(json)?;
    if !rest.trim().is_empty() {
        return None;
    }
    Some((json_list(&value)?, after.trim().to_owned()))
}

/// Kimi K2: `<|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{..}<|tool_call_end|>` items.
fn kimi(body: &str) -> Option<Vec<Call>> {
    const BEGIN: &str = "<|tool_call_begin|>";
    const ARGS: &str = "<|tool_call_argument_begin|>";
    const END: &str = "<|tool_call_end|>";
    let mut calls = Vec::new();
    let mut rest = body.trim_start();
    while let Some(after) = rest.strip_prefix(BEGIN) {
        let (item, next) = after.split_once(END).unwrap_or((after, ""));
        let (id, args) = item.split_once(ARGS)?;
        let id = id.trim();
        let id = id.strip_prefix("functions.").unwrap_or(id);
        let name = id.rsplit_once(':').map_or(id, |(n, _)| n);
        if name.is_empty() {
            return None;
        }
        calls.push(Call {
            name: name.to_owned(),
            arguments: object_text(args)?,
        });
        rest = next.trim_start();
    }
    (rest.is_empty() && !calls.is_empty()).then_some(calls)
}

/// Apriel / MiniMax M1: a JSON array of calls, or one call object a line.
fn apriel(body: &str) -> Option<Vec<Call>> {
    let mut calls = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        let (value, after) = leading_value(rest)?;
        calls.append(&mut json_list(&value)?);
        rest = after;
    }
    (!calls.is_empty()).then_some(calls)
}

// ----- XML syntaxes -----

/// The text between `open` (just consumed) and `close`; a missing closer
/// takes the rest.
fn until<'a>(text: &'a str, close: &str) -> (&'a str, &'a str) {
    text.split_once(close).unwrap_or((text, ""))
}

/// One XML parameter value, without the single newline the templates put
/// on each side of it.
fn xml_value(v: &str) -> &str {
    let v = v.strip_prefix('\n').unwrap_or(v);
    v.strip_suffix('\n').unwrap_or(v)
}

/// The JSON text of one parameter value, typed by the schema of `function`.
fn typed(schemas: &Schemas, function: &str, key: &str, value: &str) -> String {
    let ty = schemas
        .get(function)
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.get(key))
        .and_then(|p| p.get("type"));
    let is_string = match ty {
        None => true,
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().all(|t| t == "string"),
        Some(_) => false,
    };
    if !is_string {
        if let Ok(v) = serde_json::from_str::<Value>(value.trim()) {
            return v.to_string();
        }
    }
    Value::String(value.to_owned()).to_string()
}

/// Builds `{"k":v,..}` in the model's order.
fn object_of(schemas: &Schemas, function: &str, pairs: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&typed(schemas, function, k, v));
    }
    out.push('}');
    out
}

/// Qwen3-Coder: `<function=NAME>` + `<parameter=K>\nV\n</parameter>`… + `</function>`, repeated.
fn xml_functions(body: &str, schemas: &Schemas) -> Option<Parsed> {
    let mut calls = Vec::new();
    let mut rest = body.trim_start();
    while let Some(after) = rest.strip_prefix("<function=") {
        let (name, after) = after.split_once('>')?;
        let name = name.trim();
        if name.is_empty() || name.contains('<') {
            return None;
        }
        let (inner, next) = until(after, "</function>");
        let mut pairs = Vec::new();
        let mut p = inner.trim_start();
        while let Some(a) = p.strip_prefix("<parameter=") {
            let (key, a) = a.split_once('>')?;
            let (value, n) = until(a, "</parameter>");
            pairs.push((key.trim().to_owned(), xml_value(value).to_owned()));
            p = n.trim_start();
        }
        if !p.is_empty() {
            return None;
        }
        calls.push(Call {
            name: name.to_owned(),
            arguments: object_of(schemas, name, &pairs),
        });
        rest = next.trim_start();
    }
    (rest.is_empty() && !calls.is_empty()).then_some((calls, String::new()))
}

/// GLM 4.5+: `NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>`….
fn glm(body: &str, schemas: &Schemas) -> Option<Call> {
    let (name, mut p) = match body.find("<arg_key>") {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    let name = name.trim();
    if name.is_empty() || name.contains('<') || name.contains('\n') {
        return None;
    }
    let mut pairs = Vec::new();
    while let Some(a) = p.trim_start().strip_prefix("<arg_key>") {
        let (key, a) = a.split_once("</arg_key>")?;
        let a = a.trim_start().strip_prefix("<arg_value>")?;
        let (value, n) = until(a, "</arg_value>");
        pairs.push((key.trim().to_owned(), value.to_owned()));
        p = n;
    }
    if !p.trim().is_empty() {
        return None;
    }
    Some(Call {
        name: name.to_owned(),
        arguments: object_of(schemas, name, &pairs),
    })
}

/// The value of `name="…"` at the start of `text`, and the rest after `>`.
fn name_attr(text: &str) -> Option<(&str, &str)> {
    let t = text.trim_start().strip_prefix("name=")?;
    let quote = t.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let t = &t[1..];
    let (value, t) = t.split_once(quote)?;
    let t = t.trim_start().strip_prefix('>')?;
    Some((value, t))
}

/// MiniMax M2: `<invoke name="NAME"><parameter name="K">V</parameter>…</invoke>`, repeated.
fn minimax(body: &str, schemas: &Schemas) -> Option<Vec<Call>> {
    let mut calls = Vec::new();
    let mut rest = body.trim_start();
    while let Some(after) = rest.strip_prefix("<invoke") {
        let (name, after) = name_attr(after)?;
        let (inner, next) = until(after, "</invoke>");
        let mut pairs = Vec::new();
        let mut p = inner.trim_start();
        while let Some(a) = p.strip_prefix("<parameter") {
            let (key, a) = name_attr(a)?;
            let (value, n) = until(a, "</parameter>");
            pairs.push((key.to_owned(), xml_value(value).to_owned()));
            p = n.trim_start();
        }
        if !p.is_empty() || name.is_empty() {
            return None;
        }
        calls.push(Call {
            name: name.to_owned(),
            arguments: object_of(schemas, name, &pairs),
        });
        rest = next.trim_start();
    }
    (rest.is_empty() && !calls.is_empty()).then_some(calls)
}
