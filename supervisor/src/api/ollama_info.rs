//! What Ollama's model routes say about a model, from its GGUF header and its
//! store entry: `details`, `model_info`, `capabilities`, `parameters` (text),
//! the parameter size and times, as `/api/show`, `/api/tags` and `/api/ps` send
//! them. Pure functions over plain data; the handlers read the files.

use serde_json::{json, Map, Value};

use crate::store::gguf::{self, Header};

/// Keys left out of `model_info`: the template has its own field.
const OMITTED: &[&str] = &["tokenizer.chat_template"];

/// `details`: `{parent_model, format, family, families, parameter_size, quantization_level}`.
/// Without a header (an unreadable file) the fields are empty, as Ollama's are
/// for a model it knows nothing about.
pub fn details(header: Option<&Header>) -> Value {
    let family = header.and_then(Header::architecture).unwrap_or("");
    let families: Value = match family {
        "" => Value::Null,
        f => json!([f]),
    };
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": families,
        "parameter_size": header.map(|h| human_number(h.parameters)).unwrap_or_default(),
        "quantization_level": header.and_then(Header::quantization).unwrap_or(""),
    })
}

/// `model_info`: every metadata key/value, arrays as `null` (Ollama sends
/// them only with `verbose`), plus `general.parameter_count`.
pub fn model_info(header: &Header) -> Value {
    let mut out = Map::new();
    for (key, value) in &header.metadata {
        if OMITTED.contains(&key.as_str()) {
            continue;
        }
        let value = match value {
            gguf::Value::Uint(v) => json!(v),
            gguf::Value::Int(v) => json!(v),
            gguf::Value::Float(v) => json!(v),
            gguf::Value::Bool(v) => json!(v),
            gguf::Value::String(s) => json!(s),
            gguf::Value::Array { .. } => Value::Null,
        };
        out.insert(key.clone(), value);
    }
    out.insert("general.parameter_count".into(), json!(header.parameters));
    Value::Object(out)
}

/// What the model can do, in Ollama's words:
/// - `embedding` for an embedding model (its header sets `<arch>.pooling_type`),
///   `completion` for every other;
/// - `tools` when its template renders tools (a tool-call syntax the `chat`
///   crate knows, or a template that mentions `tools` at all);
/// - `thinking` when its template marks reasoning;
/// - `insert` (fill-in-the-middle) when its vocabulary has FIM tokens or an
///   Ollama template uses `.Suffix`.
pub fn capabilities(header: Option<&Header>, template: &str) -> Vec<&'static str> {
    let has = |key: &str| header.is_some_and(|h| h.get(key).is_some());
    let embedding = header.is_some_and(|h| h.arch_value("pooling_type").is_some());
    let mut out = vec![if embedding { "embedding" } else { "completion" }];
    if embedding {
        return out;
    }
    let format = llm_node_chat::format::ChatFormat::detect(template);
    if format.tools != llm_node_chat::format::ToolSyntax::None || template.contains("tools") {
        out.push("tools");
    }
    if format.reasoning != llm_node_chat::format::ReasoningSyntax::None {
        out.push("thinking");
    }
    if has("tokenizer.ggml.fim_pre_token_id") || template.contains(".Suffix") {
        out.push("insert");
    }
    out
}

/// `parameters` as Ollama sends it: one `name value` line per parameter (one
/// per item of a list), the name padded to 30 columns, strings quoted.
pub fn parameters_text(params: Option<&Value>) -> String {
    let Some(Value::Object(params)) = params else {
        return String::new();
    };
    let mut lines = Vec::new();
    for (key, value) in params {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for item in items {
            lines.push(format!("{key:<30} {item}"));
        }
    }
    lines.join("\n")
}

/// A count as Ollama writes parameter sizes: `7.6B`, `8B`, `134.52M`, `33K`.
pub fn human_number(n: u64) -> String {
    const B: f64 = 1e9;
    const M: f64 = 1e6;
    let x = n as f64;
    match n {
        n if n >= 1_000_000_000 => whole_or(x / B, 1, "B"),
        n if n >= 1_000_000 => whole_or(x / M, 2, "M"),
        n if n >= 1_000 => format!("{:.0}K", x / 1e3),
        n => n.to_string(),
    }
}

