//! Offload truth: which backends this worker has, and where llama.cpp really
//! put the model (layers offloaded, bytes allocated per device), for `Ready`.
//!
//! llama.cpp's C API does not return its buffer sizes or the offloaded layer
//! count; it logs them while loading (`CUDA0 model buffer size = 92.10 MiB`,
//! `offloaded 31/31 layers to GPU`). [`CaptureLayer`] is a tracing layer that
//! sees those lines (llama-cpp-2 routes llama.cpp's log into tracing, target
//! `llama-cpp-2`) and records them; [`parse_line`] is the pure parser, tested
//! on the lines llama.cpp prints. The log filter of the worker's stderr does
//! not apply to this layer, so the figures are there at any log level.
//!
//! Contract: [`take`] after the model and its contexts are created returns
//! every buffer allocated since the last [`take`], and the last layer count.
//! The worker loads one model per process, so nothing else interleaves.

use std::sync::Mutex;

use llm_node_protocol::{Allocated, Offload};

/// One line llama.cpp logs while loading that says where memory went.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `<buffer> <kind> buffer size = <MiB> MiB`.
    Buffer {
        /// ggml's buffer name: `CPU`, `CPU_Mapped`, `CUDA0`, `CUDA_Host`, …
        name: String,
        kind: Kind,
        bytes: u64,
    },
    /// `offloaded <n>/<total> layers to GPU`.
    Offloaded { layers: u32, total: u32 },
}

/// What a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Weights,
    Kv,
    Compute,
    Output,
}

/// Parses one llama.cpp log message; `None` for lines about anything else.
pub fn parse_line(message: &str) -> Option<Line> {
    let message = message.trim();
    if let Some(rest) = message.split("offloaded ").nth(1) {
        let (counts, tail) = rest.split_once(' ')?;
        if !tail.starts_with("layers to GPU") {
            return None;
        }
        let (n, total) = counts.split_once('/')?;
        return Some(Line::Offloaded {
            layers: n.parse().ok()?,
            total: total.parse().ok()?,
        });
    }
    let (head, tail) = message.split_once(" buffer size = ")?;
    let mib: f64 = tail.strip_suffix("MiB")?.trim().parse().ok()?;
    // `head` may carry a `func: ` prefix; the last two words are name and kind.
    let mut words = head.split_whitespace().rev();
    let kind = match words.next()? {
        "model" | "LoRA" => Kind::Weights,
        "KV" | "RS" => Kind::Kv,
        "compute" => Kind::Compute,
        "output" => Kind::Output,
        _ => return None,
    };
    let name = words.next()?.to_owned();
    Some(Line::Buffer {
        name,
        kind,
        bytes: (mib * 1024.0 * 1024.0).round() as u64,
    })
}

/// Lines recorded since the last [`take`].
static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

/// Records the llama.cpp lines [`parse_line`] understands.
pub struct CaptureLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut visitor = MessageVisitor(None);
        event.record(&mut visitor);
        if let Some(line) = visitor.0.as_deref().and_then(parse_line) {
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
}

struct MessageVisitor(Option<String>);

impl tracing::field::Visit for MessageVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.0.is_none() {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The tracing filter [`CaptureLayer`] runs under: llama.cpp's info lines only.
pub fn capture_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target("llama-cpp-2", tracing::Level::INFO)
}

