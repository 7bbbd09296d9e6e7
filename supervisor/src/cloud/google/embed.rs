//! OpenAI `/v1/embeddings` ↔ Gemini `models/{m}:batchEmbedContents`.
//!
//! `input` (a string or a list of strings) becomes one `EmbedContentRequest`
//! per string, `dimensions` becomes `outputDimensionality`; token arrays are
//! refused (Gemini takes text). The answer's `embeddings[].values` become
//! OpenAI's `data[]`, as float lists or, with `encoding_format: "base64"` (the
//! `openai` Python SDK's default), as base64 of little-endian `f32`s. Gemini
//! reports no token counts for embeddings, so `usage` is zeros.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::cloud::translate::{bad, TranslateError, UpstreamRequest};

/// The `batchEmbedContents` call for an OpenAI embeddings body.
pub(super) fn request(openai: &Value, model: &str) -> Result<UpstreamRequest, TranslateError> {
    let texts: Vec<&str> = match &openai["input"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    bad(
                        "input",
                        "google: models embed text; `input` must be strings",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(bad(
                "input",
                "`input` must be a string or a non-empty list of strings",
            ))
        }
    };
    let dimensions = match &openai["dimensions"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .filter(|&d| d > 0)
                .ok_or_else(|| bad("dimensions", "`dimensions` must be a positive integer"))?,
        ),
    };
    match openai["encoding_format"].as_str() {
        None | Some("float") | Some("base64") => {}
        Some(other) => {
            return Err(bad(
                "encoding_format",
                format!("unknown encoding_format {other:?}"),
            ))
        }
    }
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|text| {
            let mut r = json!({
                "model": format!("models/{model}"),
                "content": {"parts": [{"text": text}]},
            });
            if let Some(d) = dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(UpstreamRequest {
        path: format!("/v1beta/models/{model}:batchEmbedContents"),
        body: json!({ "requests": requests }),
    })
}

/// OpenAI's embeddings `list` from a `batchEmbedContents` answer.
pub(super) fn response(
    upstream: &Value,
    openai: &Value,
    model: &str,
) -> Result<Value, TranslateError> {
    let base64 = openai["encoding_format"] == "base64";
    let embeddings = upstream["embeddings"].as_array().ok_or_else(|| {
        crate::cloud::translate::upstream("google: an answer without `embeddings`")
    })?;
    let data = embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let values: Vec<f32> = e["values"]
                .as_array()
                .ok_or_else(|| {
                    crate::cloud::translate::upstream("google: an embedding without `values`")
                })?
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    crate::cloud::translate::upstream("google: a value that is not a number")
                })?;
            let embedding = match base64 {
                true => {
                    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
                false => json!(values),
            };
            Ok(json!({"object": "embedding", "index": index, "embedding": embedding}))
        })
        .collect::<Result<Vec<_>, TranslateError>>()?;
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_dimensions_become_one_request_per_text() {
        let up = request(
            &json!({"input": ["a", "b"], "dimensions": 8, "encoding_format": "float"}),
            "text-embedding-004",
        )
        .unwrap();
        assert_eq!(
            up.path,
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        assert_eq!(
            up.body,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]},
                 "outputDimensionality": 8},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]},
                 "outputDimensionality": 8},
            ]})
        );
        let one = request(&json!({"input": "x"}), "m").unwrap();
        assert_eq!(one.body["requests"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn what_gemini_cannot_take_is_refused_naming_the_field() {
        for (body, param) in [
            (json!({"input": [[1, 2, 3]]}), "input"),
            (json!({"input": []}), "input"),
            (json!({}), "input"),
            (json!({"input": "x", "dimensions": 0}), "dimensions"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
        ] {
            match request(&body, "m") {
                Err(TranslateError::BadRequest { param: Some(p), .. }) => assert_eq!(p, param),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn answers_become_float_or_base64_embeddings_in_order() {
        let upstream = json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [2.0, 0.25]}]});
        let floats = response(&upstream, &json!({}), "google:m").unwrap();
        assert_eq!(floats["object"], "list");
        assert_eq!(floats["model"], "google:m");
        assert_eq!(floats["data"][1]["index"], 1);
        assert_eq!(floats["data"][1]["embedding"], json!([2.0, 0.25]));
        let b64 = response(&upstream, &json!({"encoding_format": "base64"}), "google:m").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, vec![0.5, -1.0]);
        assert!(matches!(
            response(&json!({"error": {}}), &json!({}), "m"),
            Err(TranslateError::Upstream(_))
        ));
    }
}