fn whole_or(v: f64, decimals: usize, unit: &str) -> String {
    if v == v.floor() {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.decimals$}{unit}")
    }
}

/// Unix seconds as RFC 3339 (`2025-05-10T08:06:48Z`).
pub fn rfc3339(unix_secs: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix_secs).ok()?).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::gguf::test_writer::Writer;

    fn header(w: Writer) -> Header {
        gguf::parse(&mut w.bytes().as_slice()).unwrap()
    }

    fn llama() -> Writer {
        Writer::default()
            .string("general.architecture", "llama")
            .kv("general.file_type", 4, &3u32.to_le_bytes())
            .kv("llama.context_length", 4, &8192u32.to_le_bytes())
            .string("tokenizer.chat_template", "{{ x }}")
            .tensor("w", &[1000, 1000, 7])
    }

    #[test]
    fn details_come_from_the_header() {
        let h = header(llama());
        assert_eq!(
            details(Some(&h)),
            json!({"parent_model": "", "format": "gguf", "family": "llama",
                   "families": ["llama"], "parameter_size": "7M", "quantization_level": "Q4_1"})
        );
        assert_eq!(
            details(None),
            json!({"parent_model": "", "format": "gguf", "family": "", "families": null,
                   "parameter_size": "", "quantization_level": ""})
        );
    }

    #[test]
    fn model_info_has_scalars_arrays_as_null_and_the_parameter_count() {
        let mut tokens = 8u32.to_le_bytes().to_vec();
        tokens.extend(0u64.to_le_bytes());
        let h = header(llama().kv("tokenizer.ggml.tokens", 9, &tokens));
        assert_eq!(
            model_info(&h),
            json!({"general.architecture": "llama", "general.file_type": 3,
                   "llama.context_length": 8192, "tokenizer.ggml.tokens": null,
                   "general.parameter_count": 7_000_000})
        );
    }

    #[test]
    fn capabilities_follow_template_and_metadata() {
        let chat = header(llama());
        let embed = header(llama().kv("llama.pooling_type", 4, &1u32.to_le_bytes()));
        let fim = header(llama().kv("tokenizer.ggml.fim_pre_token_id", 4, &1u32.to_le_bytes()));
        let hermes = "{% for t in tools %}{{ t }}{% endfor %}<tool_call>{{ x }}</tool_call>";
        let qwen3 = "<tool_call>\n{{ tools }}</tool_call><think>\n</think>";
        let cases: [(Option<&Header>, &str, &[&str]); 7] = [
            (Some(&chat), "{{ messages }}", &["completion"]),
            (Some(&chat), hermes, &["completion", "tools"]),
            (Some(&chat), qwen3, &["completion", "tools", "thinking"]),
            (Some(&embed), hermes, &["embedding"]),
            (Some(&fim), "", &["completion", "insert"]),
            (
                None,
                "{{ .Prompt }}{{ .Suffix }}",
                &["completion", "insert"],
            ),
            (None, "", &["completion"]),
        ];
        for (h, template, want) in cases {
            assert_eq!(capabilities(h, template), want, "{template}");
        }
    }

    #[test]
    fn parameters_are_one_padded_line_each() {
        let params = json!({"stop": ["<|im_end|>", "<|im_start|>"], "temperature": 0.2});
        assert_eq!(
            parameters_text(Some(&params)),
            format!(
                "{:<30} \"<|im_end|>\"\n{:<30} \"<|im_start|>\"\n{:<30} 0.2",
                "stop", "stop", "temperature"
            )
        );
        assert_eq!(parameters_text(None), "");
    }

    #[test]
    fn sizes_are_written_as_ollama_writes_them() {
        let cases = [
            (7_615_616_512, "7.6B"),
            (8_000_000_000, "8B"),
            (134_515_008, "134.52M"),
            (7_000_000, "7M"),
            (33_000, "33K"),
            (999, "999"),
        ];
        for (n, text) in cases {
            assert_eq!(human_number(n), text, "{n}");
        }
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }
}
