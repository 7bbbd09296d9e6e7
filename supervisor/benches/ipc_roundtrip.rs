//! Supervisor ↔ worker cost per streamed token: a `WorkerClient` on real
//! ipc-channel byte channels, against a worker-side thread that answers each
//! `Generate` with N `Piece` events and `Finished` (no model, so only the
//! protocol, the IPC hop, the event router and the stream are measured).
//!
//! `cargo bench -p llm-node --bench ipc_roundtrip`

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipc_channel::ipc;
use llm_node::worker::{GenerationEvent, WorkerClient};
use llm_node_protocol::{
    decode, encode_events, Command, Event, FinishReason, Prompt, SamplingParams, Usage,
};

const TOKENS: u32 = 256;

fn fake_worker() -> WorkerClient {
    let (cmd_tx, cmd_rx) = ipc::bytes_channel().unwrap();
    let (evt_tx, evt_rx) = ipc::bytes_channel().unwrap();
    std::thread::spawn(move || {
        while let Ok(bytes) = cmd_rx.recv() {
            let Ok(Command::Generate { id, .. }) = decode::<Command>(&bytes) else {
                continue;
            };
            let _ = evt_tx.send(&encode_events(&[Event::Started {
                id,
                prompt_tokens: 8,
                reasoning_open: false,
            }]));
            for _ in 0..TOKENS {
                let piece = Event::Piece {
                    id,
                    text: " token".into(),
                    tokens: 1,
                    logprobs: Vec::new(),
                };
                let _ = evt_tx.send(&encode_events(&[piece]));
            }
            let usage = Usage {
                prompt_tokens: 8,
                completion_tokens: TOKENS,
                cached_tokens: 0,
            };
            let done = Event::Finished {
                id,
                reason: FinishReason::Length,
                usage,
            };
            let _ = evt_tx.send(&encode_events(&[done]));
        }
    });
    WorkerClient::new(cmd_tx, evt_rx, "bench")
}

fn roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = fake_worker();
    let mut group = c.benchmark_group("ipc");
    group.throughput(Throughput::Elements(u64::from(TOKENS)));
    group.bench_function("stream_256_tokens", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let mut s = client
                        .generate(Prompt::Text("x".into()), SamplingParams::default())
                        .unwrap();
                    let mut n = 0;
                    while let Some(ev) = s.next().await {
                        if let Ok(GenerationEvent::Piece { .. }) = ev {
                            n += 1;
                        }
                    }
                    assert_eq!(n, TOKENS);
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
