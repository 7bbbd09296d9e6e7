//! `POST /pull` (contract §3.4) and model sync, as store pulls.
//!
//! The HTTP handler only validates the body into a [`PullJob`] and hands it to
//! [`super::Member::submit`], which queues a [`PullOrder`] with the store's one
//! pull runner ([`crate::store::Service`]): a file pull into the router's named
//! directories (the router's `path` when this host can read it, else
//! `download_url`, else the store's own names), hot-added and loaded. The
//! answer goes out at once, whatever happens next. What comes back from the
//! store is turned into the router's progress reports by [`report`].
//!
//! Progress goes to `POST /api/tasks/{task_id}/progress`, sequentially
//! (monotonic at the router), at most one per [`REPORT_INTERVAL`], never
//! slowing the transfer down, below 1.0 until the model is served; then 1.0. A
//! failure is logged by the store; the router has no way to hear of it
//! (contract §4.3).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use super::client::{ProgressRequest, RouterClient};
use crate::store::named_dirs::model_dir;
use crate::store::{FilePull, Progress, PullEvent, PullEvents, PullOrder, PullSource};

/// Shortest time between two progress reports of one task.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// `POST /pull` body. Every field but `model` may be missing or `null`; unknown
/// fields are ignored. `size` and `sha256` are ours (the router never sends them).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PullRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub download_url: Option<String>,
    #[serde(default)]
    pub chat_template: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One model to acquire.
