//! Per-sequence sampling: the sampler chain (logit bias, penalties, grammar,
//! truncation, temperature) and the log-probabilities reported to clients.
//!
//! Grammars come from [`Constraint`]s: a JSON schema is turned into GBNF by
//! llama.cpp's own converter (`json_schema_to_grammar`, the `common` feature
//! of llama-cpp-2), so what `response_format` and forced tool calls accept is
//! exactly what llama-server accepts.
//!
//! # Grammar cost
//! Applying a grammar to the whole vocabulary costs milliseconds per token
//! (4–6 ms on the 49k-token bundled model, measured in docs/benchmarks.md;
//! gpt-oss has 201k tokens). [`Sampler::sample`] therefore does what
//! llama-server's `common_sampler` does: sample with the chain alone, check
//! only the chosen token against the grammar, and only when the grammar
//! rejects it apply the grammar to every candidate and sample again. The
//! result is always grammatical; most tokens cost one check.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::{Constraint, SamplingParams};

/// A constraint could not be turned into a grammar sampler.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    #[error("the JSON schema cannot be converted to a grammar: {0}")]
    Schema(String),
    #[error("the grammar is not valid GBNF (llama.cpp rejected it)")]
    Grammar,
}

/// One sequence's sampling: the chain, and the grammar apart from it.
pub struct Sampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl Sampler {
    /// A chain without a grammar.
    #[cfg(test)]
    pub fn plain(chain: LlamaSampler) -> Self {
        Self {
            chain,
            grammar: None,
        }
    }

    /// Samples the token at batch index `idx` and accepts it into every
    /// sampler (never call `accept` again: grammars would advance twice).
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        let Some(grammar) = &mut self.grammar else {
            return self.chain.sample(ctx, idx);
        };
        let mut cur = LlamaTokenDataArray::from_iter(ctx.candidates_ith(idx), false);
        cur.apply_sampler(&mut self.chain);
        let chosen = cur.selected_token();
        let legal = chosen.is_some_and(|t| {
            let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(t, 1.0, 0.0)], false);
            one.apply_sampler(grammar);
            one.data[0].logit().is_finite()
        });
        let token = match chosen {
            Some(t) if legal => t,
            _ => {
                let mut cur = LlamaTokenDataArray::from_iter(ctx.candidates_ith(idx), false);
                cur.apply_sampler(grammar);
                cur.apply_sampler(&mut self.chain);
                // The chain always selects; if it ever did not, take the
                // most likely token the grammar allows.
                cur.selected_token().unwrap_or_else(|| {
                    cur.data
                        .iter()
                        .filter(|d| d.logit().is_finite())
                        .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                        .map_or(LlamaToken(0), LlamaTokenData::id)
                })
            }
        };
        grammar.accept(token);
        self.chain.accept(token);
        token
    }
}

/// The sampler for one sequence, in llama-server's order.
///
/// # Errors
/// [`GrammarError`] when the request's constraint is not a usable grammar.
pub fn build_sampler(model: &LlamaModel, p: &SamplingParams) -> Result<Sampler, GrammarError> {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::with_capacity(8);
    if !p.logit_bias.is_empty() {
        let biases: Vec<_> = p
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.penalty_last_n,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    let grammar = match &p.constraint {
        Some(constraint) => Some(grammar_sampler(model, constraint)?),
        None => None,
    };
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed.unwrap_or_else(rand::random)));
    }
    Ok(Sampler {
        chain: LlamaSampler::chain_simple(chain),
        grammar,
    })
}

fn grammar_sampler(model: &LlamaModel, c: &Constraint) -> Result<LlamaSampler, GrammarError> {
    match c {
        Constraint::JsonSchema(schema) => {
            let gbnf = schema_to_gbnf(schema)?;
            LlamaSampler::grammar(model, &gbnf, "root").map_err(|_| GrammarError::Grammar)
        }
        Constraint::Grammar(gbnf) => {
            LlamaSampler::grammar(model, gbnf, "root").map_err(|_| GrammarError::Grammar)
        }
        Constraint::LazyJsonSchema {
            trigger,
            schema,
            suffix,
        } => {
            let gbnf = wrap_json_grammar(&schema_to_gbnf(schema)?, trigger, suffix);
            LlamaSampler::grammar_lazy(model, &gbnf, "root", [trigger.as_bytes()], &[])
                .map_err(|_| GrammarError::Grammar)
        }
    }
}

