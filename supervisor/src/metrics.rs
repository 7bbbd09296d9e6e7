//! Prometheus metrics of the node, rendered at `GET /metrics`.
//!
//! Counters and histograms are updated where things happen (state changes in
//! the model actors, request ends in the handlers); gauges that mirror live
//! figures (in flight, queue depth) are refreshed from the actors at scrape time.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
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
        let latency = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ];
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
                "Request latency from arrival to the last byte",
                &["model", "endpoint"],
                latency.clone(),
            ),
            time_to_first_token: histogram(
                "llm_node_time_to_first_token_seconds",
                "Time from arrival to the first generated text",
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
                latency,
            ),
            cloud_tokens: counter(
                "llm_node_cloud_tokens_total",
                "Tokens a cloud provider reported in usage, by kind (prompt, completion)",
                &["provider", "kind"],
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
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
}
