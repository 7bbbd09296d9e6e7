//! How much memory a model will take, before it is loaded, from the GGUF's own
//! metadata: a pure function of ([`ModelShape`], [`Settings`]), so per-model
//! settings (context, slots, cache type, GPU layers) plug straight in.
//!
//! It follows what llama.cpp allocates (checked against llama.cpp's own buffer
//! reports on the bundled model, within 10 %; `tests/tests/offload.rs`):
//! - **weights**: each tensor's bytes. The input embedding stays on the host;
//!   with `n_gpu_layers = k` the output layer goes to the GPU first, then the
//!   last `k - 1` repeating layers. A model with tied embeddings gets a device
//!   copy of the embedding as its output layer.
//! - **KV cache**: per layer `n_embd_k × cells × bytes(K type) + n_embd_v ×
//!   cells × bytes(V type)`, on the device of its layer; a quantised type's
//!   bytes per element are its block's (q8_0: 34 bytes per 32 elements). Cells: each of `parallel` sequences
//!   gets `ctx_per_slot` rounded up to 256 (llama.cpp's padding); a
//!   sliding-window layer keeps only `window + n_ubatch` (rounded to 256) per
//!   sequence (Gemma 2/3, gpt-oss, Cohere 2 interleave such layers).
//! - **compute**: the graph's scratch for one micro-batch, dominated by the
//!   logits: `4 × n_ubatch × (n_vocab + 4 n_embd + n_ff)` bytes, on the device
//!   of the output layer.
//! - **output**: the logits buffer, `4 × n_vocab × parallel`, on the host.
//!
//! The embeddings context a worker creates on first use is not included.

/// What the estimate needs to know about a model (from its GGUF header).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelShape {
    /// Repeating layers (`block_count`).
    pub n_layer: u32,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    /// Per repeating layer: K and V widths (`head_dim × n_head_kv`).
    pub n_embd_k: u64,
    pub n_embd_v: u64,
    /// Sliding-window size and which layers use it (`il % pattern < pattern - 1`).
    pub swa: Option<Swa>,
    /// Bytes of each repeating layer's tensors (`blk.N.*`), by layer.
    pub layer_bytes: Vec<u64>,
    /// Bytes of the output layer (`output.*`, `output_norm.*`).
    pub output_bytes: u64,
    /// The model ties its output to the input embedding: the output layer,
    /// when offloaded, gets a device copy of `token_embd` (this many bytes).
    pub tied_output_bytes: u64,
    /// Everything else (`token_embd`, rope tables, …): stays on the host.
    pub other_bytes: u64,
}

/// Sliding-window attention layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swa {
    pub window: u64,
    /// Every `pattern`-th layer is full attention, the others use the window.
    pub pattern: u32,
}

/// The settings the model would run with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub ctx_per_slot: u64,
    pub parallel: u64,
    pub n_ubatch: u64,
    /// Bytes per K cache element: 2 for f16 (llama.cpp's default), 34/32 for
    /// q8_0 (`KvCacheType::bytes_per_element`).
    pub cache_k_bytes: f64,
    /// Bytes per V cache element, as `cache_k_bytes`.
    pub cache_v_bytes: f64,
    /// llama.cpp's `n_gpu_layers` (0: all on the host).
    pub n_gpu_layers: u32,
}

/// Bytes by place and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub weights_device: u64,
    pub weights_host: u64,
    pub kv_device: u64,
    pub kv_host: u64,
    pub compute_device: u64,
    pub compute_host: u64,
    pub output_host: u64,
}

impl Estimate {
    /// What the GPU(s) must hold.
    pub fn device(&self) -> u64 {
        self.weights_device + self.kv_device + self.compute_device
    }
    /// What stays in host memory.
    pub fn host(&self) -> u64 {
        self.weights_host + self.kv_host + self.compute_host + self.output_host
    }
    pub fn total(&self) -> u64 {
        self.device() + self.host()
    }
    /// Both estimates' bytes together (a model and its draft model).
    pub fn plus(&self, o: &Estimate) -> Estimate {
        Estimate {
            weights_device: self.weights_device + o.weights_device,
            weights_host: self.weights_host + o.weights_host,
            kv_device: self.kv_device + o.kv_device,
            kv_host: self.kv_host + o.kv_host,
            compute_device: self.compute_device + o.compute_device,
            compute_host: self.compute_host + o.compute_host,
            output_host: self.output_host + o.output_host,
        }
    }
}

const PAD: u64 = 256;

fn pad(n: u64) -> u64 {
    n.div_ceil(PAD) * PAD
}

