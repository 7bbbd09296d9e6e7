//! A model's own settings: what the models configuration file
//! (`--models-config`, docs/configuration.md) can set per model, on top of
//! the node-wide flags.
//!
//! [`ModelProfile`] is the one struct that says how one model runs: the
//! worker settings it overrides (context per slot, slots, GPU layers, threads,
//! embeddings, chat template), its lifecycle (aliases, preload, idle TTL, GPU
//! pin), its `max_tokens` policy ([`MaxTokens`]) and its default sampling
//! parameters ([`SamplingDefaults`]). Every field is optional: `None` means
//! "the node-wide value" (the flag, or the file's `[defaults]`), so a model
//! served from flags alone has [`ModelProfile::default`]. The resolved worker
//! settings are [`super::ModelSettings::worker_config_for`] (what a memory
//! estimate reads: `ctx_per_slot × parallel`).
//!
//! Precedence, highest first: the request, the model's profile, the file's
//! `[defaults]` (merged into each profile when the file is read), a stored
//! model's Ollama manifest params ([`super::manifest_params`], merged under
//! the file's profile), then the node's flags and built-in values. Pure data
//! and pure functions: no I/O.

use std::time::Duration;

use llm_node_protocol::{KvCacheType, SplitMode};

/// Tokens a request without `max_tokens` may generate when nothing else is
/// configured. Without any cap such a request decodes until its slot's
/// context is full (issue #18 observed a proxied `/api/chat` running for
/// minutes on the bundled model). 2048 covers nearly every chat answer or code
/// block, while a runaway generation ends in seconds on a small model and in a
/// few minutes on a large one on CPU. Clients that want more ask for it.
pub const DEFAULT_MAX_TOKENS: u32 = 2048;

/// One model's settings beyond its name and file; `None` everywhere is "as
/// the node-wide flags say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProfile {
    /// Other names clients may use for this model (matched as Ollama names:
    /// `alias` also answers `alias:latest`).
    pub aliases: Vec<String>,
    /// Context window of each slot, in tokens.
    pub ctx_size: Option<u32>,
    /// Continuous-batching slots.
    pub parallel: Option<u32>,
    /// Layers offloaded to the GPU.
    pub n_gpu_layers: Option<u32>,
    /// Main GPU among the visible ones.
    pub main_gpu: Option<i32>,
    /// How the model spans several GPUs.
    pub split_mode: Option<SplitMode>,
    /// `false`: the model stays on one GPU (placement refuses it when none
    /// fits alone).
    pub allow_split: Option<bool>,
    /// Host-RAM prompt cache, MiB (0: off).
    pub cache_ram: Option<u32>,
    /// Speculative decoding's n-gram length (0: off) and most draft tokens.
    pub spec_ngram: Option<u32>,
    pub spec_draft: Option<u32>,
    /// A draft model (GGUF file) for speculative decoding; it drafts
    /// instead of the n-gram lookup. Per model only.
    pub draft_model: Option<std::path::PathBuf>,
    /// Start queued requests ahead in a borrowed slot (see `--prefill-ahead`).
    pub prefill_ahead: Option<bool>,
    /// Element types of the K and V caches.
    pub cache_type_k: Option<KvCacheType>,
    pub cache_type_v: Option<KvCacheType>,
    /// CPU threads for decoding (0 = all cores).
    pub threads: Option<u32>,
    /// Whether the worker creates an embeddings context.
    pub embeddings: Option<bool>,
    /// A Jinja chat template (its text) that replaces the GGUF's.
    pub chat_template: Option<String>,
    /// GPUs the model is pinned to.
    pub pin: Option<Vec<u32>>,
    /// Load at startup (and after a reload adds it) and never evict.
    pub preload: Option<bool>,
    /// Unload after this long idle (zero: never).
    pub ttl: Option<Duration>,
    /// The model's `max_tokens` policy.
    pub max_tokens: MaxTokens,
    /// Default sampling parameters for requests that do not set them.
    pub sampling: SamplingDefaults,
}

/// A model's `max_tokens` policy: the default for requests without one, and
/// the most a request gets (a larger `max_tokens` is clamped to it, as
/// llama-swap and llama-server users expect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaxTokens {
    /// Used when a request has no `max_tokens`; `None`: [`DEFAULT_MAX_TOKENS`].
    pub default: Option<u32>,
    /// Requests asking for more get this many; `None`: no model maximum.
    pub max: Option<u32>,
}

