//! The model store: where models come from and where they live.
//!
//! One content-addressed store in Ollama's layout (`manifests/`, `blobs/`) at
//! `--store-dir`, written so Ollama can read it too; an existing Ollama store
//! (`--ollama-models`, default `~/.ollama/models`) is read as well, never
//! written. Names ([`name`]) resolve to a GGUF on disk, or are pulled:
//! from an Ollama-style registry ([`registry_client`]), from Hugging Face
//! ([`hf`]: a GGUF by quant or file name, or a checkpoint converted by
//! llama.cpp's converter, [`convert`]). Every file is fetched by
//! [`download`]: parallel ranged parts, resumable, verified, installed
//! atomically. `docs/models.md` is the user's guide.
//!
//! A second layout lives beside it: the router's named directories
//! (`<models_dir>/<name>_<tag>/model.gguf`, [`named_dirs`]), filled by file
//! pulls ([`file_pull`]: a path this host can read, or a URL) through the same
//! downloader.
//!
//! # Layout
//! - [`Store`] (here): resolve, pull, list and remove models; no HTTP server, no actors.
//! - [`download`]: the one downloader (ranged parts, resume, SHA-256, atomic install, local copies).
//! - [`file_pull`]: a router file into the named directories.
//! - [`space`]: the disk-space ledger every pull reserves from before it writes.
//! - `path_lock`: the per-path locks that keep two pulls off the same files.
//! - [`pull_events`]: one listener's events of a pull (bounded: progress coalesced).
//! - [`service`]: the node's side: the one pull runner (Ollama's `/api/pull`, the
//!   router's `/pull` and sync) on the node's main arbiter, the one hot add;
//!   startup registration of stored models; `rm` of an idle model.
//! - [`copy`]: a second name for a stored model (a manifest, no weights copied).
//! - [`gguf`]: a GGUF file's metadata and tensor counts, read in pure Rust
//!   (what `/api/show` and `/api/tags` report).
//! - [`layout`], [`name`], [`named_dirs`], [`registry_client`], [`hf`], [`convert`],
//!   [`discover`]: the two layouts, names, the sources, conversion, `--models-dir` discovery.
//! - The routes are in `api::ollama` (`/api/pull`, `/api/tags`, `/api/delete`) and
//!   `api::router` (`/pull`); `cli::store` is their client.

pub mod convert;
pub mod copy;
pub mod discover;
pub mod download;
pub mod file_pull;
pub mod gguf;
pub mod hf;
pub mod layout;
pub mod name;
pub mod named_dirs;
mod path_lock;
pub mod pull_events;
pub mod registry_client;
pub mod service;
pub mod space;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use download::sha256_hex;
pub use file_pull::{FilePull, PulledFile};
pub use layout::{Layout, LocalModel};
pub use name::{ModelRef, NameError};
pub use pull_events::{PullEvent, PullEvents};
pub use service::{PullOrder, PullSource, Service};

use download::{BlobRequest, DownloadError, Downloader};
use hf::{Choice, HfError};
use layout::{Layer, LayoutError, MEDIA_MODEL};
use path_lock::path_lock;
use registry_client::RegistryError;
use space::{FreeBytes, Ledger, Reservation};

