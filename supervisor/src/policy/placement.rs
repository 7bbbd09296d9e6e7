//! Which GPU(s) a model's worker runs on.
//!
//! The need is estimated from the GGUF size plus the KV cache (context ×
//! slots × bytes per token) plus a compute-buffer allowance; each GPU keeps a
//! fixed reserve and a fraction of its memory as headroom (Ollama keeps
//! 457 MiB per GPU). Pins are honoured; otherwise one GPU that fits is
//! preferred (the one with the most usable memory, to spread models), then a
//! split over the fewest GPUs. A model that may not be split (`allow_split =
//! false` or `split_mode = "none"`) gets one GPU that fits alone, among its
//! pins if it has any, or does not fit. Machines without GPUs place on the CPU.

/// A GPU as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuState {
    pub index: u32,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// Memory rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementPolicy {
    /// Bytes left free on every GPU.
    pub reserve_bytes: u64,
    /// Fraction of each GPU's total kept free on top of the reserve.
    pub headroom: f64,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        Self {
            reserve_bytes: 457 << 20,
            headroom: 0.05,
        }
    }
}

/// Where to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// These GPU indices (the first is the main GPU).
    Gpus(Vec<u32>),
    /// No GPU on this machine.
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("pinned GPU {0} does not exist")]
    NoSuchGpu(u32),
    #[error("model needs {need} bytes but the GPUs have {usable} usable")]
    DoesNotFit { need: u64, usable: u64 },
    #[error(
        "model needs {need} bytes but the largest GPU has {usable} usable, \
         and it may not be split across GPUs (allow_split = false or split_mode = \"none\")"
    )]
    DoesNotFitOneGpu { need: u64, usable: u64 },
}

/// Inputs of the memory estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSize {
    pub weights_bytes: u64,
    pub ctx_per_slot: u64,
    pub parallel: u64,
    /// K and V bytes per token over all layers (f16 cache: 4 · n_layer · n_embd_kv).
    pub kv_bytes_per_token: u64,
}

/// Estimated device memory for a model: weights + KV + 10 % and 256 MiB of compute buffers.
pub fn estimate_need(m: ModelSize) -> u64 {
    let kv = m.ctx_per_slot * m.parallel * m.kv_bytes_per_token;
    m.weights_bytes + kv + m.weights_bytes / 10 + (256 << 20)
}

fn usable(g: &GpuState, p: &PlacementPolicy) -> u64 {
    let keep = p.reserve_bytes + (g.total_bytes as f64 * p.headroom) as u64;
    g.free_bytes.saturating_sub(keep)
}

