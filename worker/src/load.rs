//! Loading: the model file, the generation context and the chat template,
//! with the errors `Ready`'s alternative (`InitFailed`) reports.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::{KvCacheType as LlamaKvType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::{LlamaModelParams, LlamaSplitMode};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llm_node_chat::template::{ChatTemplate, CHATML};
use llm_node_protocol::{KvCacheType, SplitMode, WorkerConfig};

/// The model or its context could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
    /// Trying again cannot help (a missing file, a template that does not compile).
    pub permanent: bool,
}

/// Loads the model described by `config`.
///
/// # Errors
/// [`LoadError`] when the file is missing (permanent) or llama.cpp refuses
/// it (permanent too: the same file fails the same way; running out of
/// memory shows up at context creation instead).
pub fn load_model(backend: &LlamaBackend, config: &WorkerConfig) -> Result<LlamaModel, LoadError> {
    if !std::path::Path::new(&config.model_path).is_file() {
        return Err(LoadError {
            message: format!("model file not found: {}", config.model_path),
            permanent: true,
        });
    }
    backend_modules::load_once();
    let params = model_params(config);
    LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|e| LoadError {
        message: format!("llama.cpp could not load {}: {e}", config.model_path),
        permanent: true,
    })
}

/// Where the model's layers go: the same for a draft model (it is small; it
/// goes where the model's layers go).
fn model_params(config: &WorkerConfig) -> LlamaModelParams {
    LlamaModelParams::default()
        .with_n_gpu_layers(config.n_gpu_layers)
        .with_main_gpu(config.main_gpu)
        .with_split_mode(split_mode(config.split_mode))
}

/// Loads the draft model `config` names, if any, on the same GPUs as the
/// model ([`model_params`]).
///
/// # Errors
/// [`LoadError`] (permanent) as for [`load_model`], naming the draft model.
pub fn load_draft_model(
    backend: &LlamaBackend,
    config: &WorkerConfig,
) -> Result<Option<LlamaModel>, LoadError> {
    let Some(path) = &config.draft_model_path else {
        return Ok(None);
    };
    if !std::path::Path::new(path).is_file() {
        return Err(LoadError {
            message: format!("draft model file not found: {path}"),
            permanent: true,
        });
    }
    let params = model_params(config);
    LlamaModel::load_from_file(backend, path, &params)
        .map(Some)
        .map_err(|e| LoadError {
            message: format!("llama.cpp could not load the draft model {path}: {e}"),
            permanent: true,
        })
}

/// The draft model's context: one sequence per slot of the same size as
/// the model's, default (F16) KV types.
///
/// # Errors
/// [`LoadError`] when llama.cpp cannot allocate it.
pub fn new_draft_context<'m>(
    backend: &LlamaBackend,
    draft: &'m LlamaModel,
    config: &WorkerConfig,
) -> Result<LlamaContext<'m>, LoadError> {
    let params = slot_context_params(config);
    draft.new_context(backend, params).map_err(|e| LoadError {
        message: format!("could not create the draft model's context: {e}"),
        permanent: false,
    })
}

/// Portable builds (`--features portable`, llama.cpp's `GGML_BACKEND_DL` with
/// `GGML_CPU_ALL_VARIANTS`) ship the CPU backend as several shared modules
/// (`libggml-cpu-haswell.so`, `-skylakex.so`, …) and ggml registers none of
/// them until asked ([`load_backend_modules`]); it then keeps the best one this CPU can run. Native
/// builds link their backends statically and this is a no-op.
/// Loads a portable build's ggml backend modules (once; a no-op in native
/// builds), so that ggml's registry lists them: before a model load, and for
/// `--version`.
pub fn load_backend_modules() {
    backend_modules::load_once();
}

mod backend_modules {
    /// Where a portable build's modules may be, first match wins: the
    /// installed layout (`bin/` next to `lib/llm-node/`), the binary's own
    /// folder, else the folder the build wrote them to (a cargo target dir).
    #[cfg(feature = "portable")]
    fn candidates() -> Vec<std::path::PathBuf> {
        let mut dirs = Vec::new();
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
        {
            dirs.push(exe_dir.join("../lib/llm-node"));
            dirs.push(exe_dir);
        }
        dirs
    }

    #[cfg(feature = "portable")]
    fn has_cpu_module(dir: &std::path::Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libggml-cpu") && name.ends_with(".so")
            })
        })
    }

    #[cfg(feature = "portable")]
    pub fn load_once() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(
            || match candidates().into_iter().find(|d| has_cpu_module(d)) {
                Some(dir) => {
                    tracing::info!(dir = %dir.display(), "loading ggml backend modules");
                    llama_cpp_2::llama_backend::load_backends_from_path(&dir);
                }
                None => llama_cpp_2::llama_backend::load_backends(),
            },
        );
    }

    #[cfg(not(feature = "portable"))]
    pub fn load_once() {}
}

pub fn threads(config: &WorkerConfig) -> i32 {
    let n = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        config.threads
    };
    n as i32
}

/// The loaded chat template (it goes to the prep thread) and what `Ready`
/// says about it.
pub struct Template {
    pub template: ChatTemplate,
    pub source: String,
    /// The GGUF or the config had one (else ChatML).
    pub found: bool,
}

