//! `Tokenize` and `Detokenize`: the model's vocabulary, on the engine thread
//! (it owns the model). Both are cheap next to a decode step, and the
//! supervisor caps the text and token counts it sends.
//!
//! Tokenizing parses special-token text (`<|im_end|>` is one token), as
//! llama-server's `/tokenize` does by default, and adds BOS/EOS only when
//! asked. Detokenizing writes special tokens out and refuses an id outside
//! the vocabulary before llama.cpp sees it (llama.cpp would read out of
//! bounds).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::{Event, FailureKind, RequestId};

/// The `Tokens` answer for `content`.
pub fn tokenize(model: &LlamaModel, id: RequestId, content: &str, add_special: bool) -> Event {
    let vocab = model.vocab();
    let tokens = vocab.tokenize(content.as_bytes(), add_special, true);
    let mut pieces = Vec::with_capacity(tokens.len());
    for t in &tokens {
        let mut buf = Vec::new();
        vocab.token_to_piece_into(*t, &mut buf, true, None);
        pieces.push(buf);
    }
    Event::Tokens {
        id,
        tokens: tokens.iter().map(|t| t.0).collect(),
        pieces,
    }
}

/// The `Detokenized` answer for `tokens`, or a `Failed` naming the first bad id.
pub fn detokenize(model: &LlamaModel, id: RequestId, tokens: &[i32]) -> Event {
    let vocab = model.vocab();
    if let Some(message) = out_of_vocab(tokens, vocab.n_tokens()) {
        return Event::Failed {
            id,
            kind: FailureKind::InvalidRequest,
            message,
        };
    }
    let mut bytes = Vec::new();
    for t in tokens {
        vocab.token_to_piece_into(LlamaToken(*t), &mut bytes, true, None);
    }
    Event::Detokenized {
        id,
        content: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Why `tokens` cannot be detokenized with a vocabulary of `n_vocab`, if it cannot.
fn out_of_vocab(tokens: &[i32], n_vocab: i32) -> Option<String> {
    let (i, t) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t < 0 || t >= n_vocab)?;
    Some(format!(
        "tokens[{i}] = {t} is not a token of this model (0 to {})",
        n_vocab - 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_outside_the_vocabulary_are_named() {
        assert_eq!(out_of_vocab(&[], 10), None);
        assert_eq!(out_of_vocab(&[0, 9], 10), None);
        let cases = [
            (vec![10], 0, 10),
            (vec![1, -1], 1, -1),
            (vec![3, 4, i32::MAX], 2, i32::MAX),
        ];
        for (tokens, at, bad) in cases {
            let msg = out_of_vocab(&tokens, 10).unwrap();
            assert!(msg.starts_with(&format!("tokens[{at}] = {bad} ")), "{msg}");
        }
    }
}
