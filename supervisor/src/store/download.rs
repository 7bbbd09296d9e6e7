//! Downloading one blob: ranged parts in parallel, resumable, verified,
//! installed atomically.
//!
//! For a blob whose final path is `B` (`blobs/sha256-<hex>`):
//!
//! - `B-partial.json` holds the plan: the total size and the byte ranges of
//!   the parts. It is written first, so a restarted node splits the blob the
//!   same way and resumes each part where it stopped.
//! - `B-partial-<i>` holds part `i`'s bytes, appended in order, so its length
//!   *is* its progress: nothing to keep in sync, and a kill at any moment
//!   leaves a valid prefix. A resumed part asks for `Range: bytes=<next>-<end>`.
//! - When every part is complete they are concatenated into `B-partial` while
//!   hashing; a digest or size mismatch deletes all of it (a wrong complete file
//!   cannot be resumed into a right one) and the download starts over, a few
//!   times at most. A match is renamed onto `B`. `B` therefore only ever holds
//!   verified bytes, and a failed pull never touches a model already installed.
//! - A server that ignores `Range` (answers 200 to a ranged request) would
//!   otherwise splice the start of the file into the middle of a part: the
//!   parts are dropped and the blob is fetched again as one part from byte 0.
//! - A blob of one part (small, or of unknown size) is not copied: its part
//!   file is hashed in place and renamed onto `B`, so it needs its size on disk
//!   once; several parts need it twice while they are concatenated (what
//!   [`super::space`] reserves).
//! - Size limit and full disks: a blob larger than [`Downloader::max_bytes`]
//!   is refused, before the transfer when its size is declared, as soon as it
//!   passes the limit when not. A write that fails with `ENOSPC` ends the
//!   download with [`DownloadError::NoSpace`]; both delete the blob's
//!   `-partial` files, since resuming them cannot help.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Parts are never smaller than this.
pub const MIN_PART_BYTES: u64 = 1 << 20;
/// Attempts of one blob that made no progress before the download gives up.
const MAX_FRUITLESS_ATTEMPTS: u32 = 4;
/// Attempts of one blob in all.
const MAX_ATTEMPTS: u32 = 20;
/// Waits between attempts (the last one repeats).
const RETRY_DELAYS_MS: [u64; 4] = [100, 400, 1000, 2000];
/// Shortest time between two progress callbacks.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One blob to fetch.
#[derive(Debug, Clone)]
pub struct BlobRequest {
    pub url: reqwest::Url,
    /// `sha256:<hex>` when known; the bytes must hash to it.
    pub digest: Option<String>,
    /// Size in bytes when known; the bytes must have it.
    pub size: Option<u64>,
    /// `Authorization: Bearer` token (`HF_TOKEN`).
    pub bearer: Option<String>,
}

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("download of {url} failed after {attempts} attempts: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("file error: {0}")]
    Io(String),
    #[error("the bytes are not the model's: {0}")]
    Mismatch(String),
    /// The disk filled up (`ENOSPC`); the partial files were deleted.
    #[error("disk full writing {path}; the partial download was deleted")]
    NoSpace { path: PathBuf },
    #[error("{url} is larger than the download limit of {limit} bytes (--max-download-gib)")]
    TooLarge { url: String, limit: u64 },
}

/// The parts of one blob, persisted in `<blob>-partial.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Total size; `None` when the server did not say (one part, no resume).
    pub total: Option<u64>,
    /// `[start, end)` of each part.
    pub parts: Vec<(u64, u64)>,
}

impl Plan {
    /// How many parts [`Plan::split`] makes of `total` bytes.
    pub fn part_count(total: u64, parallel: usize) -> u64 {
        (total / MIN_PART_BYTES).clamp(1, parallel.max(1) as u64)
    }

