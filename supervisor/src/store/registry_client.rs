//! An Ollama-style registry: the Docker registry v2 API subset Ollama uses.
//!
//! - `GET {base}/v2/<namespace>/<name>/manifests/<tag>` with
//!   `Accept: application/vnd.docker.distribution.manifest.v2+json` → the manifest;
//! - `GET {base}/v2/<namespace>/<name>/blobs/<digest>` → the blob (the public
//!   registry redirects to a CDN; `Range` works on both).
//!
//! `{base}` is `--registry-url` for names in the default registry
//! (`registry.ollama.ai`), and `https://<host>` for names that carry a host.

use reqwest::header::ACCEPT;

use super::layout::{digest_hex, Manifest, MEDIA_MANIFEST};
use super::name::{ModelRef, DEFAULT_REGISTRY};

/// Why a manifest could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model {0} not found in the registry")]
    NotFound(String),
    #[error("registry {url}: {message}")]
    Failed { url: String, message: String },
}

/// Where the registry of `name` is.
///
/// # Panics
/// When `name` is not a [`ModelRef::Registry`].
pub fn base_url(name: &ModelRef, default: &reqwest::Url) -> String {
    let ModelRef::Registry { host, .. } = name else {
        panic!("not a registry name: {name}");
    };
    if host == DEFAULT_REGISTRY {
        default.as_str().trim_end_matches('/').to_string()
    } else {
        format!("https://{host}")
    }
}

fn repo_path(name: &ModelRef) -> String {
    let [_, ns, n, _] = name.manifest_parts();
    format!("{ns}/{n}")
}

/// The manifest of `name`, with every digest checked.
///
/// # Errors
/// [`RegistryError::NotFound`] for a 404, [`RegistryError::Failed`] otherwise.
pub async fn fetch_manifest(
    http: &reqwest::Client,
    name: &ModelRef,
    default: &reqwest::Url,
) -> Result<Manifest, RegistryError> {
    let tag = name.manifest_parts()[3];
    let url = format!(
        "{}/v2/{}/manifests/{tag}",
        base_url(name, default),
        repo_path(name)
    );
    let failed = |message: String| RegistryError::Failed {
        url: url.clone(),
        message,
    };
    let resp = http
        .get(&url)
        .header(ACCEPT, MEDIA_MANIFEST)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| failed(crate::net::describe(&e)))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound(name.to_string()));
    }
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {}", resp.status())));
    }
    let manifest: Manifest = resp
        .json()
        .await
        .map_err(|e| failed(format!("bad manifest: {e}")))?;
    for layer in manifest.blobs() {
        digest_hex(&layer.digest).map_err(|e| failed(e.to_string()))?;
    }
    if manifest.model_layers().next().is_none() {
        return Err(failed("the manifest has no model layer".into()));
    }
    Ok(manifest)
}

/// The URL of blob `digest` of `name`.
///
/// # Errors
/// [`RegistryError::Failed`] when the URL cannot be built.
pub fn blob_url(
    name: &ModelRef,
    default: &reqwest::Url,
    digest: &str,
) -> Result<reqwest::Url, RegistryError> {
    let url = format!(
        "{}/v2/{}/blobs/{digest}",
        base_url(name, default),
        repo_path(name)
    );
    reqwest::Url::parse(&url).map_err(|e| RegistryError::Failed {
        url,
        message: e.to_string(),
    })
}
