//! The raw-engine limit: single-stream greedy decode with the same llama.cpp
//! build, context settings and sampler as the worker, but no IPC and no HTTP.
//! `bench/run.sh` compares llm-node's single-stream tokens/s with this.
//!
//! `raw_decode MODEL [PROMPT_TOKENS=32] [GEN_TOKENS=64] [THREADS=0] [RUNS=3]`
//! prints one JSON line: {"prompt_tokens", "gen_tokens", "pp_tps", "tg_tps"} (medians).

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: raw_decode MODEL [PROMPT] [GEN] [THREADS] [RUNS]");
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_prompt, n_gen, threads, runs) = (arg(2, 32), arg(3, 64), arg(4, 0), arg(5, 3));
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    } as i32;

    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())?;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(1024))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(1)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params)?;
    let vocab = model.vocab();
    let words = "the quick brown fox jumps over a lazy dog while it rains ".repeat(64);
    let mut prompt = vocab.tokenize(words.as_bytes(), true, false);
    prompt.truncate(n_prompt);

    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(512, 1);
        batch.add_sequence(&prompt, 0, false)?;
        let t0 = Instant::now();
        ctx.decode(&mut batch)?;
        pp.push(prompt.len() as f64 / t0.elapsed().as_secs_f64());

        let mut sampler = LlamaSampler::greedy();
        let mut idx = batch.n_tokens() - 1;
        let t1 = Instant::now();
        for i in 0..n_gen {
            let token = sampler.sample(&ctx, idx);
            batch.clear();
            batch.add(token, (prompt.len() + i) as i32, &[0], true)?;
            ctx.decode(&mut batch)?;
            idx = 0;
        }
        tg.push(n_gen as f64 / t1.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "{{\"prompt_tokens\": {}, \"gen_tokens\": {n_gen}, \"threads\": {threads}, \"pp_tps\": {:.1}, \"tg_tps\": {:.1}}}",
        prompt.len(),
        median(&mut pp),
        median(&mut tg)
    );
    Ok(())
}