fn schema_to_gbnf(schema: &str) -> Result<String, GrammarError> {
    let convert = |s: &str| {
        llama_cpp_2::json_schema_to_grammar(s).map_err(|e| match e.to_string() {
            // llama.cpp's converter only reports an error code; say it in words.
            s if s.contains("ffi error") => "unsupported or invalid schema".to_owned(),
            s => s,
        })
    };
    let mut gbnf = crate::schema::to_gbnf(schema, convert).map_err(GrammarError::Schema)?;
    if gbnf.contains("bounded-number-")
        && !gbnf.contains("\nspace ::=")
        && !gbnf.starts_with("space ::=")
    {
        gbnf.push_str("space ::= | \" \" | \"\\n\"{1,2} [ \\t]{0,20}\n");
    }
    Ok(gbnf)
}

/// Turns the grammar of one JSON value (root rule `root`) into the grammar
/// of `trigger value suffix`, repeated: tool calls written in a family's
/// syntax (`<tool_call>{..}</tool_call>`) under a lazy grammar that starts at
/// the trigger.
pub fn wrap_json_grammar(json_gbnf: &str, trigger: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(json_gbnf.len() + 128);
    for line in json_gbnf.lines() {
        match line.strip_prefix("root ::=") {
            Some(rest) => {
                out.push_str("tc-value ::=");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    let call = format!(
        "{} tc-ws tc-value tc-ws {}",
        gbnf_literal(trigger),
        gbnf_literal(suffix)
    );
    out.push_str(&format!("root ::= {call} (tc-ws {call})*\n"));
    out.push_str("tc-ws ::= [ \\t\\n]*\n");
    out
}

/// A GBNF string literal matching `s` exactly.
fn gbnf_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The log-probability of `chosen` under `logits` (the model's raw
/// distribution, before any sampler, as OpenAI reports it) and the `top` most
/// likely tokens, most likely first.
pub fn logprobs(logits: &[f32], chosen: usize, top: usize) -> (f32, Vec<(usize, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = max + sum.ln() as f32;
    let lp = |t: usize| logits[t] - log_z;
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (t, &l) in logits.iter().enumerate() {
            if best.len() == top && l <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (t, l));
            best.truncate(top);
        }
    }
    let best = best.into_iter().map(|(t, _)| (t, lp(t))).collect();
    (lp(chosen), best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_top_tokens_in_order() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let (lp, top) = logprobs(&logits, 2, 3);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp - (2.0f32.exp() / z).ln()).abs() < 1e-5);
        let ids: Vec<_> = top.iter().map(|&(t, _)| t).collect();
        assert_eq!(ids, vec![1, 3, 2], "ties keep token order");
        assert!((top[0].1 - (3.0f32.exp() / z).ln()).abs() < 1e-5);
        let total: f32 = logits.iter().map(|&l| (l - z.ln()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(logprobs(&logits, 0, 0).1.is_empty());
    }

    #[test]
    fn a_json_grammar_is_wrapped_between_trigger_and_suffix() {
        let g = wrap_json_grammar(
            "root ::= \"{\" space \"}\"\nspace ::= \" \"?\n",
            "<tool_call>",
            "</tool_call>",
        );
        assert!(g.contains("tc-value ::= \"{\" space \"}\""), "{g}");
        assert!(
            g.contains("root ::= \"<tool_call>\" tc-ws tc-value tc-ws \"</tool_call>\""),
            "{g}"
        );
        assert!(g.contains("space ::= \" \"?"), "{g}");
        assert_eq!(g.matches("root ::=").count(), 1);
    }

    #[test]
    fn gbnf_literals_escape_quotes_backslashes_and_newlines() {
        assert_eq!(gbnf_literal("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
