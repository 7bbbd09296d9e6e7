//! An Ollama manifest's `params` layer (`application/vnd.ollama.image.params`,
//! the `PARAMETER` lines of a Modelfile as JSON) as a [`ModelProfile`]: the
//! lowest source of a stored model's defaults.
//!
//! Precedence, highest first: the request, the models configuration file
//! (its `[defaults]` included), these manifest params, the node's flags and
//! built-in values ([`ModelProfile::merge`] puts the file above this profile).
//!
//! What is read, with Ollama's names:
//! - sampling: `temperature`, `top_p`, `top_k`, `min_p`, `repeat_penalty`,
//!   `repeat_last_n`, `presence_penalty`, `frequency_penalty`, `seed`, `stop`
//!   (a string or a list) → [`SamplingDefaults`];
//! - `num_predict` → the `max_tokens` default ([`MaxTokens::default`]; a
//!   request's own `max_tokens`/`num_predict` still wins; `-1` and `-2`,
//!   Ollama's "no limit", leave the node's default);
//! - `num_ctx` → the context per slot, as Ollama lets a Modelfile's `num_ctx`
//!   override the server-wide `OLLAMA_CONTEXT_LENGTH`: it wins over
//!   `--ctx-size` and loses to the file's `ctx_size`. Values outside
//!   64..=2²¹ (the flag's own bounds) are ignored.
//!
//! Anything else (`num_gpu`, `num_thread`, `mirostat`, `num_keep`, …) is
//! returned as ignored: GPU and thread settings are the operator's, and the
//! rest has no counterpart in the worker. A value of the wrong type is
//! ignored too (a manifest never makes a model unservable). Pure; no I/O, no
//! logging (the caller logs what was ignored).

use serde_json::{Map, Value};

use super::profile::{MaxTokens, ModelProfile, SamplingDefaults};

/// Context sizes a manifest may set (the bounds of `--ctx-size`).
const CTX_RANGE: std::ops::RangeInclusive<u64> = 64..=(1 << 21);

/// The profile `params` describes, and the keys it ignored (sorted).
pub fn profile_of(params: Option<&Value>) -> (ModelProfile, Vec<String>) {
    let Some(Value::Object(map)) = params else {
        return (ModelProfile::default(), Vec::new());
    };
    let f = |key: &str| number(map, key).map(|v| v as f32);
    let int = |key: &str| number(map, key).filter(|v| v.fract() == 0.0);
    let sampling = SamplingDefaults {
        temperature: f("temperature"),
        top_p: f("top_p"),
        top_k: int("top_k").and_then(|v| u32::try_from(v as i64).ok()),
        min_p: f("min_p"),
        repeat_penalty: f("repeat_penalty"),
        repeat_last_n: int("repeat_last_n").and_then(|v| i32::try_from(v as i64).ok()),
        presence_penalty: f("presence_penalty"),
        frequency_penalty: f("frequency_penalty"),
        seed: int("seed").and_then(|v| u32::try_from(v as i64).ok()),
        stop: stop(map.get("stop")),
    };
    let max_tokens = MaxTokens {
        default: int("num_predict").and_then(|v| u32::try_from(v as i64).ok()),
        max: None,
    };
    let ctx_size = int("num_ctx")
        .map(|v| v as u64)
        .filter(|v| CTX_RANGE.contains(v))
        .map(|v| v as u32);
    let mut ignored: Vec<String> = map
        .keys()
        .filter(|k| !READ.contains(&k.as_str()))
        .cloned()
        .collect();
    ignored.sort();
    let profile = ModelProfile {
        ctx_size,
        max_tokens,
        sampling,
        ..ModelProfile::default()
    };
    (profile, ignored)
}

/// The keys [`profile_of`] reads.
const READ: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "num_predict",
    "num_ctx",
];