/// Where models are stored and fetched from (flags and environment).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Root of the model store, in Ollama's layout (`manifests/`, `blobs/`); pulled
    /// models go here [default: ~/.cache/llm-node/store].
    #[arg(long, env = "LLM_NODE_STORE_DIR", value_name = "DIR")]
    pub store_dir: Option<PathBuf>,

    /// An Ollama store whose models are served too (read-only)
    /// [default: ~/.ollama/models when it exists].
    #[arg(long, env = "OLLAMA_MODELS", value_name = "DIR")]
    pub ollama_models: Option<PathBuf>,

    /// Do not read an Ollama store.
    #[arg(long, env = "LLM_NODE_NO_OLLAMA_MODELS")]
    pub no_ollama_models: bool,

    /// Base URL of the Ollama-style registry for names without a host.
    #[arg(
        long,
        env = "LLM_NODE_REGISTRY_URL",
        default_value = "https://registry.ollama.ai"
    )]
    pub registry_url: String,

    /// Hugging Face Hub endpoint for `hf.co/...` and `hf/...` names.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,

    /// Hugging Face token, sent as a bearer token (gated or private repos).
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,

    /// Distinct pulls that may wait while 2 run; more are refused (503 with
    /// Retry-After) until one ends. A pull of a model already being pulled
    /// joins it and is not counted again.
    #[arg(long, env = "LLM_NODE_MAX_QUEUED_PULLS", default_value_t = service::DEFAULT_MAX_QUEUED_PULLS)]
    pub max_queued_pulls: usize,

    /// Ranged parts downloaded at once per file.
    #[arg(long, env = "LLM_NODE_PULL_PARALLEL", default_value_t = 4)]
    pub pull_parallel: usize,

    /// Largest file a pull accepts, in GiB; what bounds a download whose size
    /// the source does not declare.
    #[arg(long, env = "LLM_NODE_MAX_DOWNLOAD_GIB", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_download_gib: u64,

    /// Python interpreter that runs llama.cpp's `convert_hf_to_gguf.py`
    /// [default: the venv of scripts/setup-convert.sh, `$LLM_NODE_CACHE/convert/venv`, else python3].
    #[arg(long, env = "LLM_NODE_PYTHON")]
    pub python: Option<String>,

    /// Path of `convert_hf_to_gguf.py` [default: scripts/setup-convert.sh's copy in
    /// `$LLM_NODE_CACHE/convert/llama.cpp`, else the llama-cpp-sys-2 crate sources].
    #[arg(long, env = "LLM_NODE_CONVERT_SCRIPT", value_name = "PATH")]
    pub convert_script: Option<PathBuf>,
}

impl StoreArgs {
    /// `--store-dir`, else `$LLM_NODE_CACHE/store` (default `~/.cache/llm-node/store`).
    pub fn root(&self) -> PathBuf {
        self.store_dir.clone().unwrap_or_else(|| {
            crate::paths::cache_dir()
                .parent()
                .map_or_else(|| PathBuf::from("store"), |p| p.join("store"))
        })
    }

    /// The Ollama store to read, if any.
    pub fn ollama_root(&self) -> Option<PathBuf> {
        if self.no_ollama_models {
            return None;
        }
        match &self.ollama_models {
            Some(p) => Some(p.clone()),
            None => {
                let home = std::env::var_os("HOME")?;
                let p = PathBuf::from(home).join(".ollama/models");
                p.is_dir().then_some(p)
            }
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("model {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[error(transparent)]
    Download(DownloadError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Refused before writing (see [`space`]), or the disk filled up during
    /// the pull (its partial files are then deleted).
    #[error("not enough disk space in {dir}: {reason}")]
    NoSpace { dir: PathBuf, reason: String },
    #[error("model {0} is in use (requests in flight or loading); try again when it is idle")]
    InUse(String),
    #[error("model {name} is in the Ollama store {root}, which llm-node does not modify (use `ollama rm`)")]
    ReadOnly { name: String, root: PathBuf },
    #[error("the store is not configured correctly: {0}")]
    Config(String),
    #[error(transparent)]
    BadName(#[from] named_dirs::BadName),
    #[error("{0}")]
    NoSource(String),
    /// The failure of a pull this one joined (the same model, pulled once).
    #[error("{0}")]
    Joined(String),
    /// Too many distinct pulls wait already (`--max-queued-pulls`).
    #[error("{queued} pulls are waiting already; retry when one has ended")]
    Busy { queued: usize },
}

impl From<DownloadError> for StoreError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::NoSpace { path } => StoreError::NoSpace {
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                reason: "the disk filled up during the download; the partial download was deleted"
                    .into(),
            },
            e => StoreError::Download(e),
        }
    }
}

/// What kind of failure a [`StoreError`] is, for whoever answers the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No such model (locally or in the registry).
    NotFound,
    /// The model is serving or changing state.
    InUse,
    /// The model lives in a store llm-node does not modify.
    ReadOnly,
    /// Not enough disk space.
    NoSpace,
    /// The request cannot work (bad name, a repo without a usable model, …).
    Invalid,
    /// The pull failed on the way (network, registry, conversion, disk).
    Failed,
    /// The pull queue is full; retrying later may work.
    Busy,
}

impl StoreError {
    /// The message a client gets: [`Display`](std::fmt::Display) less the
    /// store's paths on disk (the log keeps them).
    pub fn public_message(&self) -> String {
        match self {
            StoreError::NoSpace { reason, .. } => {
                format!("not enough disk space for the model store: {reason}")
            }
            e => e.to_string(),
        }
    }

