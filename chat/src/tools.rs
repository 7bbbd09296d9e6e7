//! JSON schemas that constrain tool calls, and where a family's tool call
//! starts for a lazy grammar.
//!
//! Forced calls (`tool_choice` required or named) are generated as plain JSON
//! whatever the model's own syntax, and parsed as such
//! ([`crate::parse::Forced`]): the grammar guarantees the shape on every model.

use serde_json::{json, Value};

use crate::format::{ChatFormat, ToolSyntax};

/// The schema of one call, `{"name": <one of the functions>, "arguments": {..}}`,
/// each name tied to its own parameters.
pub fn one_call_schema(functions: &[Value]) -> Value {
    let variants: Vec<Value> = functions
        .iter()
        .map(|f| {
            let parameters = match &f["parameters"] {
                Value::Null => json!({"type": "object", "properties": {}}),
                p => p.clone(),
            };
            json!({
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    match <[Value; 1]>::try_from(variants) {
        Ok([one]) => one,
        Err(variants) => json!({"anyOf": variants}),
    }
}

/// The schema of `tool_choice: "required"`: an array of 1 to `most` calls.
pub fn required_calls_schema(functions: &[Value], most: usize) -> Value {
    json!({"type": "array", "items": one_call_schema(functions), "minItems": 1, "maxItems": most})
}

/// For families whose tool call is `TRIGGER {"name": .., "arguments": ..} SUFFIX`,
/// the trigger and suffix, so `tool_choice: "auto"` can use a lazy grammar
/// that lets the model write freely until it opens a call.
pub fn lazy_trigger(format: ChatFormat) -> Option<(&'static str, &'static str)> {
    match format.tools {
        ToolSyntax::Hermes => Some(("<tool_call>", "</tool_call>")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_tied_to_its_own_parameters() {
        let fs = [
            json!({"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}),
            json!({"name": "b"}),
        ];
        let s = required_calls_schema(&fs, 4);
        assert_eq!(
            (s["minItems"].as_u64(), s["maxItems"].as_u64()),
            (Some(1), Some(4))
        );
        let variants = s["items"]["anyOf"].as_array().unwrap();
        assert_eq!(variants[0]["properties"]["name"]["const"], "a");
        assert_eq!(
            variants[0]["properties"]["arguments"]["properties"]["x"]["type"],
            "integer"
        );
        assert_eq!(variants[1]["properties"]["arguments"]["type"], "object");
        let one = one_call_schema(&fs[..1]);
        assert_eq!(
            one["properties"]["name"]["const"], "a",
            "one function: no anyOf"
        );
    }

    #[test]
    fn only_json_bodied_families_get_a_lazy_trigger() {
        let hermes = ChatFormat {
            tools: ToolSyntax::Hermes,
            ..ChatFormat::GENERIC
        };
        assert_eq!(lazy_trigger(hermes), Some(("<tool_call>", "</tool_call>")));
        assert_eq!(lazy_trigger(ChatFormat::GENERIC), None);
    }
}