/// A number, or a string holding one (older Modelfile tools wrote strings).
fn number(map: &Map<String, Value>, key: &str) -> Option<f64> {
    match map.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

/// `stop` as a list of non-empty strings; one string is a list of one.
fn stop(value: Option<&Value>) -> Option<Vec<String>> {
    let items: Vec<String> = match value? {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return None,
    };
    let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ollama_params_become_sampling_max_tokens_and_context() {
        let params = json!({
            "stop": ["<|im_start|>", "<|im_end|>"],
            "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.05,
            "repeat_penalty": 1.05, "repeat_last_n": 64, "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "seed": 42, "num_predict": 3, "num_ctx": 4096,
        });
        let (p, ignored) = profile_of(Some(&params));
        let s = &p.sampling;
        assert_eq!(
            s.stop.as_deref(),
            Some(&["<|im_start|>".to_string(), "<|im_end|>".to_string()][..])
        );
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p),
            (Some(0.7), Some(0.8), Some(20), Some(0.05))
        );
        assert_eq!(
            (s.repeat_penalty, s.repeat_last_n, s.presence_penalty),
            (Some(1.05), Some(64), Some(0.5))
        );
        assert_eq!((s.frequency_penalty, s.seed), (Some(0.25), Some(42)));
        assert_eq!(p.max_tokens.default, Some(3));
        assert_eq!(p.max_tokens.max, None, "a default, never a cap");
        assert_eq!(p.ctx_size, Some(4096));
        assert!(ignored.is_empty(), "{ignored:?}");
    }

    #[test]
    fn odd_values_are_ignored_never_fatal() {
        let cases = [
            (
                json!({"num_predict": -1}),
                "num_predict -1 is Ollama's no limit",
            ),
            (json!({"num_predict": -2}), "fill the context"),
            (json!({"num_ctx": 8}), "below --ctx-size's minimum"),
            (json!({"num_ctx": 1u64 << 40}), "above its maximum"),
            (json!({"top_k": 2.5}), "not an integer"),
            (json!({"temperature": "hot"}), "not a number"),
            (json!({"stop": 3}), "not a string"),
            (json!({"stop": [""]}), "only empty strings"),
            (json!({"seed": -1}), "Ollama's random seed"),
            (json!([1, 2]), "not an object"),
        ];
        for (params, why) in cases {
            let (p, _) = profile_of(Some(&params));
            assert_eq!(p, ModelProfile::default(), "{why}: {params}");
        }
        assert_eq!(profile_of(None).0, ModelProfile::default());
    }

    #[test]
    fn numeric_strings_and_a_single_stop_string_are_read() {
        let (p, _) = profile_of(Some(&json!({"temperature": "0.2", "stop": "END"})));
        assert_eq!(p.sampling.temperature, Some(0.2));
        assert_eq!(p.sampling.stop, Some(vec!["END".to_string()]));
    }

    #[test]
    fn settings_without_a_counterpart_are_listed_as_ignored() {
        let params = json!({"num_gpu": 99, "mirostat": 2, "num_thread": 4, "temperature": 0});
        let (p, ignored) = profile_of(Some(&params));
        assert_eq!(ignored, ["mirostat", "num_gpu", "num_thread"]);
        assert_eq!(p.sampling.temperature, Some(0.0));
        assert_eq!(p.n_gpu_layers, None, "GPU settings are the operator's");
    }

    #[test]
    fn the_models_file_wins_over_the_manifest() {
        let (manifest, _) = profile_of(Some(
            &json!({"temperature": 0.9, "num_ctx": 8192, "num_predict": 7, "top_k": 5}),
        ));
        let file = ModelProfile {
            ctx_size: Some(1024),
            sampling: SamplingDefaults {
                temperature: Some(0.1),
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = file.merge(&manifest);
        assert_eq!(merged.ctx_size, Some(1024));
        assert_eq!(merged.sampling.temperature, Some(0.1));
        assert_eq!(merged.sampling.top_k, Some(5), "what the file leaves out");
        assert_eq!(merged.max_tokens.default, Some(7));
    }
}
