//! Reranking: how one (query, document) pair becomes one sequence of tokens
//! for a rank-pooling model, exactly as llama-server's `format_prompt_rerank`
//! lays it out, so a GGUF scores the same here as there.
//!
//! - With a `rerank` template in the GGUF (`tokenizer.chat_template.rerank`),
//!   `{query}` and `{document}` in it are replaced by the texts and the
//!   result is tokenized with special-token text parsed and nothing added
//!   ([`fill_template`]). The replacement is one pass: a query that contains
//!   `{document}` stays as it is (llama-server's two passes would replace it).
//! - Otherwise the pair is `BOS query EOS SEP document EOS`, each special
//!   token present only when the vocabulary adds it when tokenizing
//!   (`add_bos`, `add_eos`, `add_sep`), with SEP standing in for a missing EOS
//!   ([`pair_tokens`]). For a BERT cross-encoder that is `[CLS] q [SEP] d
//!   [SEP]`, what its Hugging Face tokenizer makes of the pair.
//!
//! The pooled output of the sequence (llama.cpp's rank pooling: the first
//! token through the classifier head) is the pair's score; the embeddings
//! context in `embed` evaluates it, one pair per engine turn.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// The special tokens a pair is framed with, each `None` when the vocabulary
/// does not add it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing<T> {
    pub bos: Option<T>,
    /// EOS, or SEP where the vocabulary has no EOS.
    pub eos: Option<T>,
    pub sep: Option<T>,
}

/// `BOS query EOS SEP doc EOS`, leaving out what `framing` lacks.
pub fn pair_tokens<T: Copy>(query: &[T], doc: &[T], framing: &Framing<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(query.len() + doc.len() + 4);
    out.extend(framing.bos);
    out.extend_from_slice(query);
    out.extend(framing.eos);
    out.extend(framing.sep);
    out.extend_from_slice(doc);
    out.extend(framing.eos);
    out
}

/// `template` with `{query}` and `{document}` replaced, in one pass.
pub fn fill_template(template: &str, query: &str, doc: &str) -> String {
    let mut out = String::with_capacity(template.len() + query.len() + doc.len());
    let mut rest = template;
    loop {
        let q = rest.find("{query}").map(|i| (i, "{query}", query));
        let d = rest.find("{document}").map(|i| (i, "{document}", doc));
        let next = match (q, d) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((at, key, text)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str(text);
        rest = &rest[at + key.len()..];
    }
}

/// How `model` frames a pair without a template.
pub fn framing(model: &LlamaModel) -> Framing<LlamaToken> {
    let vocab = model.vocab();
    let some = |t: LlamaToken| (t.0 >= 0).then_some(t);
    let eos = some(vocab.eos()).or_else(|| some(vocab.sep()));
    Framing {
        bos: vocab.should_add_bos().then(|| some(vocab.bos())).flatten(),
        eos: vocab.should_add_eos().then_some(eos).flatten(),
        sep: vocab.should_add_sep().then(|| some(vocab.sep())).flatten(),
    }
}

/// The GGUF's `rerank` template, if it has one.
pub fn template(model: &LlamaModel) -> Option<String> {
    model
        .chat_template(Some("rerank"))
        .ok()
        .and_then(|t| t.to_string().ok())
}

/// The tokens of the pair (`query`, `doc`) for `model`.
pub fn tokens(
    model: &LlamaModel,
    template: Option<&str>,
    query: &str,
    doc: &str,
) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    match template {
        Some(t) => vocab.tokenize(fill_template(t, query, doc).as_bytes(), false, true),
        None => pair_tokens(
            &vocab.tokenize(query.as_bytes(), false, false),
            &vocab.tokenize(doc.as_bytes(), false, false),
            &framing(model),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_framed_as_the_vocabulary_adds_special_tokens() {
        let (q, d) = ([10, 11], [20]);
        let f = |bos, eos, sep| Framing { bos, eos, sep };
        let cases = [
            // BERT (the converter writes add_bos, add_eos; EOS is [SEP]).
            (
                f(Some(101), Some(102), None),
                vec![101, 10, 11, 102, 20, 102],
            ),
            // add_sep too (XLM-RoBERTa style): EOS then SEP between.
            (f(Some(0), Some(2), Some(2)), vec![0, 10, 11, 2, 2, 20, 2]),
            // Nothing added (a decoder reranker without a template).
            (f(None, None, None), vec![10, 11, 20]),
            (f(Some(1), None, None), vec![1, 10, 11, 20]),
        ];
        for (framing, want) in cases {
            assert_eq!(pair_tokens(&q, &d, &framing), want, "{framing:?}");
        }
    }

    #[test]
    fn a_rerank_template_gets_the_query_and_the_document_once() {
        let cases = [
            (
                "<q>{query}</q><d>{document}</d>",
                "a",
                "b",
                "<q>a</q><d>b</d>",
            ),
            ("{document}|{query}", "a", "b", "b|a"),
            ("{query}{query}", "a", "b", "aa"),
            ("no slots", "a", "b", "no slots"),
            // Texts are not searched again.
            (
                "{query}/{document}",
                "{document}",
                "{query}",
                "{document}/{query}",
            ),
            ("{quer{query}y}", "x", "", "{querxy}"),
        ];
        for (template, q, d, want) in cases {
            assert_eq!(fill_template(template, q, d), want, "{template:?}");
        }
    }
}