    /// The kind of this failure.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::NotFound(_) | StoreError::Registry(RegistryError::NotFound(_)) => {
                StoreErrorKind::NotFound
            }
            StoreError::InUse(_) => StoreErrorKind::InUse,
            StoreError::ReadOnly { .. } => StoreErrorKind::ReadOnly,
            StoreError::NoSpace { .. } => StoreErrorKind::NoSpace,
            StoreError::Busy { .. } => StoreErrorKind::Busy,
            e if e.is_client_error() => StoreErrorKind::Invalid,
            _ => StoreErrorKind::Failed,
        }
    }

    /// Whether the request itself was wrong (400) rather than the pull failing.
    pub fn is_client_error(&self) -> bool {
        use convert::ConvertError as C;
        match self {
            StoreError::Name(_) | StoreError::BadName(_) | StoreError::NoSource(_) => true,
            StoreError::Hf(e) => !matches!(e, HfError::Api(_)),
            StoreError::Convert(e) => !matches!(e, C::Failed { .. } | C::Spawn { .. }),
            _ => false,
        }
    }
}

/// One progress line of a pull, as Ollama's `/api/pull` streams it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl Progress {
    pub fn status(status: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }
}

/// Where progress goes (it must not block).
pub type OnProgress<'a> = &'a (dyn Fn(Progress) + Sync);

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    /// Read-only stores (Ollama's).
    extra: Vec<Layout>,
    downloader: Downloader,
    /// Disk space reserved by this store's running pulls.
    space: Arc<Ledger>,
    registry: reqwest::Url,
    hf_endpoint: String,
    hf_token: Option<String>,
    python: String,
    convert_script: Option<PathBuf>,
}

impl Store {
    /// A store as `args` configure it. Creates nothing on disk yet.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad registry URL.
    pub fn new(args: &StoreArgs) -> Result<Store, StoreError> {
        Store::with_free_space(args, download::free_bytes)
    }

