//! The cost of grammar-constrained decoding: single-stream decode of one chat
//! prompt with the worker's own sampler chain (`build_sampler`, compiled in
//! from `src/sampling.rs`) and context settings, no IPC and no HTTP, in three
//! modes:
//!
//! - `none`: no grammar;
//! - `json_object`: the schema `{"type":"object"}`, what the supervisor sends
//!   for `response_format: {"type": "json_object"}`;
//! - `schema`: a realistic nested schema (enum, bounded integer, array of
//!   objects, required and optional fields),
//!
//! each greedy and at temperature 0.8 (top-k 40, top-p 0.95, min-p 0.05, fixed
//! seed). Runs alternate between the modes (A B C, A B C, ...) so that drift of
//! a shared machine hits all alike. `bench/constrained.sh` builds and runs it.
//!
//! `constrained_decode MODEL [GEN_TOKENS=128] [THREADS=0] [RUNS=5]`
//!
//! Prints JSON lines: one per schema with the time to convert it to GBNF and
//! to create the grammar sampler (medians over RUNS), then one per mode and
//! sampling with the tokens actually generated (generation stops at
//! GEN_TOKENS or at an end-of-generation token, which a grammar forces once
//! its value is complete) and tokens/s over them (median, min, max), split
//! into time per token spent in the sampler chain (wall and this thread's CPU
//! time, which a busy machine does not inflate) and in `llama_decode`.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llm_node_protocol::{Constraint, SamplingParams};

// The worker is a binary crate; compile its sampling module in here so the
// benchmark runs exactly the chain the worker builds.
#[path = "../src/sampling.rs"]
#[allow(dead_code)]
mod sampling;
#[path = "../src/schema.rs"]
#[allow(dead_code)]
mod schema;

const PROMPT: &str = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
<|im_start|>user\nDescribe a fictional member of a software team as JSON: their name, \
age, role (admin, editor or viewer), whether they are active, and up to three projects \
they work on, each with a title and a number of stars.<|im_end|>\n<|im_start|>assistant\n";

const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 40},
    "age": {"type": "integer", "minimum": 18, "maximum": 99},
    "role": {"enum": ["admin", "editor", "viewer"]},
    "active": {"type": "boolean"},
    "projects": {
      "type": "array",
      "minItems": 1,
      "maxItems": 3,
      "items": {
        "type": "object",
        "properties": {
          "title": {"type": "string"},
          "stars": {"type": "integer", "minimum": 0}
        },
        "required": ["title", "stars"],
        "additionalProperties": false
      }
    }
  },
  "required": ["name", "age", "role", "projects"],
  "additionalProperties": false
}"#;

const MODES: [(&str, Option<&str>); 3] = [
    ("none", None),
    ("json_object", Some(r#"{"type":"object"}"#)),
    ("schema", Some(SCHEMA)),
];
const SAMPLINGS: [&str; 2] = ["greedy", "temp0.8"];
const SEED: u32 = 1234;

/// One decode run's measurements.
struct Run {
    tokens: usize,
    tps: f64,
    sample_ms: f64,
    sample_cpu_ms: f64,
    decode_ms: f64,
    text: String,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: constrained_decode MODEL [GEN_TOKENS] [THREADS] [RUNS]");
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_gen, threads, runs) = (arg(2, 128), arg(3, 0), arg(4, 5).max(1));
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    } as i32;

    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())?;
    // The worker's settings for one sequence (as in raw_decode).
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(1)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params)?;
    let prompt = model.vocab().tokenize(PROMPT.as_bytes(), false, true);

    for (name, schema) in MODES.iter().filter_map(|(n, s)| Some((n, (*s)?))) {
        setup_cost(&model, name, schema, runs)?;
    }

    // results[sampling][mode]: one entry per run.
    let mut results: Vec<Vec<Vec<Run>>> = SAMPLINGS
        .iter()
        .map(|_| MODES.iter().map(|_| Vec::new()).collect())
        .collect();
    for _ in 0..runs {
        for (s, sampling) in SAMPLINGS.iter().enumerate() {
            for (m, (_, schema)) in MODES.iter().enumerate() {
                let p = sampling_params(sampling, *schema);
                let run = decode(&model, &mut ctx, &prompt, &p, n_gen)?;
                results[s][m].push(run);
            }
        }
    }

    for (s, sampling) in SAMPLINGS.iter().enumerate() {
        for (m, (mode, _)) in MODES.iter().enumerate() {
            report(mode, sampling, &results[s][m], prompt.len(), threads);
        }
    }
    Ok(())
}

