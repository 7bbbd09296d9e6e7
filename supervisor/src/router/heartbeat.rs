//! What a heartbeat says (contract §2.1): host CPU and memory, GPU figures,
//! request figures and the models. [`health_request`] is pure;
//! [`SystemSampler`] reads the host.

use super::client::HealthRequest;
use super::{readiness, ModelSnapshot};
use crate::gpu::GpuDevice;

/// Host CPU and memory use, percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostFigures {
    pub cpu_pct: f32,
    pub memory_pct: f32,
}

/// Requests figures at heartbeat time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestFigures {
    pub active: u32,
    pub average_ms: Option<f32>,
}

/// Builds the heartbeat body. GPU figures are aggregated over devices: mean utilisation,
/// memory summed, hottest temperature, the first device's name and compute capability.
/// `loaded_models` lists the servable models by lowercase id (the router matches
/// lowercase names, contract §3.1); `initializing` is true only while no model is ready and
/// one is starting, because `true` makes the whole node unroutable.
pub fn health_request(
    node_id: &str,
    host: HostFigures,
    requests: RequestFigures,
    gpus: &[GpuDevice],
    models: &[ModelSnapshot],
) -> HealthRequest {
    let utilizations: Vec<f32> = gpus
        .iter()
        .filter_map(|g| g.utilization_pct.map(|u| u as f32))
        .collect();
    let total: u64 = gpus.iter().map(|g| g.total_bytes).sum();
    let used: u64 = gpus
        .iter()
        .map(|g| g.total_bytes.saturating_sub(g.free_bytes))
        .sum();
    let (initializing, ready_models) = readiness(models.iter().map(|m| &m.state));
    let in_flight: usize = models.iter().map(|m| m.in_flight).sum();
    let mut loaded: Vec<String> = models
        .iter()
        .filter(|m| m.servable)
        .map(|m| m.name.to_lowercase())
        .collect();
    loaded.dedup();
    HealthRequest {
        node_id: node_id.to_string(),
        cpu_usage: clamp_pct(host.cpu_pct),
        memory_usage: clamp_pct(host.memory_pct),
        // The HTTP count includes requests still queued for a slot; the workers' count
        // covers anything that bypassed HTTP. Report the larger.
        active_requests: requests.active.max(in_flight as u32),
        gpu_usage: (!utilizations.is_empty())
            .then(|| clamp_pct(utilizations.iter().sum::<f32>() / utilizations.len() as f32)),
        gpu_memory_usage: (total > 0).then(|| clamp_pct(used as f32 * 100.0 / total as f32)),
        gpu_memory_total_mb: (total > 0).then_some(total >> 20),
        gpu_memory_used_mb: (total > 0).then_some(used >> 20),
        gpu_temperature: gpus
            .iter()
            .filter_map(|g| g.temperature_c)
            .max()
            .map(|t| t as f32),
        gpu_model_name: gpus.first().map(|g| g.name.clone()),
        gpu_compute_capability: gpus.iter().find_map(|g| g.compute_capability.clone()),
        average_response_time_ms: requests.average_ms,
        loaded_models: loaded,
        initializing,
        ready_models,
    }
}

fn clamp_pct(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// Reads host CPU and memory use. CPU use is measured between two reads, so the
/// sampler is kept for the life of the session and the first figure is taken at creation.
pub struct SystemSampler {
    system: sysinfo::System,
}

impl Default for SystemSampler {
    fn default() -> Self {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        Self { system }
    }
}

impl SystemSampler {
    /// Current figures (CPU averaged since the previous call).
    pub fn sample(&mut self) -> HostFigures {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory();
        let memory_pct = if total > 0 {
            (total.saturating_sub(self.system.available_memory())) as f32 * 100.0 / total as f32
        } else {
            0.0
        };
        HostFigures {
            cpu_pct: self.system.global_cpu_usage(),
            memory_pct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Vendor;

    fn model(name: &str, state: &str, in_flight: usize) -> ModelSnapshot {
        ModelSnapshot {
            name: name.into(),
            servable: state != "failed",
            state: match state {
                "ready" => crate::models::ModelState::Ready,
                "failed" => crate::models::ModelState::Failed { reason: "x".into() },
                other => panic!("no test state {other}"),
            },
            in_flight,
        }
    }

    fn gpu(util: Option<u32>, total_gib: u64, free_gib: u64, temp: Option<u32>) -> GpuDevice {
        GpuDevice {
            index: 0,
            name: "H100".into(),
            vendor: Vendor::Nvidia,
            total_bytes: total_gib << 30,
            free_bytes: free_gib << 30,
            utilization_pct: util,
            temperature_c: temp,
            compute_capability: Some("9.0".into()),
            simulated: false,
        }
    }

    #[test]
    fn heartbeat_carries_real_figures() {
        let req = health_request(
            "id",
            HostFigures {
                cpu_pct: 12.5,
                memory_pct: 140.0,
            },
            RequestFigures {
                active: 2,
                average_ms: Some(80.0),
            },
            &[
                gpu(Some(30), 80, 40, Some(50)),
                gpu(Some(50), 80, 80, Some(70)),
            ],
            &[
                model("GPT-OSS:20b", "ready", 1),
                model("broken", "failed", 0),
            ],
        );
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["node_id"], "id");
        assert_eq!(json["cpu_usage"], 12.5);
        assert_eq!(json["memory_usage"], 100.0);
        assert_eq!(json["active_requests"], 2);
        assert_eq!(json["gpu_usage"], 40.0);
        assert_eq!(json["gpu_memory_usage"], 25.0);
        assert_eq!(json["gpu_memory_total_mb"], 160 * 1024);
        assert_eq!(json["gpu_memory_used_mb"], 40 * 1024);
        assert_eq!(json["gpu_temperature"], 70.0);
        assert_eq!(json["gpu_compute_capability"], "9.0");
        assert_eq!(json["average_response_time_ms"], 80.0);
        assert_eq!(json["loaded_models"], serde_json::json!(["gpt-oss:20b"]));
        assert_eq!(json["initializing"], false);
        assert_eq!(json["ready_models"], serde_json::json!([1, 2]));
    }

    #[test]
    fn heartbeat_without_gpus_or_models_sends_nulls_and_zeros() {
        let req = health_request(
            "id",
            HostFigures::default(),
            RequestFigures::default(),
            &[],
            &[],
        );
        let json = serde_json::to_value(&req).unwrap();
        assert!(json["gpu_usage"].is_null());
        assert!(json["gpu_memory_total_mb"].is_null());
        assert_eq!(json["loaded_models"], serde_json::json!([]));
        assert_eq!(json["ready_models"], serde_json::json!([0, 0]));
        assert_eq!(json["initializing"], false);
    }

    #[test]
    fn worker_in_flight_counts_when_larger() {
        let req = health_request(
            "id",
            HostFigures::default(),
            RequestFigures::default(),
            &[],
            &[model("a", "ready", 3)],
        );
        assert_eq!(req.active_requests, 3);
    }

    #[test]
    fn sampler_reads_this_host() {
        let mut s = SystemSampler::default();
        let f = s.sample();
        assert!((0.0..=100.0).contains(&f.memory_pct), "{f:?}");
        assert!(f.memory_pct > 0.0);
    }
}
