//! The models configuration file (`--models-config FILE`, TOML): the node's
//! models and each one's settings. docs/configuration.md documents it, and
//! `deploy/models.toml.example` is a complete example that a test parses.
//!
//! Contract:
//! - `[defaults]` holds settings every model inherits; `[models.NAME]` one
//!   model, served as `NAME`, with `path` (a GGUF file, relative to the file's
//!   directory) or `store` (a model in the store), never both.
//! - Every table refuses unknown keys, and every value is range-checked while
//!   it is read, so [`parse`] either returns a complete, valid [`ModelsFile`]
//!   or a [`FileError`] naming the file, the line and the field
//!   (`models.NAME.ctx_size`) of the first problem.
//! - Parsing is pure apart from reading chat template files and checking that
//!   `path`s exist; a store name is resolved by the caller ([`Source::Store`]).
//! - Flags stay the node-wide defaults; the file's `[defaults]` overrides them,
//!   and a model's own table overrides both ([`ModelProfile::merge`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use llm_node_protocol::{KvCacheType, SplitMode};

use crate::models::names::canonical;
use crate::models::profile::{MaxTokens, ModelProfile, SamplingDefaults};

/// Why `tensor_split` is refused rather than ignored: llama-cpp-2 0.1.160
/// keeps `llama_model_params.tensor_split` private (it is written only by
/// `fit_params`, which derives ratios from free VRAM), so explicit ratios
/// cannot reach llama.cpp without patching the crate.
pub const TENSOR_SPLIT_REFUSED: &str = "explicit tensor_split ratios cannot be honoured \
     (llama-cpp-2 0.1.160 exposes no setter for llama.cpp's tensor_split); \
     choose the GPUs with `pin` (llama.cpp then splits the layers by their free memory), \
     or keep the model on one GPU with `allow_split = false` or `split_mode = \"none\"`";

/// A models configuration file, read and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsFile {
    /// The models, sorted by name, each with `[defaults]` merged in.
    pub models: Vec<FileModel>,
}

/// One `[models.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FileModel {
    pub name: String,
    pub source: Source,
    pub profile: ModelProfile,
    /// Line of its table (for errors found later, such as an unknown store name).
    pub line: usize,
}

/// Where a model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A GGUF file (made absolute against the file's directory).
    Path(PathBuf),
    /// A model in the store, by name (`qwen2.5:7b`, `hf.co/owner/repo:Q4_K_M`).
    Store(String),
}

/// Why a models configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {field}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    /// The dotted key (`models.tiny.ctx_size`), or `(file)`.
    pub field: String,
    pub message: String,
}

/// Reads and validates the file at `path`.
///
/// # Errors
/// [`FileError`] for an unreadable file, a TOML syntax error, an unknown key,
/// a value out of range, a missing GGUF or template file, or a name or alias
/// used twice.
pub fn read(path: &Path) -> Result<ModelsFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_path_buf(),
        line: 0,
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, dir)
}

