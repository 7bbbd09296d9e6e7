//! A model's configured defaults applied to a request (docs/configuration.md):
//! sampling parameters the request leaves out take the model's values, and
//! `max_tokens` gets the model's default and maximum.
//!
//! Precedence is the request's, then the model's ([`SamplingDefaults`], with
//! the file's `[defaults]` already merged in), then the API's built-in
//! values. The defaults are filled into the request *before* it is
//! validated, so they go through the same checks and names as the client's
//! own values: OpenAI bodies ([`fill_openai`]) and Ollama `options`
//! ([`fill_ollama`], Ollama's names). Pure functions.

use serde_json::{json, Map, Value};

use super::types::SamplingRequest;
use crate::models::profile::SamplingDefaults;

/// Fills `r`'s unset sampling fields from `d`.
pub fn fill_openai(d: &SamplingDefaults, r: &mut SamplingRequest) {
    let f = |v: Option<f32>| v.map(f64::from);
    r.temperature = r.temperature.or(f(d.temperature));
    r.top_p = r.top_p.or(f(d.top_p));
    r.top_k = r.top_k.or(d.top_k.map(i64::from));
    r.min_p = r.min_p.or(f(d.min_p));
    r.repeat_penalty = r.repeat_penalty.or(f(d.repeat_penalty));
    r.presence_penalty = r.presence_penalty.or(f(d.presence_penalty));
    r.frequency_penalty = r.frequency_penalty.or(f(d.frequency_penalty));
    r.seed = r.seed.or(d.seed.map(i64::from));
    if r.stop.is_none() || r.stop == Some(Value::Null) {
        r.stop = d.stop.as_ref().map(|s| json!(s));
    }
}

/// Fills the unset keys of an Ollama request's `options` from `d`.
pub fn fill_ollama(d: &SamplingDefaults, options: &mut Option<Map<String, Value>>) {
    if d.is_empty() {
        return;
    }
    let map = options.get_or_insert_with(Map::new);
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            map.entry(key).or_insert(v);
        }
    };
    put("temperature", d.temperature.map(|v| json!(v)));
    put("top_p", d.top_p.map(|v| json!(v)));
    put("top_k", d.top_k.map(|v| json!(v)));
    put("min_p", d.min_p.map(|v| json!(v)));
    put("repeat_penalty", d.repeat_penalty.map(|v| json!(v)));
    put("repeat_last_n", d.repeat_last_n.map(|v| json!(v)));
    put("presence_penalty", d.presence_penalty.map(|v| json!(v)));
    put("frequency_penalty", d.frequency_penalty.map(|v| json!(v)));
    put("seed", d.seed.map(|v| json!(v)));
    put("stop", d.stop.as_ref().map(|v| json!(v)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SamplingDefaults {
        SamplingDefaults {
            temperature: Some(0.25),
            top_k: Some(7),
            seed: Some(3),
            stop: Some(vec!["END".into()]),
            repeat_last_n: Some(16),
            ..Default::default()
        }
    }

    #[test]
    fn openai_request_values_win_and_the_rest_come_from_the_model() {
        let mut r = SamplingRequest {
            temperature: Some(1.5),
            ..Default::default()
        };
        fill_openai(&defaults(), &mut r);
        assert_eq!(r.temperature, Some(1.5), "the request's own value");
        assert_eq!(r.top_k, Some(7));
        assert_eq!(r.seed, Some(3));
        assert_eq!(r.stop, Some(json!(["END"])));
        assert_eq!(
            r.top_p, None,
            "unset in both: the API's built-in default later"
        );
    }

    #[test]
    fn ollama_options_keep_the_clients_keys() {
        let mut options = Some(
            json!({"temperature": 0.9, "num_predict": 5})
                .as_object()
                .unwrap()
                .clone(),
        );
        fill_ollama(&defaults(), &mut options);
        let o = options.unwrap();
        assert_eq!(o["temperature"], json!(0.9));
        assert_eq!(o["top_k"], json!(7));
        assert_eq!(o["repeat_last_n"], json!(16));
        assert_eq!(o["stop"], json!(["END"]));
        assert_eq!(o["num_predict"], json!(5));
        let mut none = None;
        fill_ollama(&SamplingDefaults::default(), &mut none);
        assert_eq!(none, None, "no defaults: the request is left alone");
    }
}
