//! Model acquisition for `POST /pull` (contract §3.4) and model sync.
//!
//! The HTTP handler only validates and queues a [`PullJob`]: it answers at
//! once, whatever happens next. [`PullRunner`] runs on the node's main arbiter
//! (the one that owns the model actors, so a hot-added model outlives any HTTP
//! worker thread) and, for each job:
//!
//! 1. skips it when the model is already served (reporting 1.0), or joins it to a
//!    pull of the same model already under way;
//! 2. acquires the file ([`super::transfer`]): the router's `path` when this host can
//!    read it, else `download_url`, else the name-resolution hook [`resolve_by_name`];
//! 3. hot-adds it through [`NodeModels::add_model`] and reports progress 1.0.
//!
//! Progress goes to `POST /api/tasks/{task_id}/progress` from one reporter task
//! per job, so reports are sequential (monotonic at the router), at most one per
//! [`REPORT_INTERVAL`], and never slow the transfer down. A failure is logged;
//! the router has no way to hear of it (contract §4.3).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch, Semaphore};

use super::client::{ProgressRequest, RouterClient};
use super::transfer::{self, Source, TransferError};
use super::NodeModels;
use crate::store::named_dirs::{model_dir, model_file};

/// Shortest time between two progress reports of one task.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// Transfers running at once; more wait their turn.
const CONCURRENT_TRANSFERS: usize = 2;

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

/// Where a pull with neither a readable `path` nor a `download_url` comes from:
/// the model store ([`crate::store`]), which has the name already or pulls it from
/// its registry or Hugging Face (the router's predefined models, contract §6, are
/// such names). `None` when the name is not a store name or there is no store.
pub async fn resolve_by_name(
    store: Option<&crate::store::Store>,
    model: &str,
    progress: &watch::Sender<Option<ProgressRequest>>,
) -> Option<Result<PathBuf, TransferError>> {
    let name = crate::store::ModelRef::parse(model).ok()?;
    let on_progress = |p: crate::store::Progress| {
        if let (Some(done), Some(total)) = (p.completed, p.total.filter(|t| *t > 0)) {
            let fraction = (done as f64 / total as f64).clamp(0.0, 0.99) as f32;
            progress.send_replace(Some(ProgressRequest {
                progress: fraction,
                speed: None,
            }));
        }
    };
    let result = store?.ensure(&name, &on_progress).await;
    Some(
        result
            .map(|m| m.gguf)
            .map_err(|e| TransferError::Source(format!("{model}: {e}"))),
    )
}

/// The sending side of the pull queue; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct PullQueue {
    tx: mpsc::UnboundedSender<PullJob>,
}

impl PullQueue {
    /// A queue and the receiver its runner will drain.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<PullJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues `job`; jobs queued before the runner starts wait for it.
    pub fn submit(&self, job: PullJob) {
        tracing::info!(model = %job.model, task_id = job.task_id.as_deref().unwrap_or("-"),
            "model pull queued");
        let _ = self.tx.send(job);
    }
}

/// Executes queued jobs; see the module docs.
pub struct PullRunner {
    pub models: Arc<dyn NodeModels>,
    pub router: Option<RouterClient>,
    /// Client for downloads (no overall timeout; connect and read timeouts).
    pub http: reqwest::Client,
    pub models_dir: PathBuf,
    /// Resolves names that come without a source ([`resolve_by_name`]).
    pub store: Option<crate::store::Store>,
}

/// Pulls under way: model key → extra task ids to complete with it.
type Active = Rc<RefCell<HashMap<String, Vec<String>>>>;

