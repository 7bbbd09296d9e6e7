//! Embeddings: a second llama.cpp context, made on the first `Embed` request,
//! that turns one input at a time into a pooled, L2-normalised vector.
//!
//! Pooling is the model's own: the `<arch>.pooling_type` its GGUF declares
//! (mean, CLS or last token; the converter writes it from the checkpoint's
//! sentence-transformers config), and mean for a model that declares none (a
//! chat model asked for embeddings). A model that declares `none` yields one
//! vector per token of each input, not normalised (as llama-server's
//! `/embeddings` sends them), in a `TokenEmbeddings` event. A rank-pooling
//! model (a reranker) serves only `Rerank`: each (query, document) pair is
//! one input, laid out by `rerank`, and yields its classifier score(s), not
//! normalised; it refuses `Embed`, and a model of any other pooling refuses
//! `Rerank`. See [`pooling_for`].
//!
//! An input is text (tokenized with the model's BOS/EOS) or token ids,
//! embedded unchanged once each id is checked against the vocabulary.
//!
//! A request is an [`EmbedJob`] that the engine advances by one input per
//! turn of its loop, between decode steps: a batch of long inputs used to
//! run in one go and stall every stream (and `Ping`) for its whole length.
//! The job collects the vectors in input order and yields one `Embeddings`
//! event at the end, or a `Failed` for the first input that cannot be
//! embedded. An input is refused untokenized when its bytes alone show that
//! it cannot fit (see `prep::max_prompt_bytes`), unless the request says
//! `truncate` (Ollama's default): then it is cut to those bytes, and its
//! tokens to the context.
//!
//! The context is separate from the generation context because pooled
//! embeddings need a whole input in one micro-batch (`n_ubatch` =
//! `ctx_per_slot`), which would make every generation step's buffers large;
//! a model only used for chat never pays for it. It lives on the engine
//! thread (`LlamaContext` is `!Send`) and is only touched between decode steps.

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::{EmbedInput, Event, FailureKind, RequestId};

use crate::prep::max_prompt_bytes;
use crate::rerank;

/// An embeddings request (or one of its inputs) cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EmbedError {
    pub kind: FailureKind,
    pub message: String,
}

impl EmbedError {
    fn new(kind: FailureKind, message: String) -> Self {
        Self { kind, message }
    }
}

/// The pooling for a model whose GGUF says `declared` for
/// `<arch>.pooling_type` (llama.cpp's numbers: 0 none, 1 mean, 2 CLS, 3 last,
/// 4 rank): the declared one, mean when absent or unknown.
pub fn pooling_for(declared: Option<&str>) -> LlamaPoolingType {
    match declared.map(str::trim) {
        Some("0") => LlamaPoolingType::None,
        Some("2") => LlamaPoolingType::Cls,
        Some("3") => LlamaPoolingType::Last,
        Some("4") => LlamaPoolingType::Rank,
        _ => LlamaPoolingType::Mean,
    }
}

/// [`pooling_for`] of `model`'s metadata.
pub fn model_pooling(model: &LlamaModel) -> LlamaPoolingType {
    let arch = model.meta_val_str("general.architecture").ok();
    let declared = arch.and_then(|a| model.meta_val_str(&format!("{a}.pooling_type")).ok());
    pooling_for(declared.as_deref())
}

/// The embeddings context's parameters: one sequence of `ctx_per_slot`
/// tokens, evaluated in one micro-batch, pooled with `pooling`.
pub fn context_params(
    ctx_per_slot: u32,
    n_threads: i32,
    pooling: LlamaPoolingType,
) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(ctx_per_slot))
        .with_n_batch(ctx_per_slot)
        .with_n_ubatch(ctx_per_slot)
        .with_n_seq_max(1)
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_threads(n_threads)
        .with_n_threads_batch(n_threads)
}