/// `parallel` sequences of `ctx_per_slot` tokens, `batch_size` tokens a
/// decode, default (F16) KV types: the generation context's settings, and
/// the draft model's.
fn slot_context_params(config: &WorkerConfig) -> LlamaContextParams {
    let parallel = config.parallel.max(1);
    let ctx_per_slot = config.ctx_per_slot.max(16);
    let n_batch = config.batch_size.max(16);
    let n_threads = threads(config);
    // Per-sequence KV (kv_unified = false): each slot owns exactly
    // ctx_per_slot cells, so one long conversation can never starve another
    // and a retained prefix cache costs nothing extra.
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_per_slot * parallel))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch.min(512))
        .with_n_seq_max(parallel)
        .with_kv_unified(false)
        .with_n_threads(n_threads)
        .with_n_threads_batch(n_threads)
}

/// The generation context: `parallel` sequences of `ctx_per_slot` tokens.
pub fn new_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    config: &WorkerConfig,
) -> Result<LlamaContext<'m>, LoadError> {
    let params = slot_context_params(config)
        .with_type_k(kv_type(config.cache_type_k))
        .with_type_v(kv_type(config.cache_type_v));
    // Flash attention stays llama.cpp's `auto`: it turns it on for a
    // quantised V cache (which needs it) and refuses the context only where
    // the device cannot run it for that type or a head size is not a
    // multiple of the type's block; that is a property of the model and the
    // settings, so retrying cannot help.
    let quantized = config.cache_type_k.is_quantized() || config.cache_type_v.is_quantized();
    model.new_context(backend, params).map_err(|e| LoadError {
        message: match quantized {
            true => format!(
                "could not create context with KV cache types K {} / V {} \
                 (llama.cpp needs flash attention for a quantised V cache and head \
                 sizes divisible by the type's block of 32; see the worker log): {e}",
                config.cache_type_k, config.cache_type_v
            ),
            false => format!("could not create context: {e}"),
        },
        permanent: quantized,
    })
}

/// Whether `model` serves embeddings only: an encoder, whose GGUF says
/// `<arch>.attention.causal = false` (BERT, nomic-bert, jina-bert…). Such a
/// model gets no generation context (see [`is_encoder`]).
pub fn embedding_only(model: &LlamaModel) -> bool {
    let arch = model.meta_val_str("general.architecture").ok();
    let causal = arch.and_then(|a| model.meta_val_str(&format!("{a}.attention.causal")).ok());
    is_encoder(causal.as_deref())
}

/// [`embedding_only`] from the `<arch>.attention.causal` value: only an
/// explicit `false` (decoders leave the key out).
pub fn is_encoder(causal: Option<&str>) -> bool {
    causal.is_some_and(|c| c.trim().eq_ignore_ascii_case("false"))
}

/// llama-cpp-2's name of a cache type.
fn kv_type(t: KvCacheType) -> LlamaKvType {
    match t {
        KvCacheType::F32 => LlamaKvType::F32,
        KvCacheType::F16 => LlamaKvType::F16,
        KvCacheType::Bf16 => LlamaKvType::BF16,
        KvCacheType::Q8_0 => LlamaKvType::Q8_0,
        KvCacheType::Q4_0 => LlamaKvType::Q4_0,
        KvCacheType::Q4_1 => LlamaKvType::Q4_1,
        KvCacheType::Iq4Nl => LlamaKvType::IQ4_NL,
        KvCacheType::Q5_0 => LlamaKvType::Q5_0,
        KvCacheType::Q5_1 => LlamaKvType::Q5_1,
    }
}

fn split_mode(m: SplitMode) -> LlamaSplitMode {
    match m {
        SplitMode::None => LlamaSplitMode::None,
        SplitMode::Layer => LlamaSplitMode::Layer,
        SplitMode::Row => LlamaSplitMode::Row,
    }
}

/// The config's template, else the GGUF's, else ChatML; compiled.
pub fn load_template(model: &LlamaModel, config: &WorkerConfig) -> Result<Template, LoadError> {
    let vocab = model.vocab();
    let special_text = |t: LlamaToken| {
        vocab
            .text(t)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (bos, eos) = (special_text(vocab.bos()), special_text(vocab.eos()));
    let gguf_template = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let source = config.chat_template.clone().or(gguf_template);
    let found = source.is_some();
    if !found {
        tracing::warn!("model has no chat template; falling back to ChatML");
    }
    let source = source.unwrap_or_else(|| CHATML.to_owned());
    let template = ChatTemplate::new(&source, &bos, &eos).map_err(|e| LoadError {
        message: format!("the chat template does not compile: {e}"),
        permanent: true,
    })?;
    Ok(Template {
        template,
        source,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::is_encoder;

    #[test]
    fn only_an_explicitly_non_causal_model_is_an_encoder() {
        let cases = [
            (None, false),
            (Some("true"), false),
            (Some("false"), true),
            (Some(" FALSE "), true),
            (Some("0"), false),
        ];
        for (causal, want) in cases {
            assert_eq!(is_encoder(causal), want, "{causal:?}");
        }
    }
}
