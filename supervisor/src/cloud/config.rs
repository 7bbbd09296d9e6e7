//! The cloud settings ([`CloudArgs`], flattened into the node's `Args`) and the
//! per-provider view the dispatcher uses ([`Endpoint`]).
//!
//! Keys are secrets: neither [`CloudArgs`] nor [`Endpoint`] derives `Debug`;
//! both print `<set>`/`<unset>` instead of a key, and clap is told to hide the
//! environment values in `--help`.

use std::fmt;
use std::time::Duration;

/// Cloud models by prefix (`openai:`, `anthropic:`, `google:`; see docs/cloud.md).
#[derive(Clone, clap::Args)]
pub struct CloudArgs {
    /// API key for `openai:` models (sent as `Authorization: Bearer`).
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub openai_api_key: Option<String>,

    /// API key for `anthropic:` models (sent as `x-api-key`).
    #[arg(
        long,
        env = "ANTHROPIC_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub anthropic_api_key: Option<String>,

    /// API key for `google:` models (sent as `x-goog-api-key`).
    #[arg(
        long,
        env = "GOOGLE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub google_api_key: Option<String>,

    /// Base URL of the OpenAI API (proxies, Azure-style gateways, tests).
    #[arg(
        long,
        env = "LLM_NODE_OPENAI_BASE_URL",
        value_name = "URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// Base URL of the Anthropic API.
    #[arg(
        long,
        env = "LLM_NODE_ANTHROPIC_BASE_URL",
        value_name = "URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_base_url: String,

    /// Base URL of the Google Gemini API.
    #[arg(
        long,
        env = "LLM_NODE_GOOGLE_BASE_URL",
        value_name = "URL",
        default_value = "https://generativelanguage.googleapis.com"
    )]
    pub google_base_url: String,

    /// Longest wait, in seconds, for a provider's answer to begin, and between
    /// two pieces of a streamed answer (then 504, or a final error event).
    #[arg(long, env = "LLM_NODE_CLOUD_TIMEOUT_SECS", default_value_t = 120)]
    pub cloud_timeout_secs: u64,

    /// Cloud models listed in `/v1/models` (e.g. `openai:gpt-4o`); any prefixed
    /// name is served whether listed or not. Comma-separated in the variable.
    #[arg(
        long = "cloud-model",
        env = "LLM_NODE_CLOUD_MODELS",
        value_name = "PREFIX:MODEL",
        value_delimiter = ','
    )]
    pub cloud_models: Vec<String>,
}

impl Default for CloudArgs {
    fn default() -> Self {
        Self {
            openai_api_key: None,
            anthropic_api_key: None,
            google_api_key: None,
            openai_base_url: "https://api.openai.com/v1".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            google_base_url: "https://generativelanguage.googleapis.com".into(),
            cloud_timeout_secs: 120,
            cloud_models: Vec::new(),
        }
    }
}

fn set(key: &Option<String>) -> &'static str {
    match key {
        Some(_) => "<set>",
        None => "<unset>",
    }
}

impl fmt::Debug for CloudArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudArgs")
            .field("openai_api_key", &set(&self.openai_api_key))
            .field("anthropic_api_key", &set(&self.anthropic_api_key))
            .field("google_api_key", &set(&self.google_api_key))
            .field("openai_base_url", &self.openai_base_url)
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field("google_base_url", &self.google_base_url)
            .field("cloud_timeout_secs", &self.cloud_timeout_secs)
            .field("cloud_models", &self.cloud_models)
            .finish()
    }
}

/// How one provider is reached: base URL, key and the headers that carry it.
#[derive(Clone)]
pub struct Endpoint {
    /// `openai`, `anthropic`, `google`: the prefix and metrics label.
    pub provider: &'static str,
    /// The environment variable the key comes from, for the missing-key error.
    pub key_var: &'static str,
    /// Base URL without a trailing slash.
    pub base_url: String,
    key: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("key", &set(&self.key))
            .finish()
    }
}

impl Endpoint {
    fn new(
        provider: &'static str,
        key_var: &'static str,
        base: &str,
        key: &Option<String>,
    ) -> Self {
        Self {
            provider,
            key_var,
            base_url: base.trim_end_matches('/').to_owned(),
            key: key.clone().filter(|k| !k.is_empty()),
        }
    }

    /// `text` with the key replaced by `<redacted>`: provider error messages
    /// sometimes quote (part of) the key they refused.
    pub fn scrub(&self, text: &str) -> String {
        match self.key.as_deref() {
            Some(key) if key.len() >= 4 => text.replace(key, "<redacted>"),
            _ => text.to_owned(),
        }
    }

    /// The headers that authenticate a call, or `None` without a key.
    /// The values are marked sensitive, so reqwest never prints them.
    pub fn auth_headers(&self) -> Option<reqwest::header::HeaderMap> {
        use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
        let key = self.key.as_deref()?;
        let secret = |text: &str| {
            let mut v = HeaderValue::from_str(text).ok()?;
            v.set_sensitive(true);
            Some(v)
        };
        let mut headers = HeaderMap::new();
        match self.provider {
            "openai" => {
                headers.insert(AUTHORIZATION, secret(&format!("Bearer {key}"))?);
            }
            "anthropic" => {
                headers.insert("x-api-key", secret(key)?);
                headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
            _ => {
                headers.insert("x-goog-api-key", secret(key)?);
            }
        }
        Some(headers)
    }
}

impl CloudArgs {
    /// The provider's endpoint (`openai`, `anthropic`, `google`), `None` for another name.
    pub fn endpoint(&self, provider: &str) -> Option<Endpoint> {
        Some(match provider {
            "openai" => Endpoint::new(
                "openai",
                "OPENAI_API_KEY",
                &self.openai_base_url,
                &self.openai_api_key,
            ),
            "anthropic" => Endpoint::new(
                "anthropic",
                "ANTHROPIC_API_KEY",
                &self.anthropic_base_url,
                &self.anthropic_api_key,
            ),
            "google" => Endpoint::new(
                "google",
                "GOOGLE_API_KEY",
                &self.google_base_url,
                &self.google_api_key,
            ),
            _ => return None,
        })
    }

    /// The request timeout as a duration (at least one second).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.cloud_timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_appear_in_debug_output() {
        let args = CloudArgs {
            openai_api_key: Some("sk-secret-1".into()),
            anthropic_api_key: Some("sk-ant-secret-2".into()),
            google_api_key: Some("AIza-secret-3".into()),
            ..CloudArgs::default()
        };
        let text = format!("{args:?} {:?}", args.endpoint("anthropic").unwrap());
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<set>"), "{text}");
        let headers = args.endpoint("openai").unwrap().auth_headers().unwrap();
        assert!(!format!("{headers:?}").contains("secret"));
    }

    #[test]
    fn each_provider_gets_its_own_auth_headers() {
        let args = CloudArgs {
            openai_api_key: Some("k1".into()),
            anthropic_api_key: Some("k2".into()),
            google_api_key: Some("k3".into()),
            ..CloudArgs::default()
        };
        let h = args.endpoint("openai").unwrap().auth_headers().unwrap();
        assert_eq!(h["authorization"], "Bearer k1");
        let h = args.endpoint("anthropic").unwrap().auth_headers().unwrap();
        assert_eq!(h["x-api-key"], "k2");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        let h = args.endpoint("google").unwrap().auth_headers().unwrap();
        assert_eq!(h["x-goog-api-key"], "k3");
        let none = CloudArgs::default();
        assert!(none.endpoint("openai").unwrap().auth_headers().is_none());
        assert!(none.endpoint("azure").is_none());
    }
}
