//! Request figures the heartbeat reports: requests in flight and the average
//! response time (contract §2.1 `active_requests`, `average_response_time_ms`).
//!
//! [`RequestStats::middleware`] wraps the app; it counts a request from its
//! arrival until its response body has been sent or dropped, so a stream
//! counts for its whole length. Only inference routes (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`) are counted: listing models or
//! heartbeat probes must not drag the average down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::web::Bytes;

/// Weight of the newest sample in the moving average.
const EWMA_ALPHA: f64 = 0.2;

/// Shared counters; cheap to clone.
#[derive(Clone, Default)]
pub struct RequestStats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    active: AtomicU32,
    /// Exponentially weighted moving average of response times, ms; `None` before the first.
    average_ms: Mutex<Option<f64>>,
}

impl RequestStats {
    pub fn active(&self) -> u32 {
        self.inner.active.load(Ordering::Relaxed)
    }

    pub fn average_ms(&self) -> Option<f32> {
        self.inner
            .average_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|v| v as f32)
    }

    fn begin(&self) -> Tracked {
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        Tracked {
            stats: self.clone(),
            start: Instant::now(),
        }
    }

    fn record(&self, ms: f64) {
        let mut avg = self
            .inner
            .average_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *avg = Some(ewma(*avg, ms));
    }

    /// The actix middleware feeding these counters.
    pub fn middleware(&self) -> StatsMiddleware {
        StatsMiddleware(self.clone())
    }
}

/// The next moving average after a sample.
fn ewma(previous: Option<f64>, sample: f64) -> f64 {
    match previous {
        None => sample,
        Some(p) => p + EWMA_ALPHA * (sample - p),
    }
}

/// Whether requests to `path` count.
fn counted(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings"
    )
}

/// One request being counted; recorded when dropped (response sent, failed or abandoned).
struct Tracked {
    stats: RequestStats,
    start: Instant,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.stats.inner.active.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .record(self.start.elapsed().as_secs_f64() * 1000.0);
    }
}

/// `App::wrap` this.
pub struct StatsMiddleware(RequestStats);

impl<S, B> Transform<S, ServiceRequest> for StatsMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = StatsService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(StatsService {
            service,
            stats: self.0.clone(),
        }))
    }
}

pub struct StatsService<S> {
    service: S,
    stats: RequestStats,
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>>>>;

impl<S, B> Service<ServiceRequest> for StatsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = BoxedResponse;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let tracked = counted(req.path()).then(|| self.stats.begin());
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(match tracked {
                Some(tracked) => res.map_body(|_, body| {
                    BoxBody::new(TrackedBody {
                        body: body.boxed(),
                        _tracked: tracked,
                    })
                }),
                None => res.map_into_boxed_body(),
            })
        })
    }
}

/// A response body that keeps its request counted until it is finished or dropped.
struct TrackedBody {
    body: BoxBody,
    _tracked: Tracked,
}

impl MessageBody for TrackedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_starts_at_the_first_sample_and_moves_a_fifth_of_the_way() {
        assert_eq!(ewma(None, 100.0), 100.0);
        assert_eq!(ewma(Some(100.0), 200.0), 120.0);
    }

    #[test]
    fn only_inference_routes_count() {
        assert!(counted("/v1/chat/completions"));
        assert!(counted("/v1/embeddings"));
        assert!(!counted("/v1/models"));
        assert!(!counted("/health"));
    }

    #[test]
    fn a_dropped_request_is_no_longer_active() {
        let stats = RequestStats::default();
        let t = stats.begin();
        assert_eq!(stats.active(), 1);
        drop(t);
        assert_eq!(stats.active(), 0);
        assert!(stats.average_ms().is_some());
    }
}
