//! The metrics of one cloud request, labelled by provider.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;

use super::{Api, Piece, PieceStream};
use crate::metrics::Metrics;

/// Metrics of one cloud request: recorded once, when the last holder drops
/// it; a stream dropped before its end (the client left) is `client_closed`.
#[derive(Clone)]
pub(super) struct Meter {
    inner: Arc<MeterInner>,
}

struct MeterInner {
    metrics: Metrics,
    provider: &'static str,
    api: Api,
    started: Instant,
    outcome: std::sync::Mutex<Option<&'static str>>,
}

impl Meter {
    pub(super) fn new(metrics: &Metrics, provider: &'static str, api: Api) -> Self {
        Self {
            inner: Arc::new(MeterInner {
                metrics: metrics.clone(),
                provider,
                api,
                started: Instant::now(),
                outcome: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Sets the outcome (the first one set wins).
    pub(super) fn end(&self, outcome: &'static str) {
        let mut slot = self.inner.outcome.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(outcome);
    }

    /// Counts the tokens of an OpenAI `usage` object, if `v` has one.
    pub(super) fn usage(&self, v: &Value) {
        let m = &self.inner.metrics;
        for (field, kind) in [
            ("prompt_tokens", "prompt"),
            ("completion_tokens", "completion"),
        ] {
            if let Some(n) = v["usage"][field].as_u64() {
                m.cloud_tokens
                    .with_label_values(&[self.inner.provider, kind])
                    .inc_by(n);
            }
        }
    }

    /// `pieces`, timing the first and recording the outcome at the end.
    pub(super) fn watch(self, pieces: PieceStream) -> PieceStream {
        let mut first = true;
        Box::pin(pieces.map(move |piece| {
            if std::mem::take(&mut first) {
                self.inner
                    .metrics
                    .cloud_time_to_first_token
                    .with_label_values(&[self.inner.provider])
                    .observe(self.inner.started.elapsed().as_secs_f64());
            }
            match &piece {
                Piece::Chunk(v) => self.usage(v),
                Piece::Done => self.end("ok"),
                Piece::Failed(e) => self.end(e.label()),
                Piece::Raw(_) => {}
            }
            piece
        }))
    }
}

impl Drop for MeterInner {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .get_mut()
            .map(|o| o.unwrap_or("client_closed"))
            .unwrap_or("client_closed");
        let labels = [self.provider, self.api.label()];
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!(
            provider = self.provider,
            endpoint = self.api.label(),
            outcome,
            secs,
            "cloud request ended"
        );
        self.metrics
            .cloud_requests
            .with_label_values(&[self.provider, self.api.label(), outcome])
            .inc();
        self.metrics
            .cloud_request_duration
            .with_label_values(&labels)
            .observe(secs);
    }
}
