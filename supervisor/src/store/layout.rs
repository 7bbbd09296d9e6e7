//! The on-disk layout, Ollama's: `manifests/<host>/<namespace>/<name>/<tag>`
//! (a Docker v2 manifest in JSON) and `blobs/sha256-<hex>` (content-addressed
//! files), under one root.
//!
//! A model's GGUF is the blob of its layer with media type
//! [`MEDIA_MODEL`]; a [`MEDIA_TEMPLATE`] layer holds a chat template and a
//! [`MEDIA_PARAMS`] layer default parameters (JSON), a [`MEDIA_SYSTEM`] layer
//! a default system prompt (reported, not applied). Manifests are written
//! with a temporary file and a rename, after every blob they name is in
//! place, so a reader (llm-node or Ollama) sees the old model or the new one,
//! never a half-written one. Multi-part GGUFs (Hugging Face
//! `-00001-of-0000N.gguf`) have one model layer per part; llama.cpp finds the
//! parts by file name, so they are served through `links/<digest>/` symlinks
//! named `model-0000i-of-0000N.gguf` (Ollama itself cannot load such models).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::name::ModelRef;

pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";
pub const MEDIA_SYSTEM: &str = "application/vnd.ollama.image.system";

/// One blob a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An image manifest (Docker v2 schema 2, as Ollama writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

impl Manifest {
    /// Every blob of the model: its config and its layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Layer> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    pub fn model_layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.media_type == MEDIA_MODEL)
    }

    /// Total size of every blob.
    pub fn size(&self) -> u64 {
        self.blobs().map(|l| l.size).sum()
    }
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("manifest {path}: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    context: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |source| LayoutError::Io {
        context,
        path,
        source,
    }
}

/// `sha256:<64 hex>` → the hex, lowercased.
///
/// # Errors
/// [`LayoutError::BadDigest`] for anything else (a digest becomes a file name).
pub fn digest_hex(digest: &str) -> Result<String, LayoutError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_ascii_lowercase())
        }
        _ => Err(LayoutError::BadDigest(digest.to_string())),
    }
}

/// A model found in a store, ready to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModel {
    pub name: ModelRef,
    /// The file to hand to llama.cpp (the first part of a multi-part model).
    pub gguf: PathBuf,
    /// The template layer's text, when there is one.
    pub template: Option<String>,
    /// The params layer, when there is one.
    pub params: Option<serde_json::Value>,
    /// The system layer's text (a Modelfile's `SYSTEM`), when there is one.
    pub system: Option<String>,
    pub manifest: Manifest,
    /// Modification time of the manifest, Unix seconds.
    pub modified: u64,
}

