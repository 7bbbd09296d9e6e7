//! The `input` of an embeddings request in every form OpenAI accepts: a
//! string, an array of strings, an array of token ids (one input), or an
//! array of arrays of token ids. Token ids go to the worker unchanged (no
//! BOS/EOS added), which checks them against the model's vocabulary; here
//! only their shape is checked. Pure.

use serde_json::Value;

use super::error::ApiError;
use crate::worker::EmbedInput;

const SHAPES: &str =
    "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids";

/// The inputs `value` holds.
///
/// # Errors
/// A 400 (`param: "input"`) for another shape, an empty array (outer or
/// inner), or a token id that is not an integer from 0 to 2³¹−1.
pub fn inputs(value: &Value) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = |message: String| ApiError::invalid("input", message);
    let items = match value {
        Value::String(s) => return Ok(vec![EmbedInput::Text(s.clone())]),
        Value::Array(items) => items,
        _ => return Err(bad(SHAPES.into())),
    };
    if items.is_empty() {
        return Err(bad("input must not be empty".into()));
    }
    if items.iter().all(Value::is_number) {
        return Ok(vec![EmbedInput::Tokens(token_ids(items, "input")?)]);
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(EmbedInput::Text(s.clone())),
            Value::Array(ids) if ids.is_empty() => Err(bad(format!("input[{i}] is empty"))),
            Value::Array(ids) => token_ids(ids, &format!("input[{i}]")).map(EmbedInput::Tokens),
            _ => Err(bad(SHAPES.into())),
        })
        .collect()
}

/// Token ids: integers that fit an `i32` and are not negative.
fn token_ids(items: &[Value], at: &str) -> Result<Vec<i32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, v)| {
            v.as_u64()
                .and_then(|t| i32::try_from(t).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "input",
                        format!("{at}[{j}] must be a token id (an integer from 0), got {v}"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> EmbedInput {
        EmbedInput::Text(s.into())
    }

    #[test]
    fn every_openai_input_form_is_read() {
        let cases = [
            (json!("hi"), vec![text("hi")]),
            (json!(["a", "b"]), vec![text("a"), text("b")]),
            (json!([1, 2, 3]), vec![EmbedInput::Tokens(vec![1, 2, 3])]),
            (
                json!([[1, 2], [3]]),
                vec![EmbedInput::Tokens(vec![1, 2]), EmbedInput::Tokens(vec![3])],
            ),
            (
                json!(["a", [7]]),
                vec![text("a"), EmbedInput::Tokens(vec![7])],
            ),
            (json!([""]), vec![text("")]),
        ];
        for (value, want) in cases {
            assert_eq!(inputs(&value).unwrap(), want, "{value}");
        }
    }

    #[test]
    fn bad_shapes_and_ids_are_400s_naming_input() {
        let cases = [
            (json!([]), "must not be empty"),
            (json!([[]]), "input[0] is empty"),
            (json!([[1], []]), "input[1] is empty"),
            (json!(3), "must be a string"),
            (json!(null), "must be a string"),
            (json!([{"a": 1}]), "must be a string"),
            (json!([1, -2]), "input[1] must be a token id"),
            (json!([1.5]), "input[0] must be a token id"),
            (
                json!([[1, 4294967296u64]]),
                "input[0][1] must be a token id",
            ),
            (json!([[true]]), "input[0][0] must be a token id"),
        ];
        for (value, want) in cases {
            let e = inputs(&value).unwrap_err();
            let text = format!("{e:?}");
            assert!(
                text.contains(want) && text.contains("input"),
                "{value}: {text}"
            );
        }
    }
}
