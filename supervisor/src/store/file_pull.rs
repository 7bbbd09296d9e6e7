//! A file pull: one GGUF from a path this host can read or from a URL, into
//! the router's named directories ([`super::named_dirs`], contract §4.4).
//!
//! The sources are tried in order: the `path` when it is a readable file here
//! (copied), then the `url` (downloaded). Both go through the one
//! [`Downloader`](super::download::Downloader), so a file pull is resumable,
//! verified (`size`, `sha256`) and installed atomically like a blob. A request
//! with neither source falls back to the store's own names
//! ([`Store::ensure`]: the registry or Hugging Face), which is how the router's
//! predefined models (contract §6) arrive. A file already in place and intact
//! is adopted without a transfer. Both reserve their disk space first
//! ([`super::space`]), as the store's own pulls do.

use std::path::{Path, PathBuf};

use super::download::{self, BlobRequest};
use super::named_dirs::model_file;
use super::{ModelRef, OnProgress, Progress, Store, StoreError};

/// One file to put at `<models_dir>/<name_tag>/model.gguf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilePull {
    /// The router's model id; names the directory.
    pub model: String,
    /// A file that may be readable on this host (a shared filesystem).
    pub path: Option<PathBuf>,
    /// Where to download it from (absolute, `http` or `https`).
    pub url: Option<reqwest::Url>,
    /// Written to `<dir>/metadata.json` and served with the model.
    pub chat_template: Option<String>,
    pub size: Option<u64>,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: Option<String>,
}

/// Where a pulled file is, and the chat template to serve it with.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledFile {
    pub gguf: PathBuf,
    pub template: Option<String>,
}

impl FilePull {
    fn digest(&self) -> Option<String> {
        self.sha256.as_ref().map(|h| format!("sha256:{h}"))
    }

    /// Why nothing could be fetched, naming what was offered.
    fn no_source(&self) -> StoreError {
        StoreError::NoSource(format!(
            "no source for {}: path {} and download_url {}, and the name is not in the model store",
            self.model,
            match &self.path {
                Some(p) => format!("{} is not a readable file on this host", p.display()),
                None => "is null".into(),
            },
            if self.url.is_some() {
                "failed"
            } else {
                "is null or unusable"
            },
        ))
    }
}

impl Store {
    /// Puts `req`'s file under `models_dir` (see the module docs).
    ///
    /// # Errors
    /// [`StoreError`]; the destination is then untouched.
    pub async fn pull_file(
        &self,
        req: &FilePull,
        models_dir: &Path,
        progress: OnProgress<'_>,
    ) -> Result<PulledFile, StoreError> {
        let dest = model_file(models_dir, &req.model)?;
        write_metadata(&dest, req.chat_template.as_deref()).await;
        let found = |gguf| PulledFile {
            gguf,
            template: req.chat_template.clone(),
        };
        if download::is_intact(&dest, req.digest().as_deref(), req.size).await {
            tracing::info!(model = %req.model, path = %dest.display(), "model file already present");
            return Ok(found(dest));
        }
        let readable = req.path.as_ref().filter(|p| is_readable_file(p));
        if readable.is_none() && req.url.is_none() {
            let Ok(name) = ModelRef::parse(&req.model) else {
                return Err(req.no_source());
            };
            let model = self.ensure(&name, progress).await?;
            return Ok(found(model.gguf));
        }
        let mut last = req.no_source();
        if let Some(path) = readable {
            match self.copy_file(req, path, &dest, progress).await {
                Ok(()) => return Ok(found(dest)),
                Err(e) => {
                    tracing::warn!(model = %req.model, source = %path.display(), "copy failed: {e}");
                    last = e;
                }
            }
        }
        if let Some(url) = &req.url {
            self.download_file(req, url, &dest, progress).await?;
            return Ok(found(dest));
        }
        Err(last)
    }

    async fn copy_file(
        &self,
        req: &FilePull,
        from: &Path,
        dest: &Path,
        progress: OnProgress<'_>,
    ) -> Result<(), StoreError> {
        let size = std::fs::metadata(from).map_or(0, |m| m.len());
        let _space = self.reserve(dest.parent().unwrap_or(dest), size)?;
        let on_bytes = bytes_progress(&req.model, progress);
        let digest = req.digest();
        self.inner
            .downloader
            .copy(from, digest.as_deref(), req.size, dest, &on_bytes)
            .await?;
        Ok(())
    }

    async fn download_file(
        &self,
        req: &FilePull,
        url: &reqwest::Url,
        dest: &Path,
        progress: OnProgress<'_>,
    ) -> Result<(), StoreError> {
        let blob = BlobRequest {
            url: url.clone(),
            digest: req.digest(),
            size: req.size,
            bearer: None,
        };
        // Of unknown size: nothing to reserve; bounded by --max-download-gib.
        let need = self.download_need(req.size);
        let _space = self.reserve(dest.parent().unwrap_or(dest), need)?;
        let on_bytes = bytes_progress(&req.model, progress);
        self.inner.downloader.fetch(&blob, dest, &on_bytes).await?;
        Ok(())
    }
}

/// Byte counts as [`Progress`] lines `pulling <model>`.
fn bytes_progress<'a>(
    model: &'a str,
    progress: OnProgress<'a>,
) -> impl Fn(u64, Option<u64>) + Sync + 'a {
    move |done, total| {
        progress(Progress {
            status: format!("pulling {model}"),
            digest: None,
            total,
            completed: Some(done),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_source_names_what_was_offered() {
        let req = FilePull {
            model: "m".into(),
            path: Some("/no/such/file".into()),
            ..FilePull::default()
        };
        let err = req.no_source().to_string();
        assert!(err.contains("not a readable file"), "{err}");
        assert!(err.contains("is null or unusable"), "{err}");
    }

    #[actix_rt::test]
    async fn intact_files_are_checked_by_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let sha = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(download::is_intact(&f, Some(sha), Some(3)).await);
        assert!(!download::is_intact(&f, None, Some(4)).await);
        assert!(!download::is_intact(&f, Some(&sha.replace('b', "c")), None).await);
        assert!(!download::is_intact(dir.path(), None, None).await);
        assert!(!download::is_intact(&dir.path().join("none"), None, None).await);
    }
}
