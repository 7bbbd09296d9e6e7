//! An Ollama-style registry: the Docker registry v2 API subset Ollama uses.
//!
//! - `GET {base}/v2/<namespace>/<name>/manifests/<tag>` with
//!   `Accept: application/vnd.docker.distribution.manifest.v2+json` → the manifest;
//! - `GET {base}/v2/<namespace>/<name>/blobs/<digest>` → the blob (the public
//!   registry redirects to a CDN; `Range` works on both).
//!
//! `{base}` is `--registry-url` for names in the default registry
//! (`registry.ollama.ai`), and `https://<host>` for names that carry a host,
//! or `http://<host>` when the pull is `insecure` (Ollama's `"insecure": true`,
//! for a plain-HTTP private registry).

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
pub fn base_url(name: &ModelRef, default: &reqwest::Url, insecure: bool) -> String {
    let ModelRef::Registry { host, .. } = name else {
        panic!("not a registry name: {name}");
    };
    if host == DEFAULT_REGISTRY {
        default.as_str().trim_end_matches('/').to_string()
    } else if insecure {
        format!("http://{host}")
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
    insecure: bool,
) -> Result<Manifest, RegistryError> {
    let tag = name.manifest_parts()[3];
    let url = format!(
        "{}/v2/{}/manifests/{tag}",
        base_url(name, default, insecure),
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
    insecure: bool,
    digest: &str,
) -> Result<reqwest::Url, RegistryError> {
    let url = format!(
        "{}/v2/{}/blobs/{digest}",
        base_url(name, default, insecure),
        repo_path(name)
    );
    reqwest::Url::parse(&url).map_err(|e| RegistryError::Failed {
        url,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_reached_over_https_unless_the_pull_is_insecure() {
        let default = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let cases = [
            ("tiny", false, "http://127.0.0.1:9"),
            ("tiny", true, "http://127.0.0.1:9"),
            ("me/tiny:v1", false, "http://127.0.0.1:9"),
            (
                "example.com:5000/ns/tiny",
                false,
                "https://example.com:5000",
            ),
            ("example.com:5000/ns/tiny", true, "http://example.com:5000"),
            ("localhost/ns/tiny:v1", true, "http://localhost"),
        ];
        for (name, insecure, base) in cases {
            let name = ModelRef::parse(name).unwrap();
            assert_eq!(
                base_url(&name, &default, insecure),
                base,
                "{name} {insecure}"
            );
        }
        let name = ModelRef::parse("example.com/ns/tiny:v1").unwrap();
        let url = blob_url(&name, &default, true, "sha256:00").unwrap();
        assert_eq!(
            url.as_str(),
            "http://example.com/v2/ns/tiny/blobs/sha256:00"
        );
    }
}