/// The embeddings side of the engine.
pub struct Embedder<'m> {
    backend: &'m LlamaBackend,
    model: &'m LlamaModel,
    /// `None` when embeddings are disabled for this model.
    params: Option<LlamaContextParams>,
    /// The context and a batch as large as its micro-batch, once made.
    ctx: Option<(LlamaContext<'m>, LlamaBatch<'static>)>,
    /// See `prep::bytes_per_token`.
    bytes_per_token: Option<usize>,
    /// Scores of a rank-pooling model are not normalised.
    normalise: bool,
    /// Pooling `none`: one vector per token, not normalised.
    per_token: bool,
    /// A rank-pooling model (a reranker): its outputs are scores.
    rank: bool,
    /// The reranker's `rerank` template, if its GGUF has one.
    rerank_template: Option<String>,
    /// The model's public name, for messages.
    name: String,
}

/// An embeddings request in progress.
pub struct EmbedJob {
    pub id: RequestId,
    /// The inputs to embed, or the documents to score against `query`.
    inputs: Vec<EmbedInput>,
    /// A `Rerank` request's query.
    query: Option<String>,
    /// Cut inputs longer than the context instead of refusing them.
    truncate: bool,
    /// Per input: its pooled vector, or one per token (pooling `none`).
    vectors: Vec<Vec<Vec<f32>>>,
    prompt_tokens: u32,
    per_token: bool,
}

impl EmbedJob {
    pub fn new(id: RequestId, inputs: Vec<EmbedInput>, truncate: bool) -> Self {
        Self {
            id,
            vectors: Vec::with_capacity(inputs.len()),
            inputs,
            query: None,
            truncate,
            prompt_tokens: 0,
            per_token: false,
        }
    }

    /// A `Rerank` request: each document scored against `query`.
    pub fn rerank(id: RequestId, query: String, documents: Vec<String>) -> Self {
        let documents = documents.into_iter().map(EmbedInput::Text).collect();
        Self {
            query: Some(query),
            ..Self::new(id, documents, false)
        }
    }

    /// The `Embeddings` (or `TokenEmbeddings`) event once every input is embedded.
    pub fn result(&mut self) -> Option<Event> {
        if self.vectors.len() != self.inputs.len() {
            return None;
        }
        let vectors = std::mem::take(&mut self.vectors);
        let (id, prompt_tokens) = (self.id, self.prompt_tokens);
        Some(match self.per_token {
            true => Event::TokenEmbeddings {
                id,
                inputs: vectors,
                prompt_tokens,
            },
            false => Event::Embeddings {
                id,
                vectors: vectors.into_iter().flatten().collect(),
                prompt_tokens,
            },
        })
    }
}