impl MaxTokens {
    /// The tokens a request asking for `requested` may generate: the request's
    /// value clamped to the maximum, or the default (itself clamped) when absent.
    pub fn cap(&self, requested: Option<u32>) -> u32 {
        let wanted = requested.unwrap_or(self.default.unwrap_or(DEFAULT_MAX_TOKENS));
        match self.max {
            Some(max) => wanted.min(max),
            None => wanted,
        }
    }

    /// `self`, with `lower`'s values where `self` has none.
    pub fn merge(self, lower: MaxTokens) -> MaxTokens {
        MaxTokens {
            default: self.default.or(lower.default),
            max: self.max.or(lower.max),
        }
    }
}

/// Sampling parameters a model uses for requests that do not set them.
/// Each `None` falls through to the next source (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Tokens of history the penalties look at (Ollama's `repeat_last_n`).
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<u32>,
    /// Stop strings used when a request sends none.
    pub stop: Option<Vec<String>>,
}

impl SamplingDefaults {
    /// `self`, with `lower`'s values where `self` has none (`self` wins).
    pub fn merge(self, lower: &SamplingDefaults) -> SamplingDefaults {
        SamplingDefaults {
            temperature: self.temperature.or(lower.temperature),
            top_p: self.top_p.or(lower.top_p),
            top_k: self.top_k.or(lower.top_k),
            min_p: self.min_p.or(lower.min_p),
            repeat_penalty: self.repeat_penalty.or(lower.repeat_penalty),
            repeat_last_n: self.repeat_last_n.or(lower.repeat_last_n),
            presence_penalty: self.presence_penalty.or(lower.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(lower.frequency_penalty),
            seed: self.seed.or(lower.seed),
            stop: self.stop.or_else(|| lower.stop.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == SamplingDefaults::default()
    }
}

impl ModelProfile {
    /// `self`, with `lower`'s values where `self` has none (the file's
    /// `[defaults]` under each model). Aliases are never inherited.
    pub fn merge(self, lower: &ModelProfile) -> ModelProfile {
        ModelProfile {
            aliases: self.aliases,
            ctx_size: self.ctx_size.or(lower.ctx_size),
            parallel: self.parallel.or(lower.parallel),
            n_gpu_layers: self.n_gpu_layers.or(lower.n_gpu_layers),
            main_gpu: self.main_gpu.or(lower.main_gpu),
            cache_ram: self.cache_ram.or(lower.cache_ram),
            spec_ngram: self.spec_ngram.or(lower.spec_ngram),
            spec_draft: self.spec_draft.or(lower.spec_draft),
            draft_model: self.draft_model.or_else(|| lower.draft_model.clone()),
            prefill_ahead: self.prefill_ahead.or(lower.prefill_ahead),
            split_mode: self.split_mode.or(lower.split_mode),
            allow_split: self.allow_split.or(lower.allow_split),
            cache_type_k: self.cache_type_k.or(lower.cache_type_k),
            cache_type_v: self.cache_type_v.or(lower.cache_type_v),
            threads: self.threads.or(lower.threads),
            embeddings: self.embeddings.or(lower.embeddings),
            chat_template: self.chat_template.or_else(|| lower.chat_template.clone()),
            pin: self.pin.or_else(|| lower.pin.clone()),
            preload: self.preload.or(lower.preload),
            ttl: self.ttl.or(lower.ttl),
            max_tokens: self.max_tokens.merge(lower.max_tokens),
            sampling: self.sampling.merge(&lower.sampling),
        }
    }

    /// Whether a running worker must restart to apply `next` instead of
    /// `self`: a setting the worker was started with changed. Aliases, TTL,
    /// preload, `max_tokens` and sampling defaults are read per request or by
    /// the supervisor, so they apply without a restart.
    pub fn needs_restart(&self, next: &ModelProfile) -> bool {
        (
            self.ctx_size,
            self.parallel,
            self.n_gpu_layers,
            self.main_gpu,
            (self.cache_type_k, self.cache_type_v),
            (self.split_mode, self.allow_split),
            (
                self.cache_ram,
                self.spec_ngram,
                self.spec_draft,
                self.prefill_ahead,
            ),
            self.threads,
            self.embeddings,
            &self.chat_template,
            &self.pin,
            &self.draft_model,
        ) != (
            next.ctx_size,
            next.parallel,
            next.n_gpu_layers,
            next.main_gpu,
            (next.cache_type_k, next.cache_type_v),
            (next.split_mode, next.allow_split),
            (
                next.cache_ram,
                next.spec_ngram,
                next.spec_draft,
                next.prefill_ahead,
            ),
            next.threads,
            next.embeddings,
            &next.chat_template,
            &next.pin,
            &next.draft_model,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_defaults_and_clamps() {
        let none = MaxTokens::default();
        let both = MaxTokens {
            default: Some(100),
            max: Some(500),
        };
        let low_max = MaxTokens {
            default: None,
            max: Some(64),
        };
        let cases = [
            (none, None, DEFAULT_MAX_TOKENS),
            (none, Some(10_000), 10_000),
            (both, None, 100),
            (both, Some(50), 50),
            (both, Some(501), 500),
            (low_max, None, 64),
            (low_max, Some(3), 3),
        ];
        for (policy, requested, want) in cases {
            assert_eq!(policy.cap(requested), want, "{policy:?} {requested:?}");
        }
    }

    #[test]
    fn merge_keeps_the_higher_source_and_fills_the_rest() {
        let model = SamplingDefaults {
            temperature: Some(0.2),
            ..Default::default()
        };
        let manifest = SamplingDefaults {
            temperature: Some(0.9),
            top_k: Some(20),
            stop: Some(vec!["<|end|>".into()]),
            ..Default::default()
        };
        let merged = model.merge(&manifest);
        assert_eq!(merged.temperature, Some(0.2));
        assert_eq!(merged.top_k, Some(20));
        assert_eq!(merged.stop.as_deref(), Some(&["<|end|>".to_string()][..]));
        assert_eq!(merged.top_p, None);
        assert!(SamplingDefaults::default().is_empty());
        assert!(!merged.is_empty());
    }

    #[test]
    fn profile_merge_inherits_everything_but_aliases() {
        let defaults = ModelProfile {
            aliases: vec!["x".into()],
            ctx_size: Some(2048),
            ttl: Some(Duration::from_secs(60)),
            max_tokens: MaxTokens {
                default: Some(10),
                max: Some(20),
            },
            ..Default::default()
        };
        let model = ModelProfile {
            ctx_size: Some(512),
            max_tokens: MaxTokens {
                default: Some(5),
                max: None,
            },
            ..Default::default()
        };
        let merged = model.merge(&defaults);
        assert!(merged.aliases.is_empty());
        assert_eq!(merged.ctx_size, Some(512));
        assert_eq!(merged.ttl, Some(Duration::from_secs(60)));
        assert_eq!(merged.max_tokens.default, Some(5));
        assert_eq!(merged.max_tokens.max, Some(20));
    }

    #[test]
    fn only_worker_settings_need_a_restart() {
        let base = ModelProfile::default();
        let restart = [
            ModelProfile {
                ctx_size: Some(1),
                ..Default::default()
            },
            ModelProfile {
                parallel: Some(1),
                ..Default::default()
            },
            ModelProfile {
                chat_template: Some("t".into()),
                ..Default::default()
            },
            ModelProfile {
                pin: Some(vec![0]),
                ..Default::default()
            },
            ModelProfile {
                embeddings: Some(false),
                ..Default::default()
            },
            ModelProfile {
                cache_type_k: Some(KvCacheType::Q8_0),
                ..Default::default()
            },
            ModelProfile {
                cache_type_v: Some(KvCacheType::Q8_0),
                ..Default::default()
            },
            ModelProfile {
                split_mode: Some(SplitMode::Row),
                ..Default::default()
            },
            ModelProfile {
                allow_split: Some(false),
                ..Default::default()
            },
            ModelProfile {
                cache_ram: Some(0),
                ..Default::default()
            },
            ModelProfile {
                spec_ngram: Some(3),
                ..Default::default()
            },
            ModelProfile {
                spec_draft: Some(4),
                ..Default::default()
            },
            ModelProfile {
                prefill_ahead: Some(false),
                ..Default::default()
            },
            ModelProfile {
                draft_model: Some("/m/draft.gguf".into()),
                ..Default::default()
            },
        ];
        for next in restart {
            assert!(base.needs_restart(&next), "{next:?}");
        }
        let live = [
            ModelProfile {
                aliases: vec!["a".into()],
                ..Default::default()
            },
            ModelProfile {
                ttl: Some(Duration::from_secs(1)),
                ..Default::default()
            },
            ModelProfile {
                max_tokens: MaxTokens {
                    default: Some(1),
                    max: None,
                },
                ..Default::default()
            },
            ModelProfile {
                sampling: SamplingDefaults {
                    temperature: Some(0.0),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        for next in live {
            assert!(!base.needs_restart(&next), "{next:?}");
        }
    }
}