#[derive(Debug, Clone, PartialEq)]
pub struct PullJob {
    pub model: String,
    /// Router task to report progress to; `None` for sync-initiated pulls.
    pub task_id: Option<String>,
    pub path: Option<PathBuf>,
    pub download_url: Option<String>,
    pub chat_template: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Why a `/pull` body is refused (400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PullRejected {
    #[error("model required")]
    NoModel,
    #[error(transparent)]
    BadName(#[from] crate::store::named_dirs::BadName),
}

impl TryFrom<PullRequest> for PullJob {
    type Error = PullRejected;

    fn try_from(req: PullRequest) -> Result<Self, PullRejected> {
        let nonblank =
            |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let model = nonblank(req.model).ok_or(PullRejected::NoModel)?;
        model_dir(&model)?;
        Ok(PullJob {
            model,
            task_id: nonblank(req.task_id),
            path: nonblank(req.path).map(PathBuf::from),
            download_url: nonblank(req.download_url),
            chat_template: req.chat_template.filter(|t| !t.trim().is_empty()),
            size: req.size,
            sha256: nonblank(req.sha256).map(|s| s.to_ascii_lowercase()),
        })
    }
}

impl PullJob {
    /// The store pull for this job: a file pull into the named directories,
    /// served under the router's id and loaded at once, skipped when served.
    /// A relative `download_url` is resolved against `router`; one that is not
    /// `http(s)` is dropped with a warning.
    pub fn order(&self, router: Option<&reqwest::Url>) -> PullOrder {
        let url = self.download_url.as_ref().and_then(|url| {
            let resolved = match (reqwest::Url::parse(url), router) {
                (Ok(url), _) => Some(url),
                (Err(_), Some(base)) => base.join(url).ok(),
                (Err(_), None) => None,
            };
            let usable = resolved.filter(|u| matches!(u.scheme(), "http" | "https"));
            if usable.is_none() {
                tracing::warn!(model = %self.model, "ignoring unusable download_url {url:?}");
            }
            usable
        });
        PullOrder {
            id: self.model.clone(),
            source: PullSource::File(FilePull {
                model: self.model.clone(),
                path: self.path.clone(),
                url,
                chat_template: self.chat_template.clone(),
                size: self.size,
                sha256: self.sha256.clone(),
            }),
            unless_served: true,
            load: true,
        }
    }
}

/// Progress arithmetic of one task: a monotonic fraction below 1 (1.0 is sent
/// only once the model is served) and integer bytes per second, counted from
/// the first report of each file (bytes resumed from disk are not speed).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    /// The file being counted, its bytes and the time at its first report.
    file: Option<(String, u64, Instant)>,
    last: f32,
}

impl Meter {
    /// The report for one store progress line at `now`; `None` without byte counts.
    pub fn report(&mut self, p: &Progress, now: Instant) -> Option<ProgressRequest> {
        let (done, total) = (p.completed?, p.total.filter(|t| *t > 0)?);
        if self
            .file
            .as_ref()
            .is_none_or(|(status, ..)| *status != p.status)
        {
            self.file = Some((p.status.clone(), done, now));
        }
        let (_, first, start) = self.file.as_ref()?;
        let fraction = (done as f64 / total as f64).clamp(0.0, 0.99) as f32;
        self.last = self.last.max(fraction);
        let secs = now.duration_since(*start).as_secs_f64();
        let speed =
            (secs > 0.0).then(|| (done.saturating_sub(*first) as f64 / secs).round() as u64);
        Some(ProgressRequest {
            progress: self.last,
            speed,
        })
    }
}

/// Turns the store's events for one pull into the router's progress reports
/// for `task`, ending with 1.0 once the model is served.
pub async fn report(router: RouterClient, task: String, mut events: PullEvents) {
    let (latest, latest_rx) = watch::channel(None);
    let sender = actix_rt::spawn(send_latest(router.clone(), task.clone(), latest_rx));
    let mut meter = Meter::default();
    let mut served = false;
    while let Some(event) = events.recv().await {
        match event {
            PullEvent::Progress(p) => {
                if let Some(r) = meter.report(&p, Instant::now()) {
                    latest.send_replace(Some(r));
                }
            }
            PullEvent::Done(result) => served = result.is_ok(),
        }
    }
    drop(latest);
    // The sender is gone: the reporter sends nothing more after its current report.
    let _ = sender.await;
    if served {
        report_done(&router, &task).await;
    }
}

/// Sends the final 1.0, retrying a little (it is what marks the model loaded on the router).
async fn report_done(router: &RouterClient, task: &str) {
    let done = ProgressRequest {
        progress: 1.0,
        speed: None,
    };
    for delay in [100, 200, 400, 0] {
        match router.progress(task, done).await {
            Ok(()) => return,
            Err(e) if delay == 0 => {
                tracing::warn!(task_id = task, "final progress report failed: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(delay)).await,
        }
    }
}

/// Reports the latest progress of one task until the pull drops its sender:
/// one report at a time, at most one per [`REPORT_INTERVAL`].
async fn send_latest(
    router: RouterClient,
    task: String,
    mut rx: watch::Receiver<Option<ProgressRequest>>,
) {
    while rx.changed().await.is_ok() {
        let Some(report) = *rx.borrow_and_update() else {
            continue;
        };
        if let Err(e) = router.progress(&task, report).await {
            tracing::debug!(task_id = %task, "progress report failed: {e}");
        }
        tokio::time::sleep(REPORT_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(req: serde_json::Value) -> Result<PullJob, PullRejected> {
        PullJob::try_from(serde_json::from_value::<PullRequest>(req).unwrap())
    }

    #[test]
    fn pull_bodies_accept_nulls_and_missing_keys() {
        let j = job(serde_json::json!({"model":"gpt-oss:20b","task_id":"t","path":null,"download_url":null})).unwrap();
        assert_eq!(j.model, "gpt-oss:20b");
        assert_eq!(j.task_id.as_deref(), Some("t"));
        assert_eq!(
            (j.path, j.download_url, j.chat_template),
            (None, None, None)
        );
        let j = job(serde_json::json!({"model":"m","chat_template":null,"extra":1})).unwrap();
        assert_eq!(j.task_id, None);
        assert_eq!(
            job(serde_json::json!({"task_id":"t"})),
            Err(PullRejected::NoModel)
        );
        assert_eq!(
            job(serde_json::json!({"model":" "})),
            Err(PullRejected::NoModel)
        );
        assert!(matches!(
            job(serde_json::json!({"model":"../x"})),
            Err(PullRejected::BadName(_))
        ));
    }

    #[test]
    fn orders_resolve_relative_urls_and_drop_unusable_ones() {
        let base = reqwest::Url::parse("http://router:8080/").unwrap();
        let j = job(
            serde_json::json!({"model":"m","task_id":"t","path":"/r/m.gguf",
            "download_url":"/files/m.gguf","sha256":"AB"}),
        )
        .unwrap();
        let order = j.order(Some(&base));
        assert_eq!(order.id, "m");
        assert!(order.unless_served && order.load);
        let PullSource::File(file) = order.source else {
            panic!("a file pull")
        };
        assert_eq!(
            file.url.unwrap().as_str(),
            "http://router:8080/files/m.gguf"
        );
        assert_eq!(file.path, Some(PathBuf::from("/r/m.gguf")));
        assert_eq!(file.sha256.as_deref(), Some("ab"));
        let ftp = job(serde_json::json!({"model":"m","download_url":"ftp://x/y"})).unwrap();
        let PullSource::File(file) = ftp.order(Some(&base)).source else {
            panic!("a file pull")
        };
        assert_eq!(file.url, None);
    }

    #[test]
    fn meter_is_monotonic_below_one_with_integer_speed() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(m.report(&bytes("a", 0, 1000), at(0)).unwrap().progress, 0.0);
        let r = m.report(&bytes("a", 500, 1000), at(500)).unwrap();
        assert_eq!(r.progress, 0.5);
        assert_eq!(r.speed, Some(1000));
        let r = m.report(&bytes("b", 400, 1000), at(1000)).unwrap();
        assert_eq!(r.progress, 0.5, "never goes back");
        let r = m.report(&bytes("b", 1000, 1000), at(1600)).unwrap();
        assert_eq!(r.progress, 0.99, "1.0 is kept for when the model is served");
        assert_eq!(
            r.speed,
            Some(1000),
            "bytes of this file, from its first report"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"speed\":1000"), "{json}");
        assert!(m
            .report(&Progress::status("writing manifest"), at(2000))
            .is_none());
    }

    #[test]
    fn resumed_bytes_do_not_count_as_speed() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        m.report(&bytes("a", 900, 1000), t0);
        let r = m
            .report(&bytes("a", 1000, 1000), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(r.speed, Some(100));
    }

    fn bytes(status: &str, completed: u64, total: u64) -> Progress {
        Progress {
            status: status.into(),
            digest: None,
            total: Some(total),
            completed: Some(completed),
        }
    }
}