/// Takes the lines recorded so far.
pub fn take() -> Vec<Line> {
    std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The names of the ggml backends compiled into this binary (`CPU`, `CUDA`, …).
pub fn backends() -> Vec<String> {
    // SAFETY: ggml's registry functions take no pointers from us; the names
    // are static C strings owned by the registry.
    unsafe {
        (0..llama_cpp_sys_2::ggml_backend_reg_count())
            .map(|i| {
                let reg = llama_cpp_sys_2::ggml_backend_reg_get(i);
                let name = llama_cpp_sys_2::ggml_backend_reg_name(reg);
                if name.is_null() {
                    String::from("?")
                } else {
                    std::ffi::CStr::from_ptr(name)
                        .to_string_lossy()
                        .into_owned()
                }
            })
            .collect()
    }
}

/// GPU devices the backends found: `(device name, backend name)`.
pub fn gpu_devices() -> Vec<(String, String)> {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .filter(|d| matches!(d.device_type, T::Gpu | T::IntegratedGpu))
        .map(|d| (d.name, d.backend))
        .collect()
}

/// Where the model runs, from the recorded `lines`. `n_layer` is the model's
/// repeating layer count (the total is `n_layer + 1`, the output layer).
pub fn summarize(
    lines: &[Line],
    backends: Vec<String>,
    gpus: &[(String, String)],
    n_layer: u32,
) -> Offload {
    let mut offload = Offload {
        backends,
        devices: gpus.iter().map(|(name, _)| name.clone()).collect(),
        backend: "CPU".into(),
        layers_offloaded: 0,
        layers_total: n_layer + 1,
        device_bytes: 0,
        allocated: Allocated::default(),
    };
    for line in lines {
        match line {
            Line::Offloaded { layers, total } => {
                offload.layers_offloaded = *layers;
                offload.layers_total = *total;
            }
            Line::Buffer { name, kind, bytes } => {
                let slot = match kind {
                    Kind::Weights => &mut offload.allocated.weights,
                    Kind::Kv => &mut offload.allocated.kv,
                    Kind::Compute => &mut offload.allocated.compute,
                    Kind::Output => &mut offload.allocated.output,
                };
                *slot += bytes;
                if gpus.iter().any(|(gpu, _)| gpu == name) {
                    offload.device_bytes += bytes;
                }
            }
        }
    }
    if offload.layers_offloaded > 0 {
        if let Some((_, backend)) = gpus.first() {
            offload.backend = backend.clone();
        }
    }
    offload
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn parses_the_lines_llama_cpp_prints() {
        let buffer = |name: &str, kind, bytes| {
            Some(Line::Buffer {
                name: name.into(),
                kind,
                bytes,
            })
        };
        let table: Vec<(&str, Option<Line>)> = vec![
            (
                "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB",
                buffer(
                    "CPU_Mapped",
                    Kind::Weights,
                    (92.10 * MIB as f64).round() as u64,
                ),
            ),
            (
                "  CUDA0 model buffer size =  1024.00 MiB\n",
                buffer("CUDA0", Kind::Weights, 1024 * MIB),
            ),
            (
                "llama_kv_cache:        CPU KV buffer size =    90.00 MiB",
                buffer("CPU", Kind::Kv, 90 * MIB),
            ),
            (
                "       CPU compute buffer size =   104.77 MiB",
                buffer("CPU", Kind::Compute, (104.77 * MIB as f64).round() as u64),
            ),
            (
                "CUDA_Host compute buffer size =     5.01 MiB",
                buffer(
                    "CUDA_Host",
                    Kind::Compute,
                    (5.01 * MIB as f64).round() as u64,
                ),
            ),
            (
                "       CPU  output buffer size =     0.38 MiB",
                buffer("CPU", Kind::Output, (0.38 * MIB as f64).round() as u64),
            ),
            (
                "    CPU RS buffer size =     1.50 MiB",
                buffer("CPU", Kind::Kv, (1.5 * MIB as f64).round() as u64),
            ),
            (
                "load_tensors: offloaded 31/31 layers to GPU",
                Some(Line::Offloaded {
                    layers: 31,
                    total: 31,
                }),
            ),
            (
                "offloaded 0/31 layers to GPU",
                Some(Line::Offloaded {
                    layers: 0,
                    total: 31,
                }),
            ),
            // Neighbours that are not allocations.
            (
                "size =   90.00 MiB (  2048 cells,  30 layers,  2/2 seqs), K (f16):   45.00 MiB",
                None,
            ),
            (
                "CPU compute buffer size is 104.7700 MiB, matches expectation of 104.7700 MiB",
                None,
            ),
            ("offloading 30 repeating layers to GPU", None),
            ("offloaded lots/31 layers to GPU", None),
            ("CPU weird buffer size = 1.00 MiB", None),
            ("CPU model buffer size = many MiB", None),
            ("", None),
        ];
        for (line, want) in table {
            assert_eq!(parse_line(line), want, "{line:?}");
        }
    }

    #[test]
    fn a_cpu_worker_reports_cpu_and_no_device_bytes() {
        let lines = vec![
            Line::Buffer {
                name: "CPU_Mapped".into(),
                kind: Kind::Weights,
                bytes: 92 * MIB,
            },
            Line::Buffer {
                name: "CPU".into(),
                kind: Kind::Kv,
                bytes: 90 * MIB,
            },
            Line::Buffer {
                name: "CPU".into(),
                kind: Kind::Compute,
                bytes: 104 * MIB,
            },
        ];
        let o = summarize(&lines, vec!["CPU".into()], &[], 30);
        assert_eq!(o.backend, "CPU");
        assert_eq!((o.layers_offloaded, o.layers_total), (0, 31));
        assert_eq!(o.device_bytes, 0);
        assert_eq!(
            o.allocated.weights + o.allocated.kv + o.allocated.compute,
            286 * MIB
        );
    }

    #[test]
    fn a_cuda_build_without_a_device_still_runs_on_the_cpu() {
        let o = summarize(&[], vec!["CPU".into(), "CUDA".into()], &[], 30);
        assert_eq!(o.backend, "CPU");
        assert_eq!(o.backends, ["CPU", "CUDA"]);
        assert_eq!(o.layers_offloaded, 0);
    }

    #[test]
    fn offloaded_layers_count_device_buffers_only() {
        let gpus = [("CUDA0".to_string(), "CUDA".to_string())];
        let lines = vec![
            Line::Offloaded {
                layers: 31,
                total: 31,
            },
            Line::Buffer {
                name: "CUDA0".into(),
                kind: Kind::Weights,
                bytes: 80 * MIB,
            },
            Line::Buffer {
                name: "CPU_Mapped".into(),
                kind: Kind::Weights,
                bytes: 12 * MIB,
            },
            Line::Buffer {
                name: "CUDA0".into(),
                kind: Kind::Kv,
                bytes: 90 * MIB,
            },
            Line::Buffer {
                name: "CUDA_Host".into(),
                kind: Kind::Compute,
                bytes: 5 * MIB,
            },
        ];
        let o = summarize(&lines, vec!["CPU".into(), "CUDA".into()], &gpus, 30);
        assert_eq!(o.backend, "CUDA");
        assert_eq!((o.layers_offloaded, o.layers_total), (31, 31));
        assert_eq!(o.device_bytes, 170 * MIB);
        assert_eq!(o.allocated.weights, 92 * MIB);
        assert_eq!(o.devices, ["CUDA0"]);
    }
}