/// One store root in Ollama's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// `blobs/sha256-<hex>` of `digest`.
    ///
    /// # Errors
    /// [`LayoutError::BadDigest`].
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        Ok(self
            .blobs_dir()
            .join(format!("sha256-{}", digest_hex(digest)?)))
    }

    pub fn manifest_path(&self, name: &ModelRef) -> PathBuf {
        self.root.join(name.manifest_rel_path())
    }

    /// The manifest of `name`; `None` when there is none.
    ///
    /// # Errors
    /// [`LayoutError`] when it exists but cannot be read or parsed.
    pub fn read_manifest(&self, name: &ModelRef) -> Result<Option<Manifest>, LayoutError> {
        let path = self.manifest_path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LayoutError::BadManifest {
                path,
                message: e.to_string(),
            })
    }

    /// `name` as a servable model, when its manifest and every model blob exist.
    ///
    /// # Errors
    /// [`LayoutError`] for an unreadable or broken manifest or missing blobs.
    pub fn resolve(&self, name: &ModelRef) -> Result<Option<LocalModel>, LayoutError> {
        let Some(manifest) = self.read_manifest(name)? else {
            return Ok(None);
        };
        let path = self.manifest_path(name);
        let broken = |message: String| LayoutError::BadManifest {
            path: path.clone(),
            message,
        };
        let parts: Vec<&Layer> = manifest.model_layers().collect();
        if parts.is_empty() {
            return Err(broken("no model layer".into()));
        }
        for layer in &parts {
            let blob = self.blob_path(&layer.digest)?;
            if !blob.is_file() {
                return Err(broken(format!("blob {} is missing", blob.display())));
            }
        }
        let gguf = if parts.len() == 1 {
            self.blob_path(&parts[0].digest)?
        } else {
            self.split_links(&parts)?
        };
        let read_text = |media: &str| -> Option<String> {
            let layer = manifest.layers.iter().find(|l| l.media_type == media)?;
            std::fs::read_to_string(self.blob_path(&layer.digest).ok()?).ok()
        };
        let template = read_text(MEDIA_TEMPLATE);
        let params = read_text(MEDIA_PARAMS).and_then(|t| serde_json::from_str(&t).ok());
        let system = read_text(MEDIA_SYSTEM);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(Some(LocalModel {
            name: name.clone(),
            gguf,
            template,
            params,
            system,
            manifest,
            modified,
        }))
    }

    /// `links/<first digest>/model-0000i-of-0000N.gguf` → the part blobs; returns the first.
    fn split_links(&self, parts: &[&Layer]) -> Result<PathBuf, LayoutError> {
        let dir = self.root.join("links").join(digest_hex(&parts[0].digest)?);
        std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let n = parts.len();
        for (i, layer) in parts.iter().enumerate() {
            let link = dir.join(split_name(i + 1, n));
            let target = self.blob_path(&layer.digest)?;
            if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).map_err(io_err("cannot link", &link))?;
            }
        }
        Ok(dir.join(split_name(1, n)))
    }

    /// Every model of this store whose manifest resolves; broken ones are logged and skipped.
    pub fn list(&self) -> Vec<LocalModel> {
        let mut out = Vec::new();
        let base = self.root.join("manifests");
        for host in subdirs(&base) {
            for ns in subdirs(&base.join(&host)) {
                for name in subdirs(&base.join(&host).join(&ns)) {
                    let dir = base.join(&host).join(&ns).join(&name);
                    for tag in files(&dir) {
                        let Some(r) = ModelRef::from_manifest_parts([&host, &ns, &name, &tag])
                        else {
                            continue;
                        };
                        match self.resolve(&r) {
                            Ok(Some(m)) => out.push(m),
                            Ok(None) => {}
                            Err(e) => tracing::warn!("skipping a store entry: {e}"),
                        }
                    }
                }
            }
        }
        out.sort_by_key(|m| m.name.to_string());
        out
    }

    /// Writes `manifest` for `name` atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`LayoutError::Io`].
    pub fn write_manifest(&self, name: &ModelRef, manifest: &Manifest) -> Result<(), LayoutError> {
        let path = self.manifest_path(name);
        let dir = path.parent().expect("manifest paths have a parent");
        std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.manifest_parts()[3],
            std::process::id()
        ));
        let body = serde_json::to_vec(manifest).expect("manifests serialise");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()
        };
        write().map_err(io_err("cannot write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("cannot rename onto", &path))
    }

    /// Writes a small blob (config, template) and returns its layer.
    ///
    /// # Errors
    /// [`LayoutError::Io`].
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Layer, LayoutError> {
        let digest = format!("sha256:{}", super::download::sha256_hex(bytes));
        let path = self.blob_path(&digest)?;
        if !path.is_file() {
            let dir = self.blobs_dir();
            std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
            let tmp = dir.join(format!(".put-{}", uuid::Uuid::new_v4()));
            std::fs::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err("cannot rename onto", &path))?;
        }
        Ok(Layer {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
        })
    }

    /// A manifest for `layers`, with a minimal config blob Ollama accepts.
    ///
    /// # Errors
    /// [`LayoutError::Io`] writing the config blob.
    pub fn manifest_for(&self, layers: Vec<Layer>) -> Result<Manifest, LayoutError> {
        let config = serde_json::json!({
            "model_format": "gguf",
            "model_family": "",
            "model_families": null,
            "model_type": "",
            "file_type": "",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
        });
        let config = self.put_blob(MEDIA_CONFIG, config.to_string().as_bytes())?;
        Ok(Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            config,
            layers,
        })
    }

    /// Removes `name`'s manifest, then every blob no other manifest refers to.
    /// Returns whether there was a manifest.
    ///
    /// # Errors
    /// [`LayoutError::Io`].
    pub fn remove(&self, name: &ModelRef) -> Result<bool, LayoutError> {
        let path = self.manifest_path(name);
        let Some(manifest) = self.read_manifest(name).ok().flatten() else {
            return Ok(false);
        };
        std::fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        let mut in_use = std::collections::HashSet::new();
        for other in self.list() {
            in_use.extend(other.manifest.blobs().map(|l| l.digest.clone()));
        }
        for layer in manifest.blobs() {
            if !in_use.contains(&layer.digest) {
                if let Ok(blob) = self.blob_path(&layer.digest) {
                    let _ = std::fs::remove_file(blob);
                }
            }
        }
        if let Some(first) = manifest.model_layers().next() {
            if let Ok(hex) = digest_hex(&first.digest) {
                if !in_use.contains(&first.digest) {
                    let _ = std::fs::remove_dir_all(self.root.join("links").join(hex));
                }
            }
        }
        Ok(true)
    }
}