impl<'m> Embedder<'m> {
    pub fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        params: Option<LlamaContextParams>,
        bytes_per_token: Option<usize>,
        name: &str,
    ) -> Self {
        let rank = model_pooling(model) == LlamaPoolingType::Rank;
        Self {
            backend,
            model,
            params,
            ctx: None,
            bytes_per_token,
            normalise: !matches!(
                model_pooling(model),
                LlamaPoolingType::Rank | LlamaPoolingType::None
            ),
            per_token: model_pooling(model) == LlamaPoolingType::None,
            rank,
            rerank_template: rank.then(|| rerank::template(model)).flatten(),
            name: name.to_string(),
        }
    }

    /// Refuses `job` when the model's pooling does not fit it: a reranker
    /// only scores pairs, any other model only embeds.
    ///
    /// # Errors
    /// [`EmbedError`] (`InvalidRequest`) naming the model.
    pub fn accepts(&self, job: &EmbedJob) -> Result<(), EmbedError> {
        let message = match (self.rank, job.query.is_some()) {
            (true, false) => format!(
                "model {} is a reranking model: it scores pairs (use /v1/rerank), it does not embed",
                self.name
            ),
            (false, true) => format!("model {} is not a reranking model", self.name),
            _ => return Ok(()),
        };
        Err(EmbedError::new(FailureKind::InvalidRequest, message))
    }

    pub fn enabled(&self) -> bool {
        self.params.is_some()
    }

    /// Makes the context if it does not exist yet.
    ///
    /// # Errors
    /// [`EmbedError`]: `InvalidRequest` when embeddings are disabled,
    /// `Internal` when llama.cpp cannot make the context.
    pub fn ready(&mut self) -> Result<(), EmbedError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let Some(params) = self.params.clone() else {
            return Err(EmbedError::new(
                FailureKind::InvalidRequest,
                "embeddings are disabled for this model".into(),
            ));
        };
        let ctx = self.model.new_context(self.backend, params).map_err(|e| {
            EmbedError::new(
                FailureKind::Internal,
                format!("could not create the embeddings context: {e}"),
            )
        })?;
        let batch = LlamaBatch::new(ctx.n_batch() as usize, 1);
        self.ctx = Some((ctx, batch));
        Ok(())
    }

    /// The largest input in tokens (0 before [`Embedder::ready`]).
    pub fn max_tokens(&self) -> usize {
        self.ctx
            .as_ref()
            .map_or(0, |(ctx, _)| ctx.n_batch() as usize)
    }

    /// Embeds the next input of `job` (none left: nothing to do).
    ///
    /// # Errors
    /// As [`Embedder::embed`]; the job is then over.
    pub fn advance(&mut self, job: &mut EmbedJob) -> Result<(), EmbedError> {
        let n = job.vectors.len();
        let Some(input) = job.inputs.get(n) else {
            return Ok(());
        };
        let (vectors, tokens) = self.embed(n, job.query.as_deref(), input, job.truncate)?;
        job.vectors.push(vectors);
        job.prompt_tokens += tokens;
        job.per_token = self.per_token;
        Ok(())
    }

    /// Embeds `input`, number `n` of its request (for messages), and returns
    /// its vector (the unit vector; one per token for pooling `none`) and its
    /// token count; with a `query`, scores the pair (`query`, `input`) instead
    /// and returns the raw scores. With `truncate`, an input longer than the context is
    /// embedded from its first tokens (its bytes beyond what the context could
    /// cover are not even tokenized).
    ///
    /// # Errors
    /// [`EmbedError`]: `InvalidRequest` for an empty input or a token id
    /// outside the vocabulary, `PromptTooLong` for one longer than the context
    /// (without `truncate`), `Internal` when llama.cpp fails (or
    /// [`Embedder::ready`] was not called).
    fn embed(
        &mut self,
        n: usize,
        query: Option<&str>,
        input: &EmbedInput,
        truncate: bool,
    ) -> Result<(Vec<Vec<f32>>, u32), EmbedError> {
        let limit = self.max_tokens();
        let mut tokens = match input {
            EmbedInput::Text(text) => self.tokenize(n, query, text, truncate)?,
            EmbedInput::Tokens(ids) => {
                if let Some(message) = outside_vocab(n, ids, self.model.n_vocab()) {
                    return Err(EmbedError::new(FailureKind::InvalidRequest, message));
                }
                ids.iter().map(|&t| LlamaToken(t)).collect()
            }
        };
        if truncate {
            tokens.truncate(limit);
        }
        if tokens.is_empty() {
            let message = format!("input[{n}] is empty");
            return Err(EmbedError::new(FailureKind::InvalidRequest, message));
        }
        if tokens.len() > limit {
            let message = format!(
                "input[{n}] has {} tokens but the embedding context holds {limit}",
                tokens.len()
            );
            return Err(EmbedError::new(FailureKind::PromptTooLong, message));
        }
        let internal = |message: String| EmbedError::new(FailureKind::Internal, message);
        let (ctx, batch) = self
            .ctx
            .as_mut()
            .ok_or_else(|| internal("no context".into()))?;
        ctx.clear_kv_cache();
        batch.clear();
        let per_token = self.per_token;
        if batch.add_sequence(&tokens, 0, per_token).is_err() {
            return Err(internal("batch overflow".into()));
        }
        let normalise = self.normalise;
        let vectors = ctx
            .decode(batch)
            .map_err(|e| e.to_string())
            .and_then(|()| match per_token {
                true => (0..tokens.len() as i32)
                    .map(|i| {
                        ctx.embeddings_ith(i)
                            .map(<[f32]>::to_vec)
                            .map_err(|e| e.to_string())
                    })
                    .collect(),
                false => ctx
                    .embeddings_seq_ith(0)
                    .map(|v| match normalise {
                        true => vec![normalize(v)],
                        false => vec![v.to_vec()],
                    })
                    .map_err(|e| e.to_string()),
            })
            .map_err(|e| internal(format!("embedding failed: {e}")))?;
        Ok((vectors, tokens.len() as u32))
    }

    /// The tokens of text input `n` (with a `query`: the pair laid out as
    /// llama-server does), refused untokenized when its bytes alone cannot
    /// fit (cut to them with `truncate`).
    fn tokenize(
        &self,
        n: usize,
        query: Option<&str>,
        input: &str,
        truncate: bool,
    ) -> Result<Vec<LlamaToken>, EmbedError> {
        let limit = self.max_tokens();
        let max_bytes = max_prompt_bytes(limit, self.bytes_per_token);
        let input = match truncate {
            true => prefix(input, max_bytes),
            false => input,
        };
        let bytes = input.len() + query.map_or(0, str::len);
        if bytes > max_bytes {
            let message = format!(
                "input[{n}] has {bytes} bytes, more than the {limit} tokens of the embedding context can cover",
            );
            return Err(EmbedError::new(FailureKind::PromptTooLong, message));
        }
        Ok(match query {
            Some(q) => rerank::tokens(self.model, self.rerank_template.as_deref(), q, input),
            None => self.model.vocab().tokenize(input.as_bytes(), true, false),
        })
    }
}

