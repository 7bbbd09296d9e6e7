//! Prometheus metrics of the node, rendered at `GET /metrics`.
//!
//! Counters and histograms are updated where things happen (state changes in
//! the model actors, request ends in the handlers, error answers in the one
//! error renderer, pulls in the store runner, heartbeats in the router
//! session); gauges that mirror live figures (in flight, queue depth, GPU
//! memory, store disk space) are refreshed at scrape time, and the workers'
//! busy slots and KV cells come with each liveness `Pong`. The `process_*`
//! families are the prometheus crate's own process collector (Linux).
//!
//! Every family and its meaning is listed in `docs/operations.md`
//! ("Dashboards and alerts"); the Grafana dashboard and the alert rules in
//! `deploy/` use only names registered here (the `observability` suite checks
//! them against a live node).

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All states a model can report, for the one-hot state gauge.
pub const STATES: [&str; 7] = [
    "stopped", "starting", "ready", "draining", "stopping", "backoff", "failed",
];

/// The node's metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 for the model's current state, 0 for the others.
    pub model_state: IntGaugeVec,
    pub restarts: IntCounterVec,
    pub crashes: IntCounterVec,
    pub in_flight: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub tokens_generated: IntCounterVec,
    pub prompt_tokens: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    /// Cloud requests (`openai:`, `anthropic:`, `google:`), by provider,
    /// endpoint and outcome (ok, or the error's stable label).
    pub cloud_requests: IntCounterVec,
    pub cloud_request_duration: HistogramVec,
    pub cloud_time_to_first_token: HistogramVec,
    pub cloud_tokens: IntCounterVec,
    /// Error answers by the error's stable label and HTTP status.
    pub rejections: IntCounterVec,
    /// From arrival until a worker slot takes the request (admission, cold
    /// load, the model's queue).
    pub queue_wait: HistogramVec,
    pub inter_token_latency: HistogramVec,
    /// Slots holding a request and KV cells in use, as of the last `Pong`.
    pub busy_slots: IntGaugeVec,
    pub slots: IntGaugeVec,
    pub kv_cells_used: IntGaugeVec,
    pub kv_cells_total: IntGaugeVec,
    /// The worker's host-RAM prompt cache, as of the last `Pong`: bytes and
    /// entries held, restores and copies from another slot since the worker
    /// started.
    pub prompt_cache_bytes: IntGaugeVec,
    /// The cache's bound, from the config the worker was started with.
    pub prompt_cache_limit_bytes: IntGaugeVec,
    pub prompt_cache_entries: IntGaugeVec,
    pub prompt_cache_hits: IntGaugeVec,
    pub prompt_cache_copies: IntGaugeVec,
    /// Speculative decoding (`--spec-ngram`): draft tokens decoded and
    /// accepted since the worker started; accepted / drafted is the
    /// acceptance rate.
    pub spec_draft_tokens: IntGaugeVec,
    pub spec_accepted_tokens: IntGaugeVec,
    pub parked_sequences: IntGaugeVec,
    pub started_ahead: IntGaugeVec,
    /// From spawn to `Ready`.
    pub model_load_duration: HistogramVec,
    pub gpu_memory_used: IntGaugeVec,
    pub gpu_memory_total: IntGaugeVec,
    /// Layers the model's worker offloaded, labelled with the backend they run
    /// on (`CPU` when none), out of `model_layers`; from the worker's `Ready`.
    pub offloaded_layers: IntGaugeVec,
    pub model_layers: IntGaugeVec,
    /// Bytes llama.cpp allocated on GPU devices for the model.
    pub model_device_memory: IntGaugeVec,
    pub pulls_started: IntCounter,
    pub pulls_finished: IntCounterVec,
    pub pull_bytes: IntCounter,
    pub router_configured: IntGauge,
    pub router_registered: IntGauge,
    pub router_heartbeat_failures: IntCounter,
    pub router_last_heartbeat: Gauge,
    pub store_free_bytes: GaugeVec,
    pub store_total_bytes: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one request that answers in one piece without generating
    /// (embeddings, rerank): its outcome, its duration since `started`, and
    /// on success the prompt tokens it used (`result`'s second part).
    pub fn observe_pooled<T, E>(
        &self,
        model: &str,
        endpoint: &str,
        started: std::time::Instant,
        result: &Result<(T, u32), E>,
    ) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.requests
            .with_label_values(&[model, endpoint, outcome])
            .inc();
        self.request_duration
            .with_label_values(&[model, endpoint])
            .observe(started.elapsed().as_secs_f64());
        if let Ok((_, tokens)) = result {
            self.prompt_tokens
                .with_label_values(&[model])
                .inc_by(u64::from(*tokens));
        }
    }

    /// # Panics
    /// Never in practice: the names are static and registered once.
    // Over 60 lines on purpose: a flat list of metric registrations, one per
    // field, reads best whole (each name and help text next to its field).
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let scalar_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let scalar_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let last_heartbeat = Gauge::new(
            "llm_node_router_last_heartbeat_success_timestamp_seconds",
            "Unix time of the last heartbeat the router accepted (0: none yet)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_heartbeat.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let latency = buckets::LATENCY.to_vec();
        Self {
            model_state: gauge(
                "llm_node_model_state",
                "1 for the model's current lifecycle state",
                &["model", "state"],
            ),
            restarts: counter(
                "llm_node_model_restarts_total",
                "Worker restarts (automatic and admin)",
                &["model"],
            ),
            crashes: counter(
                "llm_node_model_crashes_total",
                "Worker crashes and failed starts",
                &["model"],
            ),
            in_flight: gauge(
                "llm_node_requests_in_flight",
                "Requests sent to the worker and not finished",
                &["model"],
            ),
            queue_depth: gauge(
                "llm_node_queue_depth",
                "Requests waiting for a free slot",
                &["model"],
            ),
            tokens_generated: counter(
                "llm_node_tokens_generated_total",
                "Completion tokens generated",
                &["model"],
            ),
            prompt_tokens: counter(
                "llm_node_prompt_tokens_total",
                "Prompt tokens processed",
                &["model"],
            ),
            requests: counter(
                "llm_node_requests_total",
                "Requests that reached a worker, by endpoint and outcome (ok, error, cancelled)",
                &["model", "endpoint", "outcome"],
            ),
            request_duration: histogram(
                "llm_node_request_duration_seconds",
                "Request latency from the request's arrival (admission, queueing and a cold \
                 load included) to the last generated event",
                &["model", "endpoint"],
                latency.clone(),
            ),
            time_to_first_token: histogram(
                "llm_node_time_to_first_token_seconds",
                "Time from the request's arrival (admission, queueing and a cold load \
                 included) to the first generated text",
                &["model"],
                latency.clone(),
            ),
            cloud_requests: counter(
                "llm_node_cloud_requests_total",
                "Requests sent to a cloud provider, by endpoint and outcome (ok or an error label)",
                &["provider", "endpoint", "outcome"],
            ),
            cloud_request_duration: histogram(
                "llm_node_cloud_request_duration_seconds",
                "Cloud request latency from arrival to the last byte",
                &["provider", "endpoint"],
                latency.clone(),
            ),
            cloud_time_to_first_token: histogram(
                "llm_node_cloud_time_to_first_token_seconds",
                "Time from arrival to the first streamed byte of a cloud answer",
                &["provider"],
                latency.clone(),
            ),
            cloud_tokens: counter(
                "llm_node_cloud_tokens_total",
                "Tokens a cloud provider reported in usage, by kind (prompt, completion)",
                &["provider", "kind"],
            ),
            rejections: counter(
                "llm_node_rejections_total",
                "Requests answered with an error, by the error's stable label (reason) and \
                 HTTP status (429 queue full, 503 unavailable, 4xx bad input, ...)",
                &["reason", "status"],
            ),
            queue_wait: histogram(
                "llm_node_queue_wait_seconds",
                "Time from the request's arrival until a worker slot took it \
                 (admission, a cold load, the model's queue)",
                &["model"],
                latency,
            ),
            inter_token_latency: histogram(
                "llm_node_inter_token_latency_seconds",
                "Time between two generated pieces of a request, per token",
                &["model"],
                buckets::INTER_TOKEN.to_vec(),
            ),
            busy_slots: gauge(
                "llm_node_busy_slots",
                "Worker slots holding a request, as the worker last reported (liveness pong)",
                &["model"],
            ),
            slots: gauge(
                "llm_node_slots",
                "Parallel slots of the running worker (0 when not running)",
                &["model"],
            ),
            kv_cells_used: gauge(
                "llm_node_kv_cells_used",
                "KV cache cells in use (cached prefixes included), as the worker last reported",
                &["model"],
            ),
            kv_cells_total: gauge(
                "llm_node_kv_cells_total",
                "KV cache cells of the running worker (context per slot times slots)",
                &["model"],
            ),
            prompt_cache_bytes: gauge(
                "llm_node_prompt_cache_bytes",
                "Bytes of sequence states in the worker's host-RAM prompt cache (bounded by --cache-ram)",
                &["model"],
            ),
            prompt_cache_limit_bytes: gauge(
                "llm_node_prompt_cache_limit_bytes",
                "The bound of the worker's host-RAM prompt cache (--cache-ram; 0 = no cache)",
                &["model"],
            ),
            prompt_cache_entries: gauge(
                "llm_node_prompt_cache_entries",
                "Sequence states in the worker's host-RAM prompt cache",
                &["model"],
            ),
            prompt_cache_hits: gauge(
                "llm_node_prompt_cache_hits",
                "Prompts that restored KV from the host-RAM prompt cache since the worker started",
                &["model"],
            ),
            prompt_cache_copies: gauge(
                "llm_node_prompt_cache_copies",
                "Prompts that copied KV from another slot since the worker started",
                &["model"],
            ),
            spec_draft_tokens: gauge(
                "llm_node_spec_draft_tokens",
                "Speculative draft tokens decoded since the worker started",
                &["model"],
            ),
            spec_accepted_tokens: gauge(
                "llm_node_spec_accepted_tokens",
                "Speculative draft tokens accepted (sampled as drafted) since the worker started",
                &["model"],
            ),
            parked_sequences: gauge(
                "llm_node_parked_sequences",
                "Requests started ahead (prefill and first token in a borrowed slot) whose KV waits in host RAM for a slot",
                &["model"],
            ),
            started_ahead: gauge(
                "llm_node_started_ahead",
                "Requests started ahead in a borrowed slot since the worker started (--prefill-ahead)",
                &["model"],
            ),
            model_load_duration: histogram(
                "llm_node_model_load_duration_seconds",
                "Time from spawning a worker to its Ready (model loaded)",
                &["model"],
                buckets::LOAD.to_vec(),
            ),
            offloaded_layers: gauge(
                "llm_node_model_offloaded_layers",
                "Layers the model's worker offloaded to a GPU, by the backend they run on (CPU: none)",
                &["model", "backend"],
            ),
            model_layers: gauge(
                "llm_node_model_layers",
                "Layers the model could offload (repeating layers plus output)",
                &["model"],
            ),
            model_device_memory: gauge(
                "llm_node_model_device_memory_bytes",
                "Bytes llama.cpp allocated on GPU devices for the model (weights, KV, compute)",
                &["model"],
            ),
            gpu_memory_used: gauge(
                "llm_node_gpu_memory_used_bytes",
                "GPU memory in use, per detected GPU (no series without a GPU)",
                &["gpu", "name"],
            ),
            gpu_memory_total: gauge(
                "llm_node_gpu_memory_total_bytes",
                "GPU memory, per detected GPU (no series without a GPU)",
                &["gpu", "name"],
            ),
            pulls_started: scalar_counter(
                "llm_node_pulls_started_total",
                "Model pulls that started running",
            ),
            pulls_finished: counter(
                "llm_node_pulls_finished_total",
                "Model pulls that ended, by outcome (ok or the failure's kind)",
                &["outcome"],
            ),
            pull_bytes: scalar_counter(
                "llm_node_pull_bytes_total",
                "Bytes downloaded by model pulls",
            ),
            router_configured: scalar_gauge(
                "llm_node_router_configured",
                "1 when the node is set up to join an llm-router (--router-url)",
            ),
            router_registered: scalar_gauge(
                "llm_node_router_registered",
                "1 while the node is registered with its router",
            ),
            router_heartbeat_failures: scalar_counter(
                "llm_node_router_heartbeat_failures_total",
                "Heartbeats to the router that failed",
            ),
            router_last_heartbeat: last_heartbeat,
            store_free_bytes: float_gauge(
                "llm_node_store_free_bytes",
                "Free bytes (for this user) on the filesystem of the model store",
                &["path"],
            ),
            store_total_bytes: float_gauge(
                "llm_node_store_total_bytes",
                "Size of the filesystem of the model store",
                &["path"],
            ),
            registry,
        }
    }

    /// Marks `state` as the current state of `model`.
    pub fn set_state(&self, model: &str, state: &str) {
        for s in STATES {
            self.model_state
                .with_label_values(&[model, s])
                .set(i64::from(s == state));
        }
    }

    /// Starts `model`'s counters at 0, so that `increase()` sees its first
    /// restart or crash (a series born at 1 looks like no change).
    pub fn add_model(&self, model: &str) {
        self.restarts.with_label_values(&[model]);
        self.crashes.with_label_values(&[model]);
    }

    /// Forgets a worker's occupancy (it stopped or crashed).
    pub fn clear_occupancy(&self, model: &str) {
        for g in [
            &self.busy_slots,
            &self.slots,
            &self.kv_cells_used,
            &self.kv_cells_total,
            &self.prompt_cache_bytes,
            &self.prompt_cache_limit_bytes,
            &self.prompt_cache_entries,
            &self.prompt_cache_hits,
            &self.prompt_cache_copies,
            &self.spec_draft_tokens,
            &self.spec_accepted_tokens,
            &self.parked_sequences,
            &self.started_ahead,
        ] {
            g.with_label_values(&[model]).set(0);
        }
    }

    /// Where `model` runs, as its worker reported at `Ready`.
    pub fn set_offload(&self, model: &str, offload: &llm_node_protocol::Offload) {
        // One backend series per model: drop a previous worker's.
        for backend in ["CPU", "CUDA", "ROCm", "HIP", "Vulkan", "Metal", "MTL"] {
            let _ = self.offloaded_layers.remove_label_values(&[model, backend]);
        }
        self.offloaded_layers
            .with_label_values(&[model, offload.backend.as_str()])
            .set(i64::from(offload.layers_offloaded));
        self.model_layers
            .with_label_values(&[model])
            .set(i64::from(offload.layers_total));
        self.model_device_memory
            .with_label_values(&[model])
            .set(i64::try_from(offload.device_bytes).unwrap_or(i64::MAX));
    }

    /// GPU memory of `devices` (used = total - free), one series per GPU.
    pub fn set_gpus(&self, devices: &[crate::gpu::GpuDevice]) {
        for d in devices {
            let labels = [d.index.to_string(), d.name.clone()];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            let total = i64::try_from(d.total_bytes).unwrap_or(i64::MAX);
            let used = i64::try_from(d.total_bytes.saturating_sub(d.free_bytes)).unwrap_or(0);
            self.gpu_memory_total.with_label_values(&labels).set(total);
            self.gpu_memory_used.with_label_values(&labels).set(used);
        }
    }

    /// Free and total bytes of the store's filesystem, under its `path`.
    pub fn set_store_space(&self, path: &str, free: u64, total: u64) {
        self.store_free_bytes
            .with_label_values(&[path])
            .set(free as f64);
        self.store_total_bytes
            .with_label_values(&[path])
            .set(total as f64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Histogram buckets, in seconds, for LLM time scales.
pub mod buckets {
    /// Latency, TTFT, queue wait: 5 ms up to 10 minutes (a CPU node loading
    /// a big model or prefilling a long prompt takes minutes).
    pub const LATENCY: [f64; 18] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
        180.0, 300.0, 600.0,
    ];
    /// Inter-token latency: 1 ms to 5 s.
    pub const INTER_TOKEN: [f64; 15] = [
        0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
        5.0,
    ];
    /// Model load: 100 ms to 20 minutes.
    pub const LOAD: [f64; 14] = [
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_gauge_is_one_hot_and_renders() {
        let m = Metrics::new();
        m.set_state("a", "starting");
        m.set_state("a", "ready");
        m.restarts.with_label_values(&["a"]).inc();
        let text = m.render();
        assert!(
            text.contains("llm_node_model_state{model=\"a\",state=\"ready\"} 1"),
            "{text}"
        );
        assert!(text.contains("llm_node_model_state{model=\"a\",state=\"starting\"} 0"));
        assert!(text.contains("llm_node_model_restarts_total{model=\"a\"} 1"));
    }

    #[test]
    fn unlabelled_families_and_process_metrics_render_from_the_start() {
        let text = Metrics::new().render();
        for name in [
            "llm_node_router_registered 0",
            "llm_node_router_heartbeat_failures_total 0",
            "llm_node_pulls_started_total 0",
            "llm_node_pull_bytes_total 0",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn gpu_memory_has_one_series_per_gpu_and_none_without_gpus() {
        let m = Metrics::new();
        m.set_gpus(&[]);
        assert!(
            !m.render().contains("llm_node_gpu_memory"),
            "no GPU, no series"
        );
        let gpu = crate::gpu::GpuDevice {
            index: 1,
            name: "H100".into(),
            vendor: crate::gpu::Vendor::Nvidia,
            total_bytes: 80 << 30,
            free_bytes: 60 << 30,
            utilization_pct: None,
            temperature_c: None,
            compute_capability: None,
            simulated: true,
        };
        m.set_gpus(&[gpu]);
        let text = m.render();
        let used = format!(
            "llm_node_gpu_memory_used_bytes{{gpu=\"1\",name=\"H100\"}} {}",
            20u64 << 30
        );
        assert!(text.contains(&used), "{text}");
    }

    #[test]
    fn buckets_rise_and_cover_llm_time_scales() {
        for (b, low, high) in [
            (&buckets::LATENCY[..], 0.01, 600.0),
            (&buckets::INTER_TOKEN[..], 0.001, 1.0),
            (&buckets::LOAD[..], 0.1, 1200.0),
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
            assert!(b[0] <= low && *b.last().unwrap() >= high, "{b:?}");
        }
    }
}
