//! Model sync: every interval, read the router's `GET /v1/models` and queue a
//! pull for each listed model this node lacks and can get (contract §4.1–4.2).
//!
//! The router's list needs an API key at HEAD (401 without one); a node
//! without `--router-api-key` logs that once and relies on `/pull` alone, as
//! the C++ node effectively does. Entries without `path` or `download_url`
//! (the 4 predefined models) are skipped: there is nothing to fetch them from.
//! Pruning models the router no longer lists is not implemented.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::client::{CallError, RouterClient, RouterModel};
use super::pull::PullJob;
use super::{Member, ModelSnapshot, NodeModels};

/// The pulls that bring this node up to the router's list: one per listed model that
/// is not served here (ids compared case-insensitively) and offers a source.
pub fn missing_models(router: &[RouterModel], local: &[ModelSnapshot]) -> Vec<PullJob> {
    router
        .iter()
        .filter(|m| !local.iter().any(|l| l.name.eq_ignore_ascii_case(&m.id)))
        .filter(|m| has_text(&m.path) || has_text(&m.download_url))
        .filter(|m| crate::store::named_dirs::model_dir(&m.id).is_ok())
        .map(|m| PullJob {
            model: m.id.clone(),
            task_id: None,
            path: m
                .path
                .as_ref()
                .filter(|p| !p.trim().is_empty())
                .map(PathBuf::from),
            download_url: m.download_url.clone().filter(|u| !u.trim().is_empty()),
            chat_template: m.chat_template.clone(),
            size: m.size,
            sha256: m.sha256.clone(),
        })
        .collect()
}

fn has_text(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.trim().is_empty())
}

/// Runs sync every `interval` once the node has registered, until `shutdown`.
pub async fn run(
    client: RouterClient,
    models: Arc<dyn NodeModels>,
    member: Member,
    interval: Duration,
    mut registrations: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = registrations.wait_for(|n| *n > 0) => {}
        _ = shutdown.wait_for(|stop| *stop) => return,
    }
    let mut warned_auth = false;
    loop {
        match client.models().await {
            Ok(list) => {
                let local = models.snapshot().await;
                for job in missing_models(&list, &local) {
                    // A full pull queue was logged; the next round asks again.
                    let _ = member.submit(job);
                }
            }
            Err(CallError::Status { status: 401, .. }) if !warned_auth => {
                warned_auth = true;
                tracing::warn!("model sync: the router wants an API key for /v1/models; \
                    set --router-api-key (LLM_NODE_ROUTER_API_KEY). Models arrive through /pull only");
            }
            Err(CallError::Status { status: 401, .. }) => {}
            Err(e) => tracing::warn!("model sync failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, path: Option<&str>, url: Option<&str>) -> RouterModel {
        RouterModel {
            id: id.into(),
            path: path.map(Into::into),
            download_url: url.map(Into::into),
            chat_template: None,
            size: None,
            sha256: None,
        }
    }

    #[test]
    fn only_missing_models_with_a_source_are_pulled() {
        let router = [
            remote("gpt-oss:20b", None, None),
            remote("Served", None, Some("http://x/s.gguf")),
            remote("hf/a/b/c.gguf", None, Some("https://h/c.gguf")),
            remote("shared", Some("/r/models/shared_latest/model.gguf"), None),
            remote("blank", Some(" "), Some("")),
            remote("../escape", None, Some("http://x/e.gguf")),
        ];
        let local = [ModelSnapshot {
            name: "served".into(),
            state: crate::models::ModelState::Ready,
            servable: true,
            in_flight: 0,
        }];
        let jobs = missing_models(&router, &local);
        let names: Vec<_> = jobs.iter().map(|j| j.model.as_str()).collect();
        assert_eq!(names, ["hf/a/b/c.gguf", "shared"]);
        assert_eq!(jobs[0].task_id, None);
        assert_eq!(
            jobs[1].path,
            Some(PathBuf::from("/r/models/shared_latest/model.gguf"))
        );
    }
}