/// Why token input `n` cannot be embedded by a vocabulary of `n_vocab`, if it cannot.
fn outside_vocab(n: usize, ids: &[i32], n_vocab: i32) -> Option<String> {
    let (i, t) = ids
        .iter()
        .enumerate()
        .find(|(_, &t)| t < 0 || t >= n_vocab)?;
    Some(format!(
        "input[{n}][{i}] is token {t}, outside the model's vocabulary (0..{n_vocab})"
    ))
}

/// The longest prefix of `s` of at most `max` bytes, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_is_the_declared_one_and_mean_otherwise() {
        let cases = [
            (None, LlamaPoolingType::Mean),
            (Some("0"), LlamaPoolingType::None),
            (Some("1"), LlamaPoolingType::Mean),
            (Some("2"), LlamaPoolingType::Cls),
            (Some("3"), LlamaPoolingType::Last),
            (Some("4"), LlamaPoolingType::Rank),
            (Some("7"), LlamaPoolingType::Mean),
            (Some("x"), LlamaPoolingType::Mean),
        ];
        for (declared, want) in cases {
            assert_eq!(pooling_for(declared), want, "{declared:?}");
        }
    }

    #[test]
    fn token_ids_outside_the_vocabulary_are_named() {
        assert_eq!(outside_vocab(0, &[0, 5, 9], 10), None);
        assert_eq!(outside_vocab(0, &[], 10), None);
        let cases = [
            (vec![1, 10], "input[2][1] is token 10"),
            (vec![-1], "input[2][0] is token -1"),
        ];
        for (ids, want) in cases {
            let got = outside_vocab(2, &ids, 10).unwrap();
            assert!(got.starts_with(want) && got.ends_with("(0..10)"), "{got}");
        }
    }

    #[test]
    fn normalize_gives_unit_length() {
        let v = normalize(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn a_truncated_input_is_cut_at_a_character_boundary() {
        let cases = [
            ("hello", 10, "hello"),
            ("hello", 5, "hello"),
            ("hello", 3, "hel"),
            ("héllo", 2, "h"),
            ("héllo", 3, "hé"),
            ("日本", 4, "日"),
            ("", 0, ""),
            ("abc", 0, ""),
        ];
        for (input, max, want) in cases {
            assert_eq!(prefix(input, max), want, "{input:?} {max}");
        }
    }
}