/// `model-00002-of-00003.gguf`: the names llama.cpp derives the other parts from.
pub fn split_name(i: usize, n: usize) -> String {
    format!("model-{i:05}-of-{n:05}.gguf")
}

fn subdirs(dir: &Path) -> Vec<String> {
    entries(dir, true)
}

fn files(dir: &Path) -> Vec<String> {
    entries(dir, false)
}

fn entries(dir: &Path, want_dirs: bool) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == want_dirs))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(name: &str, gguf: &[u8], template: Option<&str>) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut layers = vec![layout.put_blob(MEDIA_MODEL, gguf).unwrap()];
        if let Some(t) = template {
            layers.push(layout.put_blob(MEDIA_TEMPLATE, t.as_bytes()).unwrap());
        }
        layers.push(
            layout
                .put_blob(MEDIA_PARAMS, br#"{"stop":["<end>"]}"#)
                .unwrap(),
        );
        let manifest = layout.manifest_for(layers).unwrap();
        layout
            .write_manifest(&ModelRef::parse(name).unwrap(), &manifest)
            .unwrap();
        (dir, layout)
    }

    #[test]
    fn a_written_model_resolves_to_its_blob_with_template_and_params() {
        let (dir, layout) = store_with("tiny:v1", b"GGUF-tiny", Some("{{ .Prompt }}"));
        let m = layout
            .resolve(&ModelRef::parse("tiny:v1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(&m.gguf).unwrap(), b"GGUF-tiny");
        assert!(m.gguf.starts_with(dir.path().join("blobs")));
        assert_eq!(m.template.as_deref(), Some("{{ .Prompt }}"));
        assert_eq!(m.params.unwrap()["stop"][0], "<end>");
        assert!(dir
            .path()
            .join("manifests/registry.ollama.ai/library/tiny/v1")
            .is_file());
        let names: Vec<String> = layout.list().iter().map(|m| m.name.to_string()).collect();
        assert_eq!(names, ["tiny:v1"]);
    }

    #[test]
    fn remove_keeps_blobs_other_models_use() {
        let (_dir, layout) = store_with("a:1", b"GGUF-shared", None);
        let shared = layout.list()[0].manifest.clone();
        layout
            .write_manifest(&ModelRef::parse("b:1").unwrap(), &shared)
            .unwrap();
        assert!(layout.remove(&ModelRef::parse("a:1").unwrap()).unwrap());
        let b = layout
            .resolve(&ModelRef::parse("b:1").unwrap())
            .unwrap()
            .unwrap();
        assert!(b.gguf.is_file());
        assert!(layout.remove(&ModelRef::parse("b:1").unwrap()).unwrap());
        assert!(!b.gguf.exists());
        assert!(!layout.remove(&ModelRef::parse("b:1").unwrap()).unwrap());
    }

    #[test]
    fn digests_are_checked_before_they_become_file_names() {
        for bad in ["sha256:../../x", "md5:abc", "sha256:zz", ""] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        let ok = format!("sha256:{}", "A".repeat(64));
        assert_eq!(digest_hex(&ok).unwrap(), "a".repeat(64));
    }

    #[test]
    fn multi_part_models_are_served_through_named_links() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let layers = vec![
            layout.put_blob(MEDIA_MODEL, b"GGUF-1").unwrap(),
            layout.put_blob(MEDIA_MODEL, b"GGUF-2").unwrap(),
        ];
        let manifest = layout.manifest_for(layers).unwrap();
        let name = ModelRef::parse("hf.co/o/r:Q4_K_M").unwrap();
        layout.write_manifest(&name, &manifest).unwrap();
        let m = layout.resolve(&name).unwrap().unwrap();
        assert!(m.gguf.ends_with("model-00001-of-00002.gguf"));
        let second = m.gguf.with_file_name("model-00002-of-00002.gguf");
        assert_eq!(std::fs::read(second).unwrap(), b"GGUF-2");
    }
}