    /// [`Store::new`] with free space measured by `free` (tests use a fixed number).
    ///
    /// # Errors
    /// As [`Store::new`].
    #[doc(hidden)]
    pub fn with_free_space(args: &StoreArgs, free: FreeBytes) -> Result<Store, StoreError> {
        let registry = reqwest::Url::parse(&args.registry_url).map_err(|e| {
            StoreError::Config(format!("--registry-url {}: {e}", args.registry_url))
        })?;
        let http = crate::net::client_builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let root = args.root();
        let extra = args
            .ollama_root()
            .filter(|o| o != &root)
            .map(Layout::new)
            .into_iter()
            .collect();
        Ok(Store {
            inner: Arc::new(Inner {
                layout: Layout::new(root),
                extra,
                downloader: Downloader {
                    http,
                    parallel: args.pull_parallel.max(1),
                    max_bytes: args.max_download_gib.saturating_mul(1 << 30),
                },
                space: Ledger::new(free),
                registry,
                hf_endpoint: args.hf_endpoint.clone(),
                hf_token: args.hf_token.clone().filter(|t| !t.is_empty()),
                python: convert::default_python(args.python.as_deref()),
                convert_script: args.convert_script.clone(),
            }),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// `name` on disk: this store first, then the Ollama store.
    ///
    /// # Errors
    /// [`StoreError::Layout`] for a broken manifest.
    pub fn find(&self, name: &ModelRef) -> Result<Option<LocalModel>, StoreError> {
        for layout in std::iter::once(&self.inner.layout).chain(&self.inner.extra) {
            if let Some(m) = layout.resolve(name)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Every model on disk (this store's version wins over the Ollama store's).
    pub fn list(&self) -> Vec<LocalModel> {
        let mut out = self.inner.layout.list();
        for layout in &self.inner.extra {
            for m in layout.list() {
                if !out.iter().any(|o| o.name == m.name) {
                    out.push(m);
                }
            }
        }
        out.sort_by_key(|m| m.name.to_string());
        out
    }

    /// Removes `name` from this store (blobs other models use stay).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::ReadOnly`] for a model only in the Ollama store.
    pub fn remove(&self, name: &ModelRef) -> Result<(), StoreError> {
        let _lock = path_lock(&self.inner.layout.manifest_path(name));
        if self.inner.layout.remove(name)? {
            return Ok(());
        }
        for layout in &self.inner.extra {
            if layout.read_manifest(name).ok().flatten().is_some() {
                return Err(StoreError::ReadOnly {
                    name: name.to_string(),
                    root: layout.root.clone(),
                });
            }
        }
        Err(StoreError::NotFound(name.to_string()))
    }

    /// `name` on disk, pulling it first when it is not.
    ///
    /// # Errors
    /// [`StoreError`]; an installed model is never damaged by a failed pull.
    pub async fn ensure(
        &self,
        name: &ModelRef,
        progress: OnProgress<'_>,
    ) -> Result<LocalModel, StoreError> {
        let lock = path_lock(&self.inner.layout.manifest_path(name));
        let _guard = lock.lock().await;
        if let Some(m) = self.find(name)? {
            return Ok(m);
        }
        self.pull_locked(name, false, progress).await
    }

    /// Pulls `name` again even when present (`/api/pull` updates, as Ollama's does).
    ///
    /// # Errors
    /// As [`Store::ensure`].
    pub async fn pull(
        &self,
        name: &ModelRef,
        progress: OnProgress<'_>,
    ) -> Result<LocalModel, StoreError> {
        self.pull_from(name, false, progress).await
    }

    /// [`Store::pull`]; with `insecure`, a registry named by host is reached
    /// over plain HTTP (Ollama's `"insecure": true`), otherwise over HTTPS.
    ///
    /// # Errors
    /// As [`Store::ensure`].
    pub async fn pull_from(
        &self,
        name: &ModelRef,
        insecure: bool,
        progress: OnProgress<'_>,
    ) -> Result<LocalModel, StoreError> {
        let lock = path_lock(&self.inner.layout.manifest_path(name));
        let _guard = lock.lock().await;
        self.pull_locked(name, insecure, progress).await
    }

    async fn pull_locked(
        &self,
        name: &ModelRef,
        insecure: bool,
        progress: OnProgress<'_>,
    ) -> Result<LocalModel, StoreError> {
        progress(Progress::status("pulling manifest"));
        let manifest = match name {
            ModelRef::Registry { .. } => self.pull_registry(name, insecure, progress).await?,
            ModelRef::HfQuant { owner, repo, quant } => {
                self.pull_hf(name, owner, repo, quant.as_deref(), None, progress)
                    .await?
            }
            ModelRef::HfFile { owner, repo, file } => {
                self.pull_hf(name, owner, repo, None, Some(file), progress)
                    .await?
            }
        };
        progress(Progress::status("writing manifest"));
        self.inner.layout.write_manifest(name, &manifest)?;
        let model = self
            .inner
            .layout
            .resolve(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        tracing::info!(model = %name, path = %model.gguf.display(), "model pulled into the store");
        Ok(model)
    }

    async fn pull_registry(
        &self,
        name: &ModelRef,
        insecure: bool,
        progress: OnProgress<'_>,
    ) -> Result<layout::Manifest, StoreError> {
        let http = &self.inner.downloader.http;
        let registry = &self.inner.registry;
        let manifest = registry_client::fetch_manifest(http, name, registry, insecure).await?;
        let missing: Vec<&Layer> = manifest
            .blobs()
            .filter(|l| {
                self.inner
                    .layout
                    .blob_path(&l.digest)
                    .is_ok_and(|p| !p.is_file())
            })
            .collect();
        let need = missing
            .iter()
            .map(|l| self.download_need(Some(l.size)))
            .sum();
        let _space = self.reserve(&self.inner.layout.blobs_dir(), need)?;
        for layer in manifest.blobs() {
            let req = BlobRequest {
                url: registry_client::blob_url(name, registry, insecure, &layer.digest)?,
                digest: Some(layer.digest.clone()),
                size: Some(layer.size),
                bearer: None,
            };
            self.fetch_blob(&req, progress).await?;
        }
        Ok(manifest)
    }

    /// Peak bytes on disk of downloading a file of `size` (see [`space`]).
    fn download_need(&self, size: Option<u64>) -> u64 {
        space::download_need(size, self.inner.downloader.parallel)
    }

    /// Reserves `need` bytes in `dir` for the caller's pull, until the
    /// reservation is dropped.
    fn reserve(&self, dir: &Path, need: u64) -> Result<Reservation, StoreError> {
        self.inner.space.reserve(dir, need).inspect_err(|e| {
            tracing::warn!("pull refused: {e}");
        })
    }

    /// Fetches one blob into `blobs/` unless it is there; returns its digest.
    /// Without a known digest the bytes go to a stable download file first
    /// (resumable) and are renamed to their digest once hashed.
    async fn fetch_blob(
        &self,
        req: &BlobRequest,
        progress: OnProgress<'_>,
    ) -> Result<String, StoreError> {
        let layout = &self.inner.layout;
        let dest = match &req.digest {
            Some(d) => layout.blob_path(d)?,
            None => layout.blobs_dir().join(format!(
                "download-{}",
                &download::sha256_hex(req.url.as_str().as_bytes())[..32]
            )),
        };
        let lock = path_lock(&dest);
        let _guard = lock.lock().await;
        let short = |d: &str| {
            d.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        };
        if dest.is_file() && req.digest.is_some() {
            let d = req.digest.clone().unwrap_or_default();
            progress(Progress {
                status: format!("pulling {}", short(&d)),
                digest: Some(d.clone()),
                total: req.size,
                completed: req.size,
            });
            return Ok(d);
        }
        let label = req
            .digest
            .clone()
            .unwrap_or_else(|| req.url.path().rsplit('/').next().unwrap_or("").to_string());
        let on_bytes = |done: u64, total: Option<u64>| {
            progress(Progress {
                status: format!("pulling {}", short(&label)),
                digest: req.digest.clone(),
                total,
                completed: Some(done),
            })
        };
        let digest = self.inner.downloader.fetch(req, &dest, &on_bytes).await?;
        progress(Progress::status("verifying sha256 digest"));
        if req.digest.is_none() {
            let final_path = layout.blob_path(&digest)?;
            tokio::fs::rename(&dest, &final_path).await.map_err(|e| {
                StoreError::Config(format!("cannot rename {}: {e}", dest.display()))
            })?;
        }
        Ok(digest)
    }

    async fn pull_hf(
        &self,
        name: &ModelRef,
        owner: &str,
        repo: &str,
        quant: Option<&str>,
        file: Option<&str>,
        progress: OnProgress<'_>,
    ) -> Result<layout::Manifest, StoreError> {
        let i = &self.inner;
        let files = hf::list_files(
            &i.downloader.http,
            &i.hf_endpoint,
            i.hf_token.as_deref(),
            owner,
            repo,
        )
        .await?;
        let full = format!("{owner}/{repo}");
        match hf::choose(&full, &files, quant, file)? {
            Choice::Gguf(files) => {
                let need = files.iter().map(|f| self.download_need(f.size())).sum();
                let _space = self.reserve(&i.layout.blobs_dir(), need)?;
                let mut layers = Vec::new();
                for f in &files {
                    let req = BlobRequest {
                        url: hf::resolve_url(&i.hf_endpoint, owner, repo, &f.path)?,
                        digest: f.digest(),
                        size: f.size(),
                        bearer: i.hf_token.clone(),
                    };
                    let digest = self.fetch_blob(&req, progress).await?;
                    let size = match f.size() {
                        Some(s) => s,
                        None => tokio::fs::metadata(i.layout.blob_path(&digest)?)
                            .await
                            .map_or(0, |m| m.len()),
                    };
                    layers.push(Layer {
                        media_type: MEDIA_MODEL.into(),
                        digest,
                        size,
                    });
                }
                Ok(i.layout.manifest_for(layers)?)
            }
            Choice::Convert(files) => self.convert_hf(name, owner, repo, &files, progress).await,
        }
    }

    /// Downloads a checkpoint into `hf-src/<owner>/<repo>/` (kept, so a retry
    /// does not fetch it again) and converts it to one GGUF blob.
    async fn convert_hf(
        &self,
        name: &ModelRef,
        owner: &str,
        repo: &str,
        files: &[hf::RepoFile],
        progress: OnProgress<'_>,
    ) -> Result<layout::Manifest, StoreError> {
        let i = &self.inner;
        // Before fetching gigabytes: can it be converted here at all?
        let script = convert::preflight(&i.python, i.convert_script.as_deref()).await?;
        let total: u64 = files.iter().filter_map(|f| f.size()).sum();
        // Parts assembled (2×) plus the converted file (1×).
        let _space = self.reserve(&i.layout.blobs_dir(), total.saturating_mul(3))?;
        let src = i.layout.root.join("hf-src").join(owner).join(repo);
        for f in files {
            let dest = src.join(&f.path);
            if dest.is_file() {
                continue;
            }
            let req = BlobRequest {
                url: hf::resolve_url(&i.hf_endpoint, owner, repo, &f.path)?,
                digest: f.digest(),
                size: f.size(),
                bearer: i.hf_token.clone(),
            };
            let on_bytes = |done: u64, total: Option<u64>| {
                progress(Progress {
                    status: format!("downloading {}", f.path),
                    digest: None,
                    total,
                    completed: Some(done),
                })
            };
            i.downloader.fetch(&req, &dest, &on_bytes).await?;
        }
        let out = src.join(format!(".converted-{}.gguf", uuid::Uuid::new_v4()));
        progress(Progress::status(format!(
            "converting {owner}/{repo} to GGUF"
        )));
        tracing::info!(model = %name, script = %script.display(), "converting with llama.cpp's converter");
        let on_line = |line: &str| progress(Progress::status(format!("converting: {line}")));
        let result = convert::run(&i.python, &script, &src, &out, &on_line).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&out).await;
            return Err(e.into());
        }
        let layer = self.adopt_file(&out).await?;
        Ok(i.layout.manifest_for(vec![layer])?)
    }

    /// Moves a local file into `blobs/` under its digest.
    async fn adopt_file(&self, file: &Path) -> Result<Layer, StoreError> {
        let (digest, size) = download::hash_file(file).await?;
        let blob = self.inner.layout.blob_path(&digest)?;
        tokio::fs::create_dir_all(self.inner.layout.blobs_dir())
            .await
            .map_err(|e| StoreError::Config(e.to_string()))?;
        tokio::fs::rename(file, &blob).await.map_err(|e| {
            StoreError::Config(format!(
                "cannot move {} into the store: {e}",
                file.display()
            ))
        })?;
        Ok(Layer {
            media_type: MEDIA_MODEL.into(),
            digest,
            size,
        })
    }
}

/// A template that llm-node can render (Jinja, as in GGUF files). Ollama's
/// template layers are Go templates (`{{ .Prompt }}`); those are left to the
/// GGUF's own template.
pub fn jinja_template(template: Option<&str>) -> Option<String> {
    let t = template?;
    let go = t.contains("{{ .")
        || t.contains("{{- .")
        || t.contains(".Messages")
        || t.contains(".Prompt");
    (!go && (t.contains("{%") || t.contains("messages"))).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_full_download_is_a_no_space_store_error() {
        let path = PathBuf::from("/store/blobs/sha256-ab-partial-1");
        let e = StoreError::from(DownloadError::NoSpace { path });
        assert_eq!(e.kind(), StoreErrorKind::NoSpace);
        assert!(matches!(&e, StoreError::NoSpace { dir, .. } if dir == Path::new("/store/blobs")));
        assert!(
            e.to_string().contains("partial download was deleted"),
            "{e}"
        );
        // The log names the directory; a client is not told where the store is.
        assert!(e.to_string().contains("/store/blobs"), "{e}");
        let public = e.public_message();
        assert!(!public.contains("/store"), "{public}");
        assert!(public.starts_with("not enough disk space"), "{public}");
        let other = StoreError::from(DownloadError::Io("x".into()));
        assert_eq!(other.kind(), StoreErrorKind::Failed);
    }

    #[test]
    fn only_jinja_templates_are_used() {
        assert_eq!(jinja_template(Some("{{ .Prompt }}")), None);
        assert_eq!(
            jinja_template(Some("{{- range .Messages }}{{ end }}")),
            None
        );
        let jinja = "{% for m in messages %}{{ m.content }}{% endfor %}";
        assert_eq!(jinja_template(Some(jinja)).as_deref(), Some(jinja));
        assert_eq!(jinja_template(None), None);
    }
}