impl PullRunner {
    /// Runs until the queue closes. Must run on a local set (an actix arbiter):
    /// jobs are spawned with `actix_rt::spawn`.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<PullJob>) {
        let this = Rc::new(self);
        let active: Active = Rc::default();
        let limit = Rc::new(Semaphore::new(CONCURRENT_TRANSFERS));
        while let Some(job) = rx.recv().await {
            let key = job.model.to_lowercase();
            if let Some(waiters) = active.borrow_mut().get_mut(&key) {
                tracing::info!(model = %job.model, "pull joins the one already under way");
                waiters.extend(job.task_id);
                continue;
            }
            let served = this
                .models
                .snapshot()
                .await
                .iter()
                .any(|m| m.name.eq_ignore_ascii_case(&job.model));
            if served {
                tracing::info!(model = %job.model, "pull: model already served");
                if let Some(task) = &job.task_id {
                    this.report_done(task).await;
                }
                continue;
            }
            active.borrow_mut().insert(key.clone(), Vec::new());
            let (this, active, limit) = (this.clone(), active.clone(), limit.clone());
            actix_rt::spawn(async move {
                let ok = match limit.acquire().await {
                    Ok(_permit) => this.execute(&job).await,
                    Err(_) => false,
                };
                let waiters = active.borrow_mut().remove(&key).unwrap_or_default();
                if ok {
                    for task in waiters {
                        this.report_done(&task).await;
                    }
                }
            });
        }
    }

    /// Acquires and hot-adds one model; `true` on success. Failures are logged here.
    async fn execute(&self, job: &PullJob) -> bool {
        let (progress_tx, progress_rx) = watch::channel(None);
        let reporter = match (&self.router, &job.task_id) {
            (Some(router), Some(task)) => Some(actix_rt::spawn(report_progress(
                router.clone(),
                task.clone(),
                progress_rx,
            ))),
            _ => None,
        };
        let result = self.acquire(job, progress_tx).await;
        if let Some(reporter) = reporter {
            // The sender is gone: the reporter sends nothing more after its current report.
            let _ = reporter.await;
        }
        let result = match result {
            Ok(path) => self
                .models
                .add_model(job.model.clone(), path.clone(), job.chat_template.clone())
                .await
                .map(|()| path)
                .map_err(TransferError::Add),
            Err(e) => Err(e),
        };
        match result {
            Ok(path) => {
                tracing::info!(model = %job.model, path = %path.display(), "model pulled and served");
                if let Some(task) = &job.task_id {
                    self.report_done(task).await;
                }
                true
            }
            Err(e) => {
                tracing::error!(model = %job.model, task_id = job.task_id.as_deref().unwrap_or("-"),
                    "model pull failed: {e}");
                false
            }
        }
    }

    async fn acquire(
        &self,
        job: &PullJob,
        progress: watch::Sender<Option<ProgressRequest>>,
    ) -> Result<PathBuf, TransferError> {
        let dest = model_file(&self.models_dir, &job.model)
            .map_err(|e| TransferError::Source(e.to_string()))?;
        write_metadata(&dest, job.chat_template.as_deref()).await;
        // Already here and intact (an earlier pull, or put there by hand): adopt it.
        if transfer::verify(&dest, job.size, job.sha256.as_deref())
            .await
            .is_ok()
        {
            tracing::info!(model = %job.model, path = %dest.display(), "model file already present");
            return Ok(dest);
        }
        let sources = match sources(job, self.router.as_ref().map(|r| r.base())) {
            Ok(sources) => sources,
            Err(e) => {
                let store = self.store.as_ref();
                return resolve_by_name(store, &job.model, &progress)
                    .await
                    .unwrap_or(Err(e));
            }
        };
        let mut last = TransferError::Source("no source".into());
        for source in sources {
            match transfer::fetch(&self.http, &source, &dest, job, &progress).await {
                Ok(()) => return Ok(dest),
                Err(e) => {
                    tracing::warn!(model = %job.model, source = %source, "acquisition failed: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Sends the final 1.0, retrying a little (it is what marks the model loaded on the router).
    async fn report_done(&self, task: &str) {
        let Some(router) = &self.router else { return };
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
}

/// The sources to try for `job`, in order (contract §4.4): the router's `path` when readable here, `download_url` (relative ones against the
/// router's URL), then [`resolve_by_name`].
///
/// # Errors
/// [`TransferError::Source`] when there is none, naming what was offered.
pub fn sources(job: &PullJob, router: Option<&reqwest::Url>) -> Result<Vec<Source>, TransferError> {
    let mut out = Vec::new();
    if let Some(path) = job.path.as_ref().filter(|p| is_readable_file(p)) {
        out.push(Source::Path(path.clone()));
    }
    if let Some(url) = &job.download_url {
        let resolved = match (reqwest::Url::parse(url), router) {
            (Ok(url), _) => Some(url),
            (Err(_), Some(base)) => base.join(url).ok(),
            (Err(_), None) => None,
        };
        match resolved.filter(|u| matches!(u.scheme(), "http" | "https")) {
            Some(url) => out.push(Source::Url(url)),
            None => tracing::warn!(model = %job.model, "ignoring unusable download_url {url:?}"),
        }
    }
    if out.is_empty() {
        return Err(TransferError::Source(format!(
            "no source for {}: path {} and download_url {}, and the name is not in the model store",
            job.model,
            match &job.path {
                Some(p) => format!("{} is not a readable file on this host", p.display()),
                None => "is null".into(),
            },
            if job.download_url.is_some() {
                "is unusable"
            } else {
                "is null"
            },
        )));
    }
    Ok(out)
}

fn is_readable_file(path: &Path) -> bool {
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}

/// Writes `<dir>/metadata.json` with the chat template, when one is given (contract §4.4).
async fn write_metadata(dest: &Path, chat_template: Option<&str>) {
    let (Some(template), Some(dir)) = (chat_template, dest.parent()) else {
        return;
    };
    let body = serde_json::json!({ "chat_template": template }).to_string();
    let result = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(dir.join("metadata.json"), body).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), "cannot write metadata.json: {e}");
    }
}

/// Reports the latest progress of one task until the transfer drops its sender:
/// one report at a time, at most one per [`REPORT_INTERVAL`].
async fn report_progress(
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
    fn sources_prefer_a_readable_path_then_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let base = reqwest::Url::parse("http://router:8080/").unwrap();
        let mut j =
            job(serde_json::json!({"model":"m","path": file, "download_url": "/files/m.gguf"}))
                .unwrap();
        let s = sources(&j, Some(&base)).unwrap();
        assert_eq!(
            s,
            [
                Source::Path(file.clone()),
                Source::Url("http://router:8080/files/m.gguf".parse().unwrap())
            ]
        );
        j.path = Some("/no/such/file".into());
        assert_eq!(sources(&j, Some(&base)).unwrap().len(), 1);
        j.download_url = Some("ftp://x/y".into());
        let err = sources(&j, Some(&base)).unwrap_err().to_string();
        assert!(err.contains("not a readable file"), "{err}");
        let bare = job(serde_json::json!({"model":"gpt-oss:20b"})).unwrap();
        assert!(sources(&bare, None)
            .unwrap_err()
            .to_string()
            .contains("is null"));
    }
}
