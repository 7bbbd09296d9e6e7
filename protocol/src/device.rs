//! Device settings of a [`crate::WorkerConfig`]: the KV cache's element type
//! and how a model is split over several GPUs. Plain enums (bincode-safe),
//! with the names llama-server's flags use (`--cache-type-k q8_0`,
//! `--split-mode row`) for parsing and display.

use serde::{Deserialize, Serialize};

/// Element type of the K or V cache (llama-server's `--cache-type-k/-v`
/// values). The default, `f16`, is llama.cpp's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvCacheType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl KvCacheType {
    /// Every type, in llama-server's order.
    pub const ALL: [KvCacheType; 9] = [
        KvCacheType::F32,
        KvCacheType::F16,
        KvCacheType::Bf16,
        KvCacheType::Q8_0,
        KvCacheType::Q4_0,
        KvCacheType::Q4_1,
        KvCacheType::Iq4Nl,
        KvCacheType::Q5_0,
        KvCacheType::Q5_1,
    ];

    /// ggml's name of the type (`q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F32 => "f32",
            KvCacheType::F16 => "f16",
            KvCacheType::Bf16 => "bf16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
            KvCacheType::Q4_1 => "q4_1",
            KvCacheType::Iq4Nl => "iq4_nl",
            KvCacheType::Q5_0 => "q5_0",
            KvCacheType::Q5_1 => "q5_1",
        }
    }

    /// ggml's storage of the type: (bytes per block, elements per block).
    /// The quantised types store blocks of 32 elements: an f16 scale
    /// (q8_0: 2 + 32 bytes; q4_0 and iq4_nl: 2 + 16), plus an f16 minimum
    /// (q4_1: 2 + 2 + 16) and/or 4 bytes of high bits (q5_0: 2 + 4 + 16,
    /// q5_1: 2 + 2 + 4 + 16).
    pub fn block(self) -> (u32, u32) {
        match self {
            KvCacheType::F32 => (4, 1),
            KvCacheType::F16 | KvCacheType::Bf16 => (2, 1),
            KvCacheType::Q8_0 => (34, 32),
            KvCacheType::Q4_0 | KvCacheType::Iq4Nl => (18, 32),
            KvCacheType::Q4_1 => (20, 32),
            KvCacheType::Q5_0 => (22, 32),
            KvCacheType::Q5_1 => (24, 32),
        }
    }

    /// Bytes per element (34/32 = 1.0625 for q8_0).
    pub fn bytes_per_element(self) -> f64 {
        let (bytes, elements) = self.block();
        f64::from(bytes) / f64::from(elements)
    }

    /// A block-quantised type: llama.cpp needs flash attention for such a V
    /// cache, and head sizes that are a multiple of the block.
    pub fn is_quantized(self) -> bool {
        self.block().1 > 1
    }
}

impl std::fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`KvCacheType`] or [`SplitMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of {expected}")]
pub struct UnknownName {
    pub given: String,
    pub expected: String,
}

impl std::str::FromStr for KvCacheType {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KvCacheType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                given: s.into(),
                expected: KvCacheType::ALL.map(KvCacheType::name).join(", "),
            })
    }
}

/// How llama.cpp spreads a model over the GPUs the worker sees
/// (llama-server's `--split-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SplitMode {
    /// The whole model on the main GPU.
    None,
    /// Whole layers (and their KV) per GPU: llama.cpp's default.
    #[default]
    Layer,
    /// Rows of each weight matrix across GPUs (tensor parallelism, CUDA only).
    Row,
}

impl SplitMode {
    pub const ALL: [SplitMode; 3] = [SplitMode::None, SplitMode::Layer, SplitMode::Row];

    pub fn name(self) -> &'static str {
        match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
        }
    }
}

impl std::fmt::Display for SplitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SplitMode {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SplitMode::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownName {
                given: s.into(),
                expected: SplitMode::ALL.map(SplitMode::name).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_type_names_round_trip_and_unknown_ones_list_the_choices() {
        for t in KvCacheType::ALL {
            assert_eq!(t.name().parse::<KvCacheType>(), Ok(t));
            assert_eq!(t.to_string().to_uppercase().parse::<KvCacheType>(), Ok(t));
        }
        let err = "q3_k".parse::<KvCacheType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"q3_k\" is not one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1"
        );
        for m in SplitMode::ALL {
            assert_eq!(m.name().parse::<SplitMode>(), Ok(m));
        }
        assert!("tensor".parse::<SplitMode>().is_err());
    }

    #[test]
    fn bytes_per_element_follow_ggml_block_sizes() {
        let table = [
            (KvCacheType::F32, 4.0),
            (KvCacheType::F16, 2.0),
            (KvCacheType::Bf16, 2.0),
            (KvCacheType::Q8_0, 34.0 / 32.0),
            (KvCacheType::Q4_0, 18.0 / 32.0),
            (KvCacheType::Q4_1, 20.0 / 32.0),
            (KvCacheType::Iq4Nl, 18.0 / 32.0),
            (KvCacheType::Q5_0, 22.0 / 32.0),
            (KvCacheType::Q5_1, 24.0 / 32.0),
        ];
        for (t, want) in table {
            assert_eq!(t.bytes_per_element(), want, "{t}");
            assert_eq!(t.is_quantized(), want < 2.0, "{t}");
        }
    }
}