/// The memory `shape` takes with `s` (see the module docs).
pub fn estimate(shape: &ModelShape, s: &Settings) -> Estimate {
    let n_layer = u64::from(shape.n_layer);
    let parallel = s.parallel.max(1);
    let gpu = u64::from(s.n_gpu_layers).min(n_layer + 1);
    let output_on_gpu = gpu >= 1;
    // Repeating layers from this index on are offloaded.
    let first_gpu_layer = n_layer - gpu.saturating_sub(1).min(n_layer);
    let cells_full = pad(s.ctx_per_slot.max(1)) * parallel;
    let mut e = Estimate::default();
    for il in 0..n_layer {
        let on_gpu = il >= first_gpu_layer && gpu > 0;
        let cells = match shape.swa {
            Some(w) if w.pattern > 1 && il % u64::from(w.pattern) < u64::from(w.pattern) - 1 => {
                (pad(w.window + s.n_ubatch) * parallel).min(cells_full)
            }
            _ => cells_full,
        };
        let kv = (shape.n_embd_k * cells) as f64 * s.cache_k_bytes
            + (shape.n_embd_v * cells) as f64 * s.cache_v_bytes;
        let weights = shape.layer_bytes.get(il as usize).copied().unwrap_or(0);
        if on_gpu {
            e.kv_device += kv as u64;
            e.weights_device += weights;
        } else {
            e.kv_host += kv as u64;
            e.weights_host += weights;
        }
    }
    e.weights_host += shape.other_bytes;
    let compute = 4 * s.n_ubatch * (shape.n_vocab + 4 * shape.n_embd + shape.n_ff);
    if output_on_gpu {
        e.weights_device += shape.output_bytes + shape.tied_output_bytes;
        e.compute_device = compute;
    } else {
        e.weights_host += shape.output_bytes;
        e.compute_host = compute;
    }
    e.output_host = 4 * shape.n_vocab * parallel;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// SmolLM2-135M's shape (30 layers, 3 KV heads of 64, vocab 49152).
    fn smol() -> ModelShape {
        ModelShape {
            n_layer: 30,
            n_embd: 576,
            n_ff: 1536,
            n_vocab: 49152,
            n_embd_k: 192,
            n_embd_v: 192,
            swa: None,
            layer_bytes: vec![2 * MIB; 30],
            output_bytes: 1000,
            tied_output_bytes: 30 * MIB,
            other_bytes: 30 * MIB,
        }
    }

    fn settings(ctx: u64, parallel: u64, gpu: u32) -> Settings {
        Settings {
            ctx_per_slot: ctx,
            parallel,
            n_ubatch: 512,
            cache_k_bytes: 2.0,
            cache_v_bytes: 2.0,
            n_gpu_layers: gpu,
        }
    }

    #[test]
    fn kv_cache_is_layers_times_kv_width_times_cells_times_two_bytes() {
        let e = estimate(&smol(), &settings(2048, 2, 0));
        // 30 layers × (192 + 192) × 4096 cells × 2 bytes = 90 MiB, llama.cpp's figure.
        assert_eq!(e.kv_host, 90 * MIB);
        assert_eq!(e.kv_device, 0);
        // Context is padded to 256 cells per sequence.
        let padded = estimate(&smol(), &settings(2000, 2, 0));
        assert_eq!(padded.kv_host, 90 * MIB);
        // q8_0 stores 34 bytes per 32 elements: 90 MiB × 34 / 64.
        let q8 = estimate(
            &smol(),
            &Settings {
                cache_k_bytes: 34.0 / 32.0,
                cache_v_bytes: 34.0 / 32.0,
                ..settings(2048, 2, 0)
            },
        );
        assert_eq!(q8.kv_host, 90 * MIB * 34 / 64);
        // K and V types count apart: q8_0 K with an f16 V.
        let mixed = estimate(
            &smol(),
            &Settings {
                cache_k_bytes: 34.0 / 32.0,
                ..settings(2048, 2, 0)
            },
        );
        assert_eq!(mixed.kv_host, 45 * MIB * 34 / 64 + 45 * MIB);
    }

    #[test]
    fn a_draft_model_adds_its_bytes_place_by_place() {
        let model = estimate(&smol(), &settings(2048, 2, 99));
        let draft = estimate(&smol(), &settings(2048, 2, 0));
        let both = model.plus(&draft);
        assert_eq!(both.device(), model.device() + draft.device());
        assert_eq!(both.host(), model.host() + draft.host());
        assert_eq!(both.total(), model.total() + draft.total());
        assert!(draft.device() == 0 && model.device() > 0);
    }

    #[test]
    fn gpu_layers_move_the_output_layer_first_then_the_last_layers() {
        let table = [
            // (n_gpu_layers, layers on device, output on device)
            (0u32, 0u64, false),
            (1, 0, true),
            (2, 1, true),
            (31, 30, true),
            (999, 30, true),
        ];
        for (gpu, layers, output) in table {
            let e = estimate(&smol(), &settings(2048, 2, gpu));
            let per_layer_kv = 3 * MIB;
            assert_eq!(e.kv_device, layers * per_layer_kv, "n_gpu_layers {gpu}");
            assert_eq!(
                e.kv_host,
                (30 - layers) * per_layer_kv,
                "n_gpu_layers {gpu}"
            );
            let out = if output { 1000 + 30 * MIB } else { 0 };
            assert_eq!(
                e.weights_device,
                layers * 2 * MIB + out,
                "n_gpu_layers {gpu}"
            );
            assert_eq!(e.compute_device > 0, output, "n_gpu_layers {gpu}");
            assert_eq!(e.compute_host > 0, !output, "n_gpu_layers {gpu}");
            // The input embedding never leaves the host.
            assert!(e.weights_host >= 30 * MIB);
        }
    }

    #[test]
    fn sliding_window_layers_keep_only_the_window() {
        let mut shape = smol();
        shape.n_layer = 6;
        shape.layer_bytes.truncate(6);
        shape.swa = Some(Swa {
            window: 512,
            pattern: 6,
        });
        let e = estimate(&shape, &settings(32768, 1, 0));
        let per_cell = (192 + 192) * 2;
        // 5 windowed layers × pad(512 + 512) cells + 1 full layer × 32768 cells.
        assert_eq!(e.kv_host, per_cell * (5 * 1024 + 32768));
        // A window larger than the context changes nothing.
        let small = estimate(&shape, &settings(256, 1, 0));
        assert_eq!(small.kv_host, per_cell * 6 * 256);
    }

    #[test]
    fn compute_and_output_follow_the_vocabulary_and_micro_batch() {
        let e = estimate(&smol(), &settings(2048, 2, 0));
        assert_eq!(e.compute_host, 4 * 512 * (49152 + 4 * 576 + 1536));
        assert_eq!(e.output_host, 4 * 49152 * 2);
        assert_eq!(e.total(), e.device() + e.host());
    }
}
