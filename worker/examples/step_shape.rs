//! What one decode step costs by the shape of its batch: how many tokens each
//! of the sequences puts in it. Speculative decoding makes the shapes uneven
//! (one sequence verifies a 32-token draft, another a 2-token one, a third
//! has none), and with per-sequence KV (`kv_unified = false`, as the worker
//! runs) llama.cpp cuts a batch into ubatches that take the *same* number of
//! tokens from every sequence in them (`llama_batch_allocr::split_equal`), so
//! an uneven step is several graph evaluations. This measures it.
//!
//! `step_shape MODEL [DEPTH=700] [THREADS=0] [REPS=20] [UNIFIED=0] [SHAPES]`
//! SHAPES: `;`-separated lists of per-sequence token counts, e.g.
//! "1,1,1,1;5,5,5,5;1,3,5,12". Every sequence is first prefilled with DEPTH
//! tokens; each step puts its tokens after them (logits for all, as
//! verification needs) and is then removed from the KV, so every repetition
//! sees the same cache. Prints one JSON line per shape (median step time).

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

const DEFAULT_SHAPES: &str =
    "1,1,1,1;2,2,2,2;5,5,5,5;9,9,9,9;17,17,17,17;1,5,9,33;2,4,6,9;1,1,1,17;5,5,5,0";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: step_shape MODEL [DEPTH] [THREADS] [REPS] [UNIFIED] [SHAPES]");
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (depth, threads, reps, unified) = (arg(2, 700), arg(3, 0), arg(4, 20), arg(5, 0) == 1);
    let shapes: Vec<Vec<usize>> = args
        .get(6)
        .map_or(DEFAULT_SHAPES, String::as_str)
        .split(';')
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().unwrap_or(0))
                .collect()
        })
        .collect();
    let n_seq = shapes.iter().map(Vec::len).max().unwrap_or(1);
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    } as i32;

    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())?;
    let per_seq = (depth + 128).next_multiple_of(256) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(per_seq * n_seq as u32))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(n_seq as u32)
        .with_kv_unified(unified)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params)?;
    let vocab = model.vocab();
    let words = "fn main() { let x = compute(a, b); println!(\"{x}\"); } ".repeat(depth / 8 + 8);
    let mut prompt = vocab.tokenize(words.as_bytes(), true, false);
    prompt.truncate(depth);
    let mut batch = LlamaBatch::new(512, n_seq as i32);
    for s in 0..n_seq {
        for (c, chunk) in prompt.chunks(512).enumerate() {
            batch.clear();
            for (k, &t) in chunk.iter().enumerate() {
                batch.add(t, (c * 512 + k) as i32, &[s as i32], false)?;
            }
            ctx.decode(&mut batch)?;
        }
    }
    for shape in &shapes {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps + 2 {
            batch.clear();
            for (s, &n) in shape.iter().enumerate() {
                for k in 0..n {
                    batch.add(
                        prompt[k % prompt.len()],
                        (depth + k) as i32,
                        &[s as i32],
                        true,
                    )?;
                }
            }
            let t0 = Instant::now();
            ctx.decode(&mut batch)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            for s in 0..shape.len() {
                ctx.clear_kv_cache_seq(Some(s as u32), Some(depth as u32), None)?;
            }
        }
        times.drain(..2); // warm-up
        times.sort_by(|a, b| a.total_cmp(b));
        let ms = times[times.len() / 2];
        let tokens: usize = shape.iter().sum();
        println!(
            "{{\"shape\": {shape:?}, \"unified\": {unified}, \"depth\": {depth}, \"tokens\": {tokens}, \"step_ms\": {ms:.2}, \"tokens_per_s\": {:.1}}}",
            tokens as f64 / ms * 1e3
        );
    }
    Ok(())
}