    /// `parallel` parts of at least [`MIN_PART_BYTES`], or one part.
    pub fn split(total: Option<u64>, parallel: usize) -> Plan {
        let Some(total) = total else {
            return Plan {
                total,
                parts: vec![(0, u64::MAX)],
            };
        };
        let n = Plan::part_count(total, parallel);
        let step = total.div_ceil(n);
        let parts = (0..n)
            .map(|i| (i * step, (i + 1).saturating_mul(step).min(total)))
            .filter(|(s, e)| s < e)
            .collect();
        Plan {
            total: Some(total),
            parts,
        }
    }

    fn single(total: Option<u64>) -> Plan {
        Plan::split(total, 1)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<blob>-partial<suffix>`.
fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push("-partial");
    s.push(suffix);
    PathBuf::from(s)
}

/// An I/O error on `path` as a [`DownloadError`]: `ENOSPC` is
/// [`DownloadError::NoSpace`], anything else [`DownloadError::Io`].
fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let (what, path) = (format!("{context} {}", path.display()), path.to_path_buf());
    move |e| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return DownloadError::NoSpace { path };
        }
        DownloadError::Io(format!("{what}: {e}"))
    }
}

/// How one attempt at one part ended.
enum PartEnd {
    Done,
    /// Worth another attempt (connection lost, 5xx, short body).
    Retry(String),
    /// Answered 200 to a ranged request.
    RangeIgnored,
    Fatal(DownloadError),
}

impl PartEnd {
    /// How telling a failure is: a fatal one, then Range ignored, then a retry.
    fn rank(&self) -> u8 {
        match self {
            PartEnd::Done => 0,
            PartEnd::Retry(_) => 1,
            PartEnd::RangeIgnored => 2,
            PartEnd::Fatal(_) => 3,
        }
    }
}

/// One part to fetch: its file, its byte range and how to ask for the rest of it.
struct Part<'a> {
    file: &'a Path,
    start: u64,
    /// Exclusive end; `u64::MAX` while the blob's size is unknown.
    end: u64,
    /// The only part of its blob (a request from byte 0 needs no `Range`).
    single: bool,
}

impl Part<'_> {
    fn known_end(&self) -> bool {
        self.end != u64::MAX
    }
}

/// Bytes of one blob on disk so far, and the throttled progress callback.
struct Tally<'a> {
    done: AtomicU64,
    /// The blob's size; 0 while unknown (learnt from the first response then).
    total: AtomicU64,
    last: std::sync::Mutex<Instant>,
    progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
}

impl<'a> Tally<'a> {
    fn new(done: u64, total: Option<u64>, progress: &'a (dyn Fn(u64, Option<u64>) + Sync)) -> Self {
        Self {
            done: AtomicU64::new(done),
            total: AtomicU64::new(total.unwrap_or(0)),
            last: std::sync::Mutex::new(Instant::now() - PROGRESS_EVERY),
            progress,
        }
    }

    fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    fn learn_total(&self, total: u64) {
        let _ = self
            .total
            .compare_exchange(0, total, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            (self.progress)(done, self.total());
        }
    }

    fn flush(&self) {
        (self.progress)(self.done.load(Ordering::Relaxed), self.total());
    }
}

/// What fetches blobs: an HTTP client and how many parts to run at once.
#[derive(Clone)]
pub struct Downloader {
    pub http: reqwest::Client,
    pub parallel: usize,
    /// Largest blob accepted, in bytes (`--max-download-gib`); what bounds a
    /// download whose size nobody declared.
    pub max_bytes: u64,
}

/// What to do after an attempt that did not end the download.
enum Next {
    Retry { why: String, fruitless: bool },
    Replan { why: String, parallel: usize },
}

impl Downloader {
    /// Puts the verified bytes of `req` at `dest` (see the module docs) and returns
    /// their digest. `progress(completed, total)` is called as bytes arrive.
    ///
    /// # Errors
    /// [`DownloadError`]; `dest` is then untouched and the `-partial` files that
    /// hold verified-so-far progress stay for the next attempt, except after
    /// [`DownloadError::NoSpace`] and [`DownloadError::TooLarge`], which delete them.
    pub async fn fetch(
        &self,
        req: &BlobRequest,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<String, DownloadError> {
        if req.size.is_some_and(|s| s > self.max_bytes) {
            return Err(self.too_large(req));
        }
        create_parent(dest).await?;
        let mut plan = self.load_plan(dest, req.size).await?;
        let (mut attempts, mut fruitless) = (0u32, 0u32);
        loop {
            if attempts > 0 {
                let delay = RETRY_DELAYS_MS[(attempts as usize - 1).min(RETRY_DELAYS_MS.len() - 1)];
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            attempts += 1;
            let outcome = match self.attempt(req, dest, &plan, progress).await {
                Err(e @ (DownloadError::NoSpace { .. } | DownloadError::TooLarge { .. })) => {
                    // Keeping the bytes cannot help: free the disk.
                    clear(dest, &plan).await;
                    tracing::warn!(url = %req.url, "{e}");
                    return Err(e);
                }
                other => other?,
            };
            let last = match outcome {
                Ok(digest) => return Ok(digest),
                Err(Next::Retry { why, fruitless: f }) => {
                    tracing::debug!(url = %req.url, attempts, "download attempt failed: {why}");
                    fruitless += u32::from(f);
                    why
                }
                Err(Next::Replan { why, parallel }) => {
                    tracing::warn!(url = %req.url, "{why}; starting over");
                    fruitless += 1;
                    clear(dest, &plan).await;
                    plan = self.new_plan(dest, req.size, parallel).await?;
                    why
                }
            };
            if fruitless >= MAX_FRUITLESS_ATTEMPTS || attempts >= MAX_ATTEMPTS {
                return Err(DownloadError::GaveUp {
                    url: req.url.to_string(),
                    attempts,
                    last,
                });
            }
        }
    }

    fn too_large(&self, req: &BlobRequest) -> DownloadError {
        DownloadError::TooLarge {
            url: req.url.to_string(),
            limit: self.max_bytes,
        }
    }

    /// One attempt at every unfinished part, then assembly: the digest, or what next.
    async fn attempt(
        &self,
        req: &BlobRequest,
        dest: &Path,
        plan: &Plan,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<Result<String, Next>, DownloadError> {
        let before = present(dest, plan).await;
        let outcome = self.run_parts(req, dest, plan, progress).await;
        let progressed = present(dest, plan).await > before;
        Ok(match outcome {
            Ok(()) => match assemble(req, dest, plan).await {
                Ok(digest) => Ok(digest),
                Err(Assembly::Mismatch(why)) => Err(Next::Replan {
                    why: format!("downloaded bytes refused: {why}"),
                    parallel: self.parallel,
                }),
                Err(Assembly::Io(e)) => return Err(e),
            },
            Err(PartEnd::RangeIgnored) => Err(Next::Replan {
                why: "the server ignores Range; downloading in one piece from the start".into(),
                parallel: 1,
            }),
            Err(PartEnd::Fatal(e)) => return Err(e),
            Err(PartEnd::Retry(why)) => Err(Next::Retry {
                why,
                fruitless: !progressed,
            }),
            Err(PartEnd::Done) => unreachable!("run_parts reports Done as Ok"),
        })
    }

    /// The plan left by an earlier attempt if it fits `size`, else a new one.
    async fn load_plan(&self, dest: &Path, size: Option<u64>) -> Result<Plan, DownloadError> {
        let path = sibling(dest, ".json");
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if let Ok(plan) = serde_json::from_slice::<Plan>(&bytes) {
                // Same size, or both unknown (one part, resumed with an open range).
                if plan.total == size {
                    return Ok(plan);
                }
                clear(dest, &plan).await;
            }
        }
        self.new_plan(dest, size, self.parallel).await
    }

    async fn new_plan(
        &self,
        dest: &Path,
        size: Option<u64>,
        parallel: usize,
    ) -> Result<Plan, DownloadError> {
        let plan = match size {
            Some(_) => Plan::split(size, parallel),
            None => Plan::single(None),
        };
        let path = sibling(dest, ".json");
        let body = serde_json::to_vec(&plan).expect("plans serialise");
        tokio::fs::write(&path, body)
            .await
            .map_err(io("cannot write", &path))?;
        Ok(plan)
    }

    /// Runs every unfinished part at once; `Ok` when all are complete.
    async fn run_parts(
        &self,
        req: &BlobRequest,
        dest: &Path,
        plan: &Plan,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<(), PartEnd> {
        let tally = Tally::new(present(dest, plan).await, plan.total, progress);
        tally.flush();
        let files: Vec<PathBuf> = (0..plan.parts.len())
            .map(|i| sibling(dest, &format!("-{i}")))
            .collect();
        let parts = plan
            .parts
            .iter()
            .zip(&files)
            .map(|(&(start, end), file)| Part {
                file,
                start,
                end,
                single: plan.parts.len() == 1,
            });
        let tally_ref = &tally;
        let ends = futures_util::future::join_all(
            parts.map(|part| async move { self.run_part(req, &part, tally_ref).await }),
        )
        .await;
        tally.flush();
        match ends.into_iter().max_by_key(PartEnd::rank) {
            None | Some(PartEnd::Done) => Ok(()),
            Some(other) => Err(other),
        }
    }

    /// Fetches the rest of `part` into its file.
    async fn run_part(&self, req: &BlobRequest, part: &Part<'_>, tally: &Tally<'_>) -> PartEnd {
        let have = tokio::fs::metadata(part.file).await.map_or(0, |m| m.len());
        let from = part.start + have;
        if part.known_end() && from >= part.end {
            return PartEnd::Done;
        }
        let (resp, append) = match self.request(req, part, from).await {
            Ok(answer) => answer,
            Err(end) => return end,
        };
        if let Some(length) = resp.content_length() {
            tally.learn_total(from + length);
        }
        // Of unknown size: bounded by the limit, refused at once when the
        // response says it is over.
        let limit = (!part.known_end()).then(|| self.max_bytes.saturating_sub(from));
        if limit.is_some_and(|l| resp.content_length().is_some_and(|n| n > l)) {
            return PartEnd::Fatal(self.too_large(req));
        }
        let opened = if append {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(part.file)
                .await
        } else {
            tokio::fs::File::create(part.file).await
        };
        let out = match opened {
            Ok(f) => f,
            Err(e) => return PartEnd::Fatal(io("cannot open", part.file)(e)),
        };
        let want = match part.known_end() {
            true => Some(part.end - from),
            false => resp.content_length(),
        };
        let body = Body { want, limit };
        match write_body(resp, out, part.file, body, tally).await {
            PartEnd::Fatal(DownloadError::TooLarge { .. }) => PartEnd::Fatal(self.too_large(req)),
            end => end,
        }
    }

    /// Asks for the rest of `part` from byte `from`: the response to read and whether
    /// it continues the part file (206) or replaces it (200 from byte 0), or how the
    /// attempt ends.
    async fn request(
        &self,
        req: &BlobRequest,
        part: &Part<'_>,
        from: u64,
    ) -> Result<(reqwest::Response, bool), PartEnd> {
        let mut http = self.http.get(req.url.clone());
        if let Some(token) = &req.bearer {
            http = http.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let ranged = !(part.single && from == 0);
        if ranged {
            // Size unknown: `bytes=N-` (the router's file server, for one, resumes
            // only such open ranges).
            let range = match !part.known_end() {
                true => format!("bytes={from}-"),
                false => format!("bytes={from}-{}", part.end - 1),
            };
            http = http.header(RANGE, range);
        }
        let resp = http
            .send()
            .await
            .map_err(|e| PartEnd::Retry(format!("request failed: {}", crate::net::describe(&e))))?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let start_ok = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .is_some_and(|(s, _)| s == from);
                match start_ok {
                    true => Ok((resp, true)),
                    false => Err(PartEnd::RangeIgnored),
                }
            }
            StatusCode::OK if ranged => Err(PartEnd::RangeIgnored),
            StatusCode::OK => Ok((resp, false)),
            // Asked from the end of a blob of unknown size: it is all here (assembly checks it).
            StatusCode::RANGE_NOT_SATISFIABLE if !part.known_end() && from > 0 => {
                Err(PartEnd::Done)
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(PartEnd::Retry(format!("HTTP {s}")))
            }
            s => Err(PartEnd::Fatal(DownloadError::Status {
                url: req.url.to_string(),
                status: s.as_u16(),
            })),
        }
    }

    /// Copies a file this host can read (the router's `path` on a shared
    /// filesystem) to `dest` as a download would: into `<dest>-partial` while
    /// hashing, checked against `digest` and `size` when given, renamed onto
    /// `dest`. Returns the digest.
    ///
    /// # Errors
    /// [`DownloadError::Io`], [`DownloadError::Mismatch`]; `dest` is then untouched.
    pub async fn copy(
        &self,
        from: &Path,
        digest: Option<&str>,
        size: Option<u64>,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<String, DownloadError> {
        create_parent(dest).await?;
        let tmp = sibling(dest, "");
        let copied = self.copy_to(from, &tmp, progress).await;
        let (got, copied) = match copied {
            Ok(done) => done,
            Err(e) => {
                // Not resumable: a partial copy only takes space (ENOSPC included).
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Err(why) = check(&got, copied, digest, size) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(DownloadError::Mismatch(why));
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(io("cannot rename onto", dest))?;
        Ok(got)
    }

    /// Copies `from` to `tmp` while hashing: the digest and the length.
    async fn copy_to(
        &self,
        from: &Path,
        tmp: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<(String, u64), DownloadError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut src = tokio::fs::File::open(from)
            .await
            .map_err(io("cannot open", from))?;
        let total = src.metadata().await.map_err(io("cannot stat", from))?.len();
        if total > self.max_bytes {
            return Err(DownloadError::TooLarge {
                url: from.display().to_string(),
                limit: self.max_bytes,
            });
        }
        let tmp = tmp.to_path_buf();
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("cannot create", &tmp))?;
        let tally = Tally::new(0, Some(total), progress);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).await.map_err(io("cannot read", from))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .await
                .map_err(io("cannot write", &tmp))?;
            tally.add(n as u64);
        }
        out.sync_all().await.map_err(io("cannot sync", &tmp))?;
        tally.flush();
        let got = format!("sha256:{}", hex(&hasher.finalize()));
        Ok((got, tally.done.load(Ordering::Relaxed)))
    }
}

/// How much of a body to write.
#[derive(Clone, Copy)]
struct Body {
    /// Bytes the part still needs, when known; more are dropped.
    want: Option<u64>,
    /// Bytes allowed at most (a part of unknown size); more is an error.
    limit: Option<u64>,
}

/// Streams `resp` into `out` (at most `want` bytes, when known).
async fn write_body(
    resp: reqwest::Response,
    mut out: tokio::fs::File,
    file: &Path,
    Body { want, limit }: Body,
    tally: &Tally<'_>,
) -> PartEnd {
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    let mut broken = None;
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                broken = Some(PartEnd::Retry(format!("connection lost: {e}")));
                break;
            }
        };
        if let Some(want) = want {
            // Never write past the part, whatever the server sends.
            chunk.truncate((want - got).min(chunk.len() as u64) as usize);
        }
        if limit.is_some_and(|l| got + chunk.len() as u64 > l) {
            let (url, limit) = (String::new(), limit.unwrap_or_default());
            return PartEnd::Fatal(DownloadError::TooLarge { url, limit });
        }
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await {
            return PartEnd::Fatal(io("cannot write", file)(e));
        }
        got += chunk.len() as u64;
        tally.add(chunk.len() as u64);
        if want.is_some_and(|w| got >= w) {
            break;
        }
    }
    if let Err(e) = out.sync_all().await {
        return PartEnd::Fatal(io("cannot sync", file)(e));
    }
    match (broken, want) {
        (Some(end), _) => end,
        (None, Some(w)) if got < w => PartEnd::Retry(format!("body ended {} bytes short", w - got)),
        _ => PartEnd::Done,
    }
}

async fn create_parent(dest: &Path) -> Result<(), DownloadError> {
    let dir = dest
        .parent()
        .ok_or_else(|| DownloadError::Io("destination has no directory".into()))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io("cannot create", dir))
}

/// Whether bytes of digest `got` and length `size` are what was asked for.
fn check(
    got: &str,
    size: u64,
    want_digest: Option<&str>,
    want_size: Option<u64>,
) -> Result<(), String> {
    if let Some(want) = want_size.filter(|w| *w != size) {
        return Err(format!("size {size} instead of {want}"));
    }
    if let Some(want) = want_digest.filter(|w| !w.eq_ignore_ascii_case(got)) {
        return Err(format!("digest mismatch: got {got}, expected {want}"));
    }
    Ok(())
}

/// The `sha256:<hex>` digest and the length of a file (off the async threads).
///
/// # Errors
/// The read error.
pub async fn hash_file(path: &Path) -> Result<(String, u64), DownloadError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_sync(&owned))
        .await
        .map_err(|e| DownloadError::Io(e.to_string()))?
        .map_err(io("cannot read", path))
}

fn hash_sync(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("sha256:{}", hex(&h.finalize())), size))
}

/// Whether `path` is a file with `digest` and `size`, each when given (a model
/// already in place, put there by an earlier pull or by hand, is adopted).
pub async fn is_intact(path: &Path, digest: Option<&str>, size: Option<u64>) -> bool {
    let Ok(meta) = tokio::fs::metadata(path).await else {
        return false;
    };
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return false;
    }
    match digest {
        None => true,
        Some(want) => hash_file(path)
            .await
            .is_ok_and(|(got, len)| check(&got, len, Some(want), size).is_ok()),
    }
}

/// Bytes already on disk for `plan`.
async fn present(dest: &Path, plan: &Plan) -> u64 {
    let mut n = 0;
    for i in 0..plan.parts.len() {
        n += tokio::fs::metadata(sibling(dest, &format!("-{i}")))
            .await
            .map_or(0, |m| m.len());
    }
    n
}

/// Removes every `-partial` file of `plan`.
async fn clear(dest: &Path, plan: &Plan) {
    for i in 0..plan.parts.len() {
        let _ = tokio::fs::remove_file(sibling(dest, &format!("-{i}"))).await;
    }
    let _ = tokio::fs::remove_file(sibling(dest, "")).await;
    let _ = tokio::fs::remove_file(sibling(dest, ".json")).await;
}

enum Assembly {
    Mismatch(String),
    Io(DownloadError),
}

/// Concatenates the parts into `<dest>-partial` while hashing (one part is
/// hashed in place instead), checks size and digest, and renames onto `dest`.
/// Returns the digest.
async fn assemble(req: &BlobRequest, dest: &Path, plan: &Plan) -> Result<String, Assembly> {
    let (dest, plan) = (dest.to_path_buf(), plan.clone());
    let (want_digest, want_size) = (req.digest.clone(), req.size);
    tokio::task::spawn_blocking(move || -> Result<String, Assembly> {
        let parts: Vec<PathBuf> = (0..plan.parts.len())
            .map(|i| sibling(&dest, &format!("-{i}")))
            .collect();
        let (tmp, (digest, size)) = match &parts[..] {
            [only] => {
                let hashed =
                    hash_sync(only).map_err(|e| Assembly::Io(io("cannot read", only)(e)))?;
                (only.clone(), hashed)
            }
            _ => {
                let tmp = sibling(&dest, "");
                let hashed = concat_hashing(&parts, &tmp)?;
                (tmp, hashed)
            }
        };
        check(&digest, size, want_digest.as_deref(), want_size).map_err(Assembly::Mismatch)?;
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Assembly::Io(io("cannot rename onto", &dest)(e)))?;
        for part in parts {
            let _ = std::fs::remove_file(part);
        }
        let _ = std::fs::remove_file(sibling(&dest, ".json"));
        Ok(digest)
    })
    .await
    .map_err(|e| Assembly::Io(DownloadError::Io(e.to_string())))?
}

/// Writes `parts` one after the other into `out`; returns their digest and length.
fn concat_hashing(parts: &[PathBuf], out: &Path) -> Result<(String, u64), Assembly> {
    use std::io::{Read, Write};
    let ioe = |c: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Assembly::Io(io(c, &p)(e))
    };
    let mut file = std::fs::File::create(out).map_err(ioe("cannot create", out))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for part in parts {
        let mut f = std::fs::File::open(part).map_err(ioe("cannot open", part))?;
        loop {
            let n = f.read(&mut buf).map_err(ioe("cannot read", part))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(ioe("cannot write", out))?;
            size += n as u64;
        }
    }
    file.sync_all().map_err(ioe("cannot sync", out))?;
    Ok((format!("sha256:{}", hex(&hasher.finalize())), size))
}

/// Free bytes for an unprivileged user on the filesystem holding `dir`
/// (its nearest existing ancestor).
///
/// # Errors
/// The `statvfs` error.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    disk_bytes(dir).map(|(free, _)| free)
}

/// Free bytes (for an unprivileged user) and size of the filesystem holding
/// `dir` (its nearest existing ancestor).
///
/// # Errors
/// The `statvfs` error.
pub fn disk_bytes(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(probe).map_err(std::io::Error::from)?;
    let block = st.fragment_size() as u64;
    Ok((
        (st.blocks_available() as u64).saturating_mul(block),
        (st.blocks() as u64).saturating_mul(block),
    ))
}

/// Whether `need` more bytes fit in `free`, keeping a margin (1 GiB or 5 %,
/// the smaller) for everything else on the disk.
pub fn fits(need: u64, free: u64) -> bool {
    let margin = (free / 20).min(1 << 30);
    need <= free.saturating_sub(margin)
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
pub fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_split_into_bounded_parts_covering_the_blob() {
        let p = Plan::split(Some(10 * MIN_PART_BYTES + 3), 4);
        assert_eq!(p.parts.len(), 4);
        assert_eq!(p.parts[0].0, 0);
        assert_eq!(p.parts.last().unwrap().1, 10 * MIN_PART_BYTES + 3);
        for w in p.parts.windows(2) {
            assert_eq!(w[0].1, w[1].0, "contiguous");
        }
        assert_eq!(Plan::split(Some(100), 8).parts, [(0, 100)]);
        assert_eq!(Plan::split(Some(3 * MIN_PART_BYTES), 8).parts.len(), 3);
        assert_eq!(Plan::split(None, 8).parts.len(), 1);
    }

    #[test]
    fn disk_space_check_keeps_a_margin() {
        assert!(fits(50, 100));
        assert!(!fits(100, 100));
        assert!(fits(90 << 30, 100 << 30));
        assert!(!fits((99 << 30) + 1, 100 << 30));
        assert!(free_bytes(Path::new("/no/such/dir/below/root")).unwrap() > 0);
    }

    #[test]
    fn a_full_disk_is_no_space_and_other_errors_stay_io() {
        let enospc = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = io("cannot write", Path::new("/s/blobs/x-partial-0"))(enospc);
        assert!(
            matches!(&e, DownloadError::NoSpace { path } if path.ends_with("x-partial-0")),
            "{e}"
        );
        let denied = std::io::Error::from_raw_os_error(nix::libc::EACCES);
        let e = io("cannot write", Path::new("/s/x"))(denied);
        assert!(
            matches!(&e, DownloadError::Io(m) if m.starts_with("cannot write /s/x")),
            "{e}"
        );
        assert_eq!(Plan::part_count(u64::MAX, 4), 4);
        assert_eq!(
            Plan::split(Some(u64::MAX), 4).parts.last().unwrap().1,
            u64::MAX
        );
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
