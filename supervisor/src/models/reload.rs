//! What a configuration reload changes: a pure decision over the models the
//! last configuration served and the models the new one names.
//!
//! [`plan`] sorts every model into one bucket:
//! - **add**: named now, not before: a new actor (loaded at once if `preload`).
//! - **restart**: its file or a setting its worker starts with changed
//!   ([`ModelProfile::needs_restart`]): drained and restarted with the new
//!   settings by the existing restart machinery (or just re-armed if it is not
//!   loaded).
//! - **update**: only supervisor-side settings changed (aliases, TTL, preload,
//!   `max_tokens`, sampling defaults): the entry is swapped, the worker and the
//!   requests on it are untouched.
//! - **unchanged**: nothing to do.
//! - **remove**: named before, not now: drained and unloaded, then forgotten.
//!
//! Models the configuration never named (added by a pull) are not in
//! `current`, so a reload never touches them. Must not log.

use std::sync::Arc;

use serde::Serialize;

use super::profile::ModelProfile;
use super::spec::ModelSpec;

/// Reads the configured models afresh (flags plus the models configuration
/// file): what [`super::Models::reload`] calls. An `Err` is the whole reason,
/// `file:line: field: message` for a bad file; the running models stay as they are.
pub type ConfigSource =
    Arc<dyn Fn() -> Result<Vec<(ModelSpec, ModelProfile)>, String> + Send + Sync>;

/// What a reload does, by model key.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub add: Vec<(ModelSpec, ModelProfile)>,
    pub restart: Vec<(ModelSpec, ModelProfile)>,
    pub update: Vec<(ModelSpec, ModelProfile)>,
    pub unchanged: Vec<String>,
    pub remove: Vec<String>,
}

/// What a reload did: model names in each bucket, for the admin API and the log.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub restarted: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
}

/// Sorts the models of `current` (the configured ones running now) and
/// `next` (the new configuration) into a [`Plan`].
pub fn plan(
    current: &[(ModelSpec, Arc<ModelProfile>)],
    next: Vec<(ModelSpec, ModelProfile)>,
) -> Plan {
    let mut out = Plan::default();
    for (spec, profile) in next {
        match current.iter().find(|(s, _)| s.key() == spec.key()) {
            None => out.add.push((spec, profile)),
            Some((old, old_profile)) => {
                if old.path != spec.path || old_profile.needs_restart(&profile) {
                    out.restart.push((spec, profile));
                } else if **old_profile != profile || old.name != spec.name {
                    out.update.push((spec, profile));
                } else {
                    out.unchanged.push(spec.key());
                }
            }
        }
    }
    let named = |key: &str| {
        out.add
            .iter()
            .chain(&out.restart)
            .chain(&out.update)
            .any(|(s, _)| s.key() == key)
            || out.unchanged.iter().any(|k| k == key)
    };
    let removed: Vec<String> = current
        .iter()
        .map(|(s, _)| s.key())
        .filter(|k| !named(k))
        .collect();
    out.remove = removed;
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(name: &str, path: &str) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            path: path.into(),
        }
    }

    fn with(f: impl FnOnce(&mut ModelProfile)) -> ModelProfile {
        let mut p = ModelProfile::default();
        f(&mut p);
        p
    }

    #[test]
    fn each_model_lands_in_the_bucket_its_change_needs() {
        let current = vec![
            (spec("same", "/s.gguf"), Arc::new(ModelProfile::default())),
            (spec("moved", "/m.gguf"), Arc::new(ModelProfile::default())),
            (spec("ctx", "/c.gguf"), Arc::new(ModelProfile::default())),
            (spec("ttl", "/t.gguf"), Arc::new(ModelProfile::default())),
            (spec("gone", "/g.gguf"), Arc::new(ModelProfile::default())),
        ];
        let next = vec![
            (spec("same", "/s.gguf"), ModelProfile::default()),
            (spec("moved", "/elsewhere.gguf"), ModelProfile::default()),
            (spec("ctx", "/c.gguf"), with(|p| p.ctx_size = Some(1024))),
            (
                spec("ttl", "/t.gguf"),
                with(|p| p.ttl = Some(Duration::from_secs(5))),
            ),
            (spec("new", "/n.gguf"), ModelProfile::default()),
        ];
        let plan = plan(&current, next);
        let names = |v: &[(ModelSpec, ModelProfile)]| -> Vec<String> {
            v.iter().map(|(s, _)| s.name.clone()).collect()
        };
        assert_eq!(names(&plan.add), ["new"]);
        assert_eq!(names(&plan.restart), ["moved", "ctx"]);
        assert_eq!(names(&plan.update), ["ttl"]);
        assert_eq!(plan.unchanged, ["same"]);
        assert_eq!(plan.remove, ["gone"]);
    }

    #[test]
    fn the_same_configuration_changes_nothing() {
        let profile = with(|p| {
            p.aliases = vec!["a".into()];
            p.parallel = Some(2);
        });
        let current = vec![(spec("m", "/m.gguf"), Arc::new(profile.clone()))];
        let plan = plan(&current, vec![(spec("M", "/m.gguf"), profile)]);
        assert_eq!(
            plan.update.len(),
            1,
            "a new spelling of the name is an update"
        );
        assert!(plan.restart.is_empty() && plan.add.is_empty() && plan.remove.is_empty());
        let plan2 = super::plan(
            &[(spec("m", "/m.gguf"), Arc::new(ModelProfile::default()))],
            vec![(spec("m", "/m.gguf"), ModelProfile::default())],
        );
        assert_eq!(plan2.unchanged, ["m"]);
    }

    #[test]
    fn an_empty_configuration_removes_every_configured_model() {
        let current = vec![(spec("a", "/a.gguf"), Arc::new(ModelProfile::default()))];
        let plan = plan(&current, Vec::new());
        assert_eq!(plan.remove, ["a"]);
    }
}
