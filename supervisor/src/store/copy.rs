//! `/api/copy`: a second name for a stored model, without copying its weights.
//!
//! A model in this store is its manifest; the blobs are content-addressed and
//! shared, so a copy is one more manifest naming the same blobs (as Ollama's
//! own copy is). A model that lives only in the read-only Ollama store has its
//! blobs hard-linked into this store first (copied when the two are on
//! different file systems), so the new name never depends on a store llm-node
//! does not own. Copying onto an existing name replaces it, as Ollama does.

use super::layout::{io_err, LayoutError};
use super::{LocalModel, ModelRef, Store, StoreError};

impl Store {
    /// Gives the model `from` the name `to` in this store; returns the model as `to`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when `from` is not stored; [`StoreError::Layout`]
    /// when the manifest or a blob cannot be written.
    pub fn copy(&self, from: &ModelRef, to: &ModelRef) -> Result<LocalModel, StoreError> {
        let source = self
            .find(from)?
            .ok_or_else(|| StoreError::NotFound(from.to_string()))?;
        let layout = self.layout();
        for layer in source.manifest.blobs() {
            let target = layout.blob_path(&layer.digest)?;
            if target.is_file() {
                continue;
            }
            let origin = self
                .blob_anywhere(&layer.digest)?
                .ok_or_else(|| StoreError::NotFound(from.to_string()))?;
            link_or_copy(&origin, &target)?;
        }
        let _lock = super::path_lock::path_lock(&layout.manifest_path(to));
        layout.write_manifest(to, &source.manifest)?;
        layout
            .resolve(to)?
            .ok_or_else(|| StoreError::NotFound(to.to_string()))
    }
}

impl Store {
    /// The blob `digest` in this store or the Ollama store.
    fn blob_anywhere(&self, digest: &str) -> Result<Option<std::path::PathBuf>, LayoutError> {
        for layout in std::iter::once(&self.inner.layout).chain(&self.inner.extra) {
            let path = layout.blob_path(digest)?;
            if path.is_file() {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }
}

/// `target` as a hard link to `origin`, or a copy of it across file systems.
fn link_or_copy(origin: &std::path::Path, target: &std::path::Path) -> Result<(), LayoutError> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    }
    if std::fs::hard_link(origin, target).is_ok() {
        return Ok(());
    }
    let tmp = target.with_extension(format!("copy-{}", uuid::Uuid::new_v4()));
    std::fs::copy(origin, &tmp).map_err(io_err("cannot copy", origin))?;
    std::fs::rename(&tmp, target).map_err(io_err("cannot rename onto", target))
}

#[cfg(test)]
mod tests {
    use super::super::layout::{Layout, MEDIA_MODEL, MEDIA_TEMPLATE};
    use super::*;

    fn store_with(dir: &std::path::Path, extra: Option<&std::path::Path>) -> Store {
        let args = super::super::StoreArgs {
            store_dir: Some(dir.to_path_buf()),
            ollama_models: extra.map(std::path::Path::to_path_buf),
            no_ollama_models: extra.is_none(),
            registry_url: "http://127.0.0.1:9".into(),
            hf_endpoint: "http://127.0.0.1:9".into(),
            hf_token: None,
            max_queued_pulls: 1,
            pull_parallel: 1,
            max_download_gib: 1,
            python: None,
            convert_script: None,
        };
        Store::new(&args).unwrap()
    }

    fn put_model(layout: &Layout, name: &str, weights: &[u8]) -> ModelRef {
        let name = ModelRef::parse(name).unwrap();
        let model = layout.put_blob(MEDIA_MODEL, weights).unwrap();
        let template = layout.put_blob(MEDIA_TEMPLATE, b"{{ prompt }}").unwrap();
        let manifest = layout.manifest_for(vec![model, template]).unwrap();
        layout.write_manifest(&name, &manifest).unwrap();
        name
    }

    #[test]
    fn a_copy_is_a_new_name_for_the_same_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), None);
        let from = put_model(store.layout(), "tiny:latest", b"GGUF weights");
        let blobs = std::fs::read_dir(store.layout().blobs_dir())
            .unwrap()
            .count();
        let to = ModelRef::parse("me/tiny-copy:v2").unwrap();
        let copied = store.copy(&from, &to).unwrap();
        let original = store.find(&from).unwrap().unwrap();
        assert_eq!(copied.name, to);
        assert_eq!(copied.gguf, original.gguf, "the same blob, not a copy");
        assert_eq!(copied.template.as_deref(), Some("{{ prompt }}"));
        assert_eq!(copied.manifest, original.manifest);
        let after = std::fs::read_dir(store.layout().blobs_dir())
            .unwrap()
            .count();
        assert_eq!(after, blobs, "no new blob");
        let names: Vec<String> = store.list().iter().map(|m| m.name.to_string()).collect();
        assert_eq!(names, ["me/tiny-copy:v2", "tiny:latest"]);
        // Removing one name keeps the other whole.
        store.remove(&from).unwrap();
        assert!(store.find(&to).unwrap().unwrap().gguf.is_file());
    }

    #[test]
    fn copying_replaces_the_destination_and_refuses_an_unknown_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), None);
        let a = put_model(store.layout(), "a", b"weights a");
        let b = put_model(store.layout(), "b", b"weights b");
        let copied = store.copy(&a, &b).unwrap();
        assert_eq!(copied.gguf, store.find(&a).unwrap().unwrap().gguf);
        let missing = ModelRef::parse("nope").unwrap();
        let err = store.copy(&missing, &b).unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound(ref n) if n == "nope:latest"),
            "{err}"
        );
    }

    #[test]
    fn a_model_of_the_ollama_store_is_linked_into_this_store() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let from = put_model(&Layout::new(theirs.path()), "ext:1b", b"their weights");
        let store = store_with(ours.path(), Some(theirs.path()));
        let to = ModelRef::parse("mine").unwrap();
        let copied = store.copy(&from, &to).unwrap();
        assert!(copied.gguf.starts_with(ours.path()), "{:?}", copied.gguf);
        assert_eq!(std::fs::read(&copied.gguf).unwrap(), b"their weights");
    }
}