/// The request's sampling parameters: greedy or the OpenAI-style defaults
/// with a fixed seed (so every run generates the same tokens).
fn sampling_params(sampling: &str, schema: Option<&str>) -> SamplingParams {
    SamplingParams {
        temperature: if sampling == "greedy" { 0.0 } else { 0.8 },
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        seed: Some(SEED),
        constraint: schema.map(|s| Constraint::JsonSchema(s.to_owned())),
        ..SamplingParams::default()
    }
}

/// Prefill the prompt, then generate up to `n_gen` tokens, timing the
/// generation only (sampler chain and decode separately).
fn decode(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    prompt: &[LlamaToken],
    p: &SamplingParams,
    n_gen: usize,
) -> anyhow::Result<Run> {
    let vocab = model.vocab();
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(512, 1);
    batch.add_sequence(prompt, 0, false)?;
    ctx.decode(&mut batch)?;

    let mut sampler = sampling::build_sampler(model, p)?;
    let mut idx = batch.n_tokens() - 1;
    let (mut sample_s, mut sample_cpu_s, mut decode_s) = (0.0, 0.0, 0.0);
    let mut text = Vec::new();
    let mut tokens = 0;
    let t0 = Instant::now();
    while tokens < n_gen {
        let (ts, cpu) = (Instant::now(), thread_cpu_s());
        // `sample` applies the whole chain and accepts the token (grammar included).
        let token = sampler.sample(ctx, idx);
        sample_s += ts.elapsed().as_secs_f64();
        sample_cpu_s += thread_cpu_s() - cpu;
        if vocab.is_eog(token) {
            break;
        }
        text.extend(vocab.token_to_piece(token, false, None));
        let td = Instant::now();
        batch.clear();
        batch.add(token, (prompt.len() + tokens) as i32, &[0], true)?;
        ctx.decode(&mut batch)?;
        decode_s += td.elapsed().as_secs_f64();
        idx = 0;
        tokens += 1;
    }
    let total = t0.elapsed().as_secs_f64();
    let per = |s: f64| s * 1e3 / tokens.max(1) as f64;
    Ok(Run {
        tokens,
        tps: tokens as f64 / total,
        sample_ms: per(sample_s),
        sample_cpu_ms: per(sample_cpu_s),
        decode_ms: per(decode_s),
        text: String::from_utf8_lossy(&text).into_owned(),
    })
}

/// Time `json_schema_to_grammar` and the grammar sampler's creation.
fn setup_cost(model: &LlamaModel, name: &str, schema: &str, runs: usize) -> anyhow::Result<()> {
    let (mut convert, mut init) = (Vec::new(), Vec::new());
    let mut gbnf = String::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        gbnf = llama_cpp_2::json_schema_to_grammar(schema)?;
        convert.push(t0.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        let sampler = LlamaSampler::grammar(model, &gbnf, "root")?;
        init.push(t1.elapsed().as_secs_f64() * 1e3);
        drop(sampler);
    }
    println!(
        "{}",
        serde_json::json!({
            "schema": name,
            "gbnf_rules": gbnf.lines().filter(|l| l.contains("::=")).count(),
            "gbnf_bytes": gbnf.len(),
            "convert_ms": round3(median(&mut convert)),
            "sampler_init_ms": round3(median(&mut init)),
        })
    );
    Ok(())
}

fn report(mode: &str, sampling: &str, runs: &[Run], prompt_tokens: usize, threads: i32) {
    let stats = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let tps = stats(|r| r.tps);
    let sample = stats(|r| r.sample_ms);
    let sample_cpu = stats(|r| r.sample_cpu_ms);
    let decode = stats(|r| r.decode_ms);
    let last = &runs[runs.len() - 1];
    let valid_json = serde_json::from_str::<serde_json::Value>(last.text.trim()).is_ok();
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "sampling": sampling,
            "prompt_tokens": prompt_tokens,
            "threads": threads,
            "runs": runs.len(),
            "gen_tokens": stats(|r| r.tokens as f64).0,
            "tg_tps": round1(tps.0),
            "tg_tps_min": round1(tps.1),
            "tg_tps_max": round1(tps.2),
            "sample_ms_per_token": round3(sample.0),
            "sample_ms_per_token_min": round3(sample.1),
            "sample_cpu_ms_per_token": round3(sample_cpu.0),
            "decode_ms_per_token": round3(decode.0),
            "decode_ms_per_token_min": round3(decode.1),
            "valid_json": valid_json,
        })
    );
    eprintln!("{mode} {sampling}: {:?}", last.text);
}

/// CPU time of the calling thread: what the sampler chain costs, whatever
/// else the machine runs (the chain runs on this thread only).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