/// Chooses GPUs for a model that needs `need` bytes; with `split` false, one GPU.
///
/// # Errors
/// [`PlacementError`] when a pin names a missing GPU or the memory is not there.
pub fn place(
    need: u64,
    pins: &[u32],
    split: bool,
    gpus: &[GpuState],
    p: &PlacementPolicy,
) -> Result<Placement, PlacementError> {
    if let Some(missing) = pins.iter().find(|i| !gpus.iter().any(|g| g.index == **i)) {
        return Err(PlacementError::NoSuchGpu(*missing));
    }
    if gpus.is_empty() {
        return Ok(Placement::Cpu);
    }
    if !split {
        // The candidates (the pins, else every GPU), most usable first.
        let best = gpus
            .iter()
            .filter(|g| pins.is_empty() || pins.contains(&g.index))
            .map(|g| (usable(g, p), g.index))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        return match best {
            Some((room, index)) if room >= need => Ok(Placement::Gpus(vec![index])),
            best => Err(PlacementError::DoesNotFitOneGpu {
                need,
                usable: best.map_or(0, |b| b.0),
            }),
        };
    }
    if !pins.is_empty() {
        let have: u64 = gpus
            .iter()
            .filter(|g| pins.contains(&g.index))
            .map(|g| usable(g, p))
            .sum();
        return if have >= need {
            Ok(Placement::Gpus(pins.to_vec()))
        } else {
            Err(PlacementError::DoesNotFit { need, usable: have })
        };
    }
    let mut by_room: Vec<(&GpuState, u64)> = gpus.iter().map(|g| (g, usable(g, p))).collect();
    // Most usable first; ties keep the lower index first.
    by_room.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.index.cmp(&b.0.index)));
    if by_room[0].1 >= need {
        return Ok(Placement::Gpus(vec![by_room[0].0.index]));
    }
    let mut chosen = Vec::new();
    let mut sum = 0;
    for (g, room) in &by_room {
        if *room == 0 {
            break;
        }
        chosen.push(g.index);
        sum += room;
        if sum >= need {
            return Ok(Placement::Gpus(chosen));
        }
    }
    Err(PlacementError::DoesNotFit { need, usable: sum })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn gpu(index: u32, total_gib: u64, free_gib: u64) -> GpuState {
        GpuState {
            index,
            total_bytes: total_gib * GIB,
            free_bytes: free_gib * GIB,
        }
    }

    fn policy() -> PlacementPolicy {
        PlacementPolicy {
            reserve_bytes: GIB / 2,
            headroom: 0.0,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn placement_table() {
        let two = vec![gpu(0, 24, 10), gpu(1, 24, 20)];
        let table: Vec<(
            &str,
            u64,
            Vec<u32>,
            Vec<GpuState>,
            Result<Placement, PlacementError>,
        )> = vec![
            ("no gpus → cpu", 5 * GIB, vec![], vec![], Ok(Placement::Cpu)),
            (
                "one fits, most room wins",
                5 * GIB,
                vec![],
                two.clone(),
                Ok(Placement::Gpus(vec![1])),
            ),
            (
                "only the bigger one fits",
                15 * GIB,
                vec![],
                two.clone(),
                Ok(Placement::Gpus(vec![1])),
            ),
            (
                "split when none fits alone",
                25 * GIB,
                vec![],
                two.clone(),
                Ok(Placement::Gpus(vec![1, 0])),
            ),
            (
                "too big for all",
                40 * GIB,
                vec![],
                two.clone(),
                Err(PlacementError::DoesNotFit {
                    need: 40 * GIB,
                    usable: 29 * GIB,
                }),
            ),
            (
                "pin honoured",
                5 * GIB,
                vec![0],
                two.clone(),
                Ok(Placement::Gpus(vec![0])),
            ),
            (
                "pin too small",
                12 * GIB,
                vec![0],
                two.clone(),
                Err(PlacementError::DoesNotFit {
                    need: 12 * GIB,
                    usable: 19 * GIB / 2,
                }),
            ),
            (
                "missing pin",
                1,
                vec![7],
                two.clone(),
                Err(PlacementError::NoSuchGpu(7)),
            ),
            (
                "missing pin without gpus",
                1,
                vec![0],
                vec![],
                Err(PlacementError::NoSuchGpu(0)),
            ),
            (
                "reserve counts",
                10 * GIB,
                vec![],
                vec![gpu(0, 24, 10)],
                Err(PlacementError::DoesNotFit {
                    need: 10 * GIB,
                    usable: 19 * GIB / 2,
                }),
            ),
        ];
        for (name, need, pins, gpus, want) in table {
            assert_eq!(place(need, &pins, true, &gpus, &policy()), want, "{name}");
        }
    }

    #[test]
    fn a_model_that_may_not_split_gets_one_gpu_or_does_not_fit() {
        let two = vec![gpu(0, 24, 10), gpu(1, 24, 20)];
        let three = vec![gpu(0, 24, 20), gpu(1, 24, 20), gpu(2, 24, 5)];
        // (case, need, pins, gpus, split, want)
        let table = [
            (
                "fits alone: the same GPU split or not",
                5 * GIB,
                vec![],
                two.clone(),
                false,
                Ok(Placement::Gpus(vec![1])),
            ),
            (
                "too big for one: split over two",
                25 * GIB,
                vec![],
                two.clone(),
                true,
                Ok(Placement::Gpus(vec![1, 0])),
            ),
            (
                "too big for one, no split: refused with the largest GPU's room",
                25 * GIB,
                vec![],
                two.clone(),
                false,
                Err(PlacementError::DoesNotFitOneGpu {
                    need: 25 * GIB,
                    usable: 39 * GIB / 2,
                }),
            ),
            (
                "ties keep the lower index",
                5 * GIB,
                vec![],
                three.clone(),
                false,
                Ok(Placement::Gpus(vec![0])),
            ),
            (
                "pinned to two, no split: the pin with most room",
                5 * GIB,
                vec![0, 1],
                two.clone(),
                false,
                Ok(Placement::Gpus(vec![1])),
            ),
            (
                "pinned to two, split: both",
                5 * GIB,
                vec![0, 1],
                two.clone(),
                true,
                Ok(Placement::Gpus(vec![0, 1])),
            ),
            (
                "pinned to the small one, no split: refused",
                12 * GIB,
                vec![0],
                two.clone(),
                false,
                Err(PlacementError::DoesNotFitOneGpu {
                    need: 12 * GIB,
                    usable: 19 * GIB / 2,
                }),
            ),
            (
                "missing pin is still named",
                1,
                vec![9],
                two.clone(),
                false,
                Err(PlacementError::NoSuchGpu(9)),
            ),
            (
                "no gpus: cpu either way",
                1,
                vec![],
                vec![],
                false,
                Ok(Placement::Cpu),
            ),
        ];
        for (name, need, pins, gpus, split, want) in table {
            assert_eq!(place(need, &pins, split, &gpus, &policy()), want, "{name}");
        }
        let err = PlacementError::DoesNotFitOneGpu { need: 2, usable: 1 }.to_string();
        assert!(err.contains("may not be split"), "{err}");
    }

    #[test]
    fn headroom_is_a_fraction_of_total() {
        let p = PlacementPolicy {
            reserve_bytes: 0,
            headroom: 0.1,
        };
        let g = [gpu(0, 10, 10)];
        assert_eq!(
            place(9 * GIB, &[], true, &g, &p),
            Ok(Placement::Gpus(vec![0]))
        );
        assert!(place(9 * GIB + 1, &[], true, &g, &p).is_err());
    }

    #[test]
    fn need_includes_kv_cache_for_every_slot() {
        let m = ModelSize {
            weights_bytes: 1000 << 20,
            ctx_per_slot: 4096,
            parallel: 4,
            kv_bytes_per_token: 1 << 10,
        };
        assert_eq!(
            estimate_need(m),
            (1000 << 20) + (16 << 20) + (100 << 20) + (256 << 20)
        );
    }
}