/// Parses `text` (read from `path`); relative paths are resolved against `dir`.
///
/// # Errors
/// As [`read`].
pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<ModelsFile, FileError> {
    let at = |span: std::ops::Range<usize>, field: String, message: String| FileError {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        field,
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        at(
            e.span().unwrap_or(0..0),
            "(syntax)".into(),
            e.message().to_string(),
        )
    })?;
    let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` wraps a value in a private struct; its key is noise here.
        let field = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        at(
            inner.span().unwrap_or(0..0),
            field,
            inner.message().to_string(),
        )
    })?;
    if let Some(t) = &raw.defaults.tensor_split {
        return Err(at(
            t.span(),
            "defaults.tensor_split".into(),
            TENSOR_SPLIT_REFUSED.into(),
        ));
    }
    let defaults = raw.defaults.profile();
    let mut models = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (name, table) in raw.models {
        let span = table.span();
        let field = |key: &str| format!("models.{name}.{key}");
        let table = table.into_inner();
        if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(at(
                span,
                format!("models.{name:?}"),
                "a model name must be non-empty and contain no whitespace".into(),
            ));
        }
        if let Some(t) = &table.settings.tensor_split {
            return Err(at(
                t.span(),
                field("tensor_split"),
                TENSOR_SPLIT_REFUSED.into(),
            ));
        }
        // A GGUF `key` names, made absolute against the file's directory;
        // it must exist.
        let existing = |p: &Spanned<PathBuf>, key: &str| {
            let file = dir.join(p.get_ref());
            match file.is_file() {
                true => Ok(file),
                false => Err(at(
                    p.span(),
                    field(key),
                    format!("{} does not exist", file.display()),
                )),
            }
        };
        let source = match (&table.path, &table.store) {
            (Some(p), None) => Source::Path(existing(p, "path")?),
            (None, Some(s)) => Source::Store(s.get_ref().clone()),
            (Some(p), Some(_)) => {
                return Err(at(
                    p.span(),
                    field("path"),
                    "set `path` or `store`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(at(
                    span,
                    format!("models.{name}"),
                    "needs `path` (a GGUF file) or `store` (a stored model's name)".into(),
                ))
            }
        };
        for (what, key) in std::iter::once((&name, None))
            .chain(table.aliases.iter().map(|a| (a.get_ref(), Some(a.span()))))
        {
            if let Some(first) = names.insert(canonical(what), name.clone()) {
                let (span, f) = match key {
                    Some(s) => (s, field("aliases")),
                    None => (span.clone(), format!("models.{name}")),
                };
                return Err(at(
                    span,
                    f,
                    format!("{what:?} already names model {first:?}"),
                ));
            }
        }
        let chat_template = match &table.chat_template {
            None => None,
            Some(t) => {
                let file = dir.join(t.get_ref());
                Some(std::fs::read_to_string(&file).map_err(|e| {
                    at(
                        t.span(),
                        field("chat_template"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?)
            }
        };
        let draft_model = match &table.draft_model {
            None => None,
            Some(d) => Some(existing(d, "draft_model")?),
        };
        let own = ModelProfile {
            aliases: table.aliases.iter().map(|a| a.get_ref().clone()).collect(),
            chat_template,
            draft_model,
            pin: table.pin.clone(),
            ..table.settings.profile()
        };
        let profile = own.merge(&defaults);
        if let MaxTokens {
            default: Some(d),
            max: Some(m),
        } = profile.max_tokens
        {
            if d > m {
                return Err(at(
                    span,
                    field("max_tokens"),
                    format!("the default max_tokens {d} is above max_tokens_limit {m}"),
                ));
            }
        }
        models.push(FileModel {
            line: line_of(text, span.start),
            name,
            source,
            profile,
        });
    }
    Ok(ModelsFile { models })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawModel>>,
}

/// The settings `[defaults]` and `[models.NAME]` share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, deserialize_with = "ctx_size")]
    ctx_size: Option<u32>,
    #[serde(default, deserialize_with = "parallel")]
    parallel: Option<u32>,
    n_gpu_layers: Option<u32>,
    main_gpu: Option<i32>,
    /// Host-RAM prompt cache, MiB.
    cache_ram: Option<u32>,
    #[serde(default, deserialize_with = "spec_ngram")]
    spec_ngram: Option<u32>,
    #[serde(default, deserialize_with = "spec_draft")]
    spec_draft: Option<u32>,
    prefill_ahead: Option<bool>,
    #[serde(default, deserialize_with = "named")]
    split_mode: Option<SplitMode>,
    allow_split: Option<bool>,
    /// Refused (see [`TENSOR_SPLIT_REFUSED`]); read only to say why.
    tensor_split: Option<Spanned<toml::Value>>,
    #[serde(default, deserialize_with = "named")]
    cache_type_k: Option<KvCacheType>,
    #[serde(default, deserialize_with = "named")]
    cache_type_v: Option<KvCacheType>,
    threads: Option<u32>,
    embeddings: Option<bool>,
    preload: Option<bool>,
    /// Idle seconds before unloading; 0 = never.
    ttl: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "positive")]
    max_tokens_limit: Option<u32>,
    #[serde(default)]
    sampling: Sampling,
}

impl Settings {
    fn profile(&self) -> ModelProfile {
        ModelProfile {
            ctx_size: self.ctx_size,
            parallel: self.parallel,
            n_gpu_layers: self.n_gpu_layers,
            main_gpu: self.main_gpu,
            cache_ram: self.cache_ram,
            spec_ngram: self.spec_ngram,
            spec_draft: self.spec_draft,
            prefill_ahead: self.prefill_ahead,
            split_mode: self.split_mode,
            allow_split: self.allow_split,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            threads: self.threads,
            embeddings: self.embeddings,
            preload: self.preload,
            ttl: self.ttl.map(Duration::from_secs),
            max_tokens: MaxTokens {
                default: self.max_tokens,
                max: self.max_tokens_limit,
            },
            sampling: self.sampling.defaults(),
            ..ModelProfile::default()
        }
    }
}

/// One `[models.NAME]` table. serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so the shared settings are listed again here and
/// split off in [`RawModel::deserialize`]'s helper.
#[derive(Debug)]
struct RawModel {
    path: Option<Spanned<PathBuf>>,
    store: Option<Spanned<String>>,
    aliases: Vec<Spanned<String>>,
    chat_template: Option<Spanned<PathBuf>>,
    draft_model: Option<Spanned<PathBuf>>,
    pin: Option<Vec<u32>>,
    settings: Settings,
}

impl<'de> Deserialize<'de> for RawModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = ModelTable::deserialize(d)?;
        Ok(RawModel {
            path: m.path,
            store: m.store,
            aliases: m.aliases,
            chat_template: m.chat_template,
            draft_model: m.draft_model,
            pin: m.pin,
            settings: Settings {
                ctx_size: m.ctx_size,
                parallel: m.parallel,
                n_gpu_layers: m.n_gpu_layers,
                main_gpu: m.main_gpu,
                cache_ram: m.cache_ram,
                spec_ngram: m.spec_ngram,
                spec_draft: m.spec_draft,
                prefill_ahead: m.prefill_ahead,
                split_mode: m.split_mode,
                allow_split: m.allow_split,
                tensor_split: m.tensor_split,
                cache_type_k: m.cache_type_k,
                cache_type_v: m.cache_type_v,
                threads: m.threads,
                embeddings: m.embeddings,
                preload: m.preload,
                ttl: m.ttl,
                max_tokens: m.max_tokens,
                max_tokens_limit: m.max_tokens_limit,
                sampling: m.sampling,
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    path: Option<Spanned<PathBuf>>,
    store: Option<Spanned<String>>,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    chat_template: Option<Spanned<PathBuf>>,
    /// A draft model's GGUF file, relative to the file's directory.
    draft_model: Option<Spanned<PathBuf>>,
    /// `gpus` is the same list by the name llama-swap users look for.
    #[serde(alias = "gpus")]
    pin: Option<Vec<u32>>,
    #[serde(default, deserialize_with = "ctx_size")]
    ctx_size: Option<u32>,
    #[serde(default, deserialize_with = "parallel")]
    parallel: Option<u32>,
    n_gpu_layers: Option<u32>,
    main_gpu: Option<i32>,
    /// Host-RAM prompt cache, MiB.
    cache_ram: Option<u32>,
    #[serde(default, deserialize_with = "spec_ngram")]
    spec_ngram: Option<u32>,
    #[serde(default, deserialize_with = "spec_draft")]
    spec_draft: Option<u32>,
    prefill_ahead: Option<bool>,
    #[serde(default, deserialize_with = "named")]
    split_mode: Option<SplitMode>,
    allow_split: Option<bool>,
    /// Refused (see [`TENSOR_SPLIT_REFUSED`]); read only to say why.
    tensor_split: Option<Spanned<toml::Value>>,
    #[serde(default, deserialize_with = "named")]
    cache_type_k: Option<KvCacheType>,
    #[serde(default, deserialize_with = "named")]
    cache_type_v: Option<KvCacheType>,
    threads: Option<u32>,
    embeddings: Option<bool>,
    preload: Option<bool>,
    ttl: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "positive")]
    max_tokens_limit: Option<u32>,
    #[serde(default)]
    sampling: Sampling,
}

/// `[….sampling]`: default sampling parameters, range-checked as the API checks them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sampling {
    #[serde(default, deserialize_with = "temperature")]
    temperature: Option<f32>,
    #[serde(default, deserialize_with = "top_p")]
    top_p: Option<f32>,
    top_k: Option<u32>,
    #[serde(default, deserialize_with = "unit")]
    min_p: Option<f32>,
    #[serde(default, deserialize_with = "repeat_penalty")]
    repeat_penalty: Option<f32>,
    #[serde(default, deserialize_with = "repeat_last_n")]
    repeat_last_n: Option<i32>,
    #[serde(default, deserialize_with = "penalty")]
    presence_penalty: Option<f32>,
    #[serde(default, deserialize_with = "penalty")]
    frequency_penalty: Option<f32>,
    seed: Option<u32>,
    stop: Option<Vec<String>>,
}

impl Sampling {
    fn defaults(&self) -> SamplingDefaults {
        SamplingDefaults {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
        }
    }
}

/// A deserializer of `Option<T>` for a string naming a `T` (`"q8_0"`).
fn named<'de, D: Deserializer<'de>, T>(d: D) -> Result<Option<T>, D::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(D::Error::custom)
}

/// A deserializer of `Option<$t>` accepting only values for which `$ok` holds.
macro_rules! ranged {
    ($name:ident, $t:ty, $ok:expr, $range:literal) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
            let v = <$t>::deserialize(d)?;
            let ok: fn($t) -> bool = $ok;
            match ok(v) {
                true => Ok(Some(v)),
                false => Err(D::Error::custom(format!("{v} is out of range {}", $range))),
            }
        }
    };
}

ranged!(
    ctx_size,
    u32,
    |v| (64..=1 << 21).contains(&v),
    "[64, 2097152]"
);
ranged!(parallel, u32, |v| (1..=512).contains(&v), "[1, 512]");
ranged!(spec_ngram, u32, |v| v <= 64, "[0, 64]");
ranged!(spec_draft, u32, |v| (1..=256).contains(&v), "[1, 256]");
ranged!(positive, u32, |v| v >= 1, "[1, 4294967295]");
ranged!(temperature, f32, |v| (0.0..=2.0).contains(&v), "[0, 2]");
ranged!(top_p, f32, |v| v > 0.0 && v <= 1.0, "(0, 1]");
ranged!(unit, f32, |v| (0.0..=1.0).contains(&v), "[0, 1]");
ranged!(repeat_penalty, f32, |v| v > 0.0 && v <= 10.0, "(0, 10]");
ranged!(repeat_last_n, i32, |v| v >= -1, "[-1, 2147483647]");
ranged!(penalty, f32, |v| (-2.0..=2.0).contains(&v), "[-2, 2]");

#[cfg(test)]
mod tests;
