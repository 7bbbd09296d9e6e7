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
    /// `parallel` parts of at least [`MIN_PART_BYTES`], or one part.
    pub fn split(total: Option<u64>, parallel: usize) -> Plan {
        let Some(total) = total else {
            return Plan {
                total,
                parts: vec![(0, u64::MAX)],
            };
        };
        let n = (total / MIN_PART_BYTES).clamp(1, parallel.max(1) as u64);
        let step = total.div_ceil(n);
        let parts = (0..n)
            .map(|i| (i * step, ((i + 1) * step).min(total)))
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

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let what = format!("{context} {}", path.display());
    move |e| DownloadError::Io(format!("{what}: {e}"))
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

/// What fetches blobs: an HTTP client and how many parts to run at once.
#[derive(Clone)]
pub struct Downloader {
    pub http: reqwest::Client,
    pub parallel: usize,
}

impl Downloader {
    /// Puts the verified bytes of `req` at `dest` (see the module docs) and returns
    /// their digest. `progress(completed, total)` is called as bytes arrive.
    ///
    /// # Errors
    /// [`DownloadError`]; `dest` is then untouched and the `-partial` files that
    /// hold verified-so-far progress stay for the next attempt.
    pub async fn fetch(
        &self,
        req: &BlobRequest,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<String, DownloadError> {
        let dir = dest
            .parent()
            .ok_or_else(|| DownloadError::Io("destination has no directory".into()))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("cannot create", dir))?;
        let mut plan = self.load_plan(dest, req.size).await?;
        let (mut attempts, mut fruitless) = (0u32, 0u32);
        let mut last;
        loop {
            if attempts > 0 {
                let delay = RETRY_DELAYS_MS[(attempts as usize - 1).min(RETRY_DELAYS_MS.len() - 1)];
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            attempts += 1;
            let before = present(dest, &plan).await;
            let outcome = self.run_parts(req, dest, &plan, progress).await;
            let progressed = present(dest, &plan).await > before;
            match outcome {
                Ok(()) => match assemble(req, dest, &plan).await {
                    Ok(digest) => return Ok(digest),
                    Err(Assembly::Mismatch(why)) => {
                        tracing::warn!(url = %req.url, "downloaded bytes refused: {why}; starting over");
                        last = why;
                        fruitless += 1;
                        clear(dest, &plan).await;
                        plan = self.new_plan(dest, req.size, self.parallel).await?;
                    }
                    Err(Assembly::Io(e)) => return Err(e),
                },
                Err(PartEnd::RangeIgnored) => {
                    tracing::warn!(url = %req.url, "the server ignores Range; downloading in one piece from the start");
                    last = "the server ignores Range".into();
                    clear(dest, &plan).await;
                    plan = self.new_plan(dest, req.size, 1).await?;
                    fruitless += 1;
                }
                Err(PartEnd::Fatal(e)) => return Err(e),
                Err(PartEnd::Retry(why)) => {
                    tracing::debug!(url = %req.url, attempts, "download attempt failed: {why}");
                    last = why;
                    if !progressed {
                        fruitless += 1;
                    }
                }
                Err(PartEnd::Done) => unreachable!("run_parts reports Done as Ok"),
            }
            if fruitless >= MAX_FRUITLESS_ATTEMPTS || attempts >= MAX_ATTEMPTS {
                return Err(DownloadError::GaveUp {
                    url: req.url.to_string(),
                    attempts,
                    last,
                });
            }
        }
    }

    /// The plan left by an earlier attempt if it fits `size`, else a new one.
    async fn load_plan(&self, dest: &Path, size: Option<u64>) -> Result<Plan, DownloadError> {
        let path = sibling(dest, ".json");
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if let Ok(plan) = serde_json::from_slice::<Plan>(&bytes) {
                if plan.total == size && size.is_some() {
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
        let done = AtomicU64::new(present(dest, plan).await);
        let last_report = std::sync::Mutex::new(Instant::now() - PROGRESS_EVERY);
        let report = |n: u64| {
            let total = done.fetch_add(n, Ordering::Relaxed) + n;
            let mut last = last_report.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                progress(total, plan.total);
            }
        };
        progress(done.load(Ordering::Relaxed), plan.total);
        let single = plan.parts.len() == 1;
        let files: Vec<PathBuf> = (0..plan.parts.len())
            .map(|i| sibling(dest, &format!("-{i}")))
            .collect();
        let ends = futures_util::future::join_all(
            plan.parts
                .iter()
                .zip(&files)
                .map(|(range, file)| self.run_part(req, file, *range, single, &report)),
        )
        .await;
        progress(done.load(Ordering::Relaxed), plan.total);
        // The most telling failure wins: a fatal one, then Range ignored, then a retry.
        let mut worst = None;
        for end in ends {
            let rank = |e: &PartEnd| match e {
                PartEnd::Done => 0,
                PartEnd::Retry(_) => 1,
                PartEnd::RangeIgnored => 2,
                PartEnd::Fatal(_) => 3,
            };
            if worst.as_ref().is_none_or(|w| rank(&end) > rank(w)) {
                worst = Some(end);
            }
        }
        match worst {
            None | Some(PartEnd::Done) => Ok(()),
            Some(other) => Err(other),
        }
    }

    /// Fetches the rest of part `[start, end)` into `file`.
    async fn run_part(
        &self,
        req: &BlobRequest,
        file: &Path,
        (start, end): (u64, u64),
        single: bool,
        report: &(dyn Fn(u64) + Sync),
    ) -> PartEnd {
        let have = tokio::fs::metadata(file).await.map_or(0, |m| m.len());
        let from = start + have;
        let known_end = end != u64::MAX;
        if known_end && from >= end {
            return PartEnd::Done;
        }
        let mut http = self.http.get(req.url.clone());
        if let Some(token) = &req.bearer {
            http = http.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let ranged = known_end && !(single && from == 0);
        if ranged {
            http = http.header(RANGE, format!("bytes={from}-{}", end - 1));
        }
        let resp = match http.send().await {
            Ok(r) => r,
            Err(e) => return PartEnd::Retry(format!("request failed: {e}")),
        };
        let status = resp.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => {
                let start_ok = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .is_some_and(|(s, _)| s == from);
                if !start_ok {
                    return PartEnd::RangeIgnored;
                }
                true
            }
            StatusCode::OK if ranged => return PartEnd::RangeIgnored,
            StatusCode::OK => false,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return PartEnd::Retry(format!("HTTP {s}"))
            }
            s => {
                return PartEnd::Fatal(DownloadError::Status {
                    url: req.url.to_string(),
                    status: s.as_u16(),
                })
            }
        };
        let opened = if append {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .await
        } else {
            tokio::fs::File::create(file).await
        };
        let mut out = match opened {
            Ok(f) => f,
            Err(e) => return PartEnd::Fatal(io("cannot open", file)(e)),
        };
        let want = known_end.then(|| end - from);
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        let mut end_state = None;
        while let Some(chunk) = body.next().await {
            let mut chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    end_state = Some(PartEnd::Retry(format!("connection lost: {e}")));
                    break;
                }
            };
            if let Some(want) = want {
                // Never write past the part, whatever the server sends.
                chunk.truncate((want - got).min(chunk.len() as u64) as usize);
            }
            if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await {
                return PartEnd::Fatal(io("cannot write", file)(e));
            }
            got += chunk.len() as u64;
            report(chunk.len() as u64);
            if want.is_some_and(|w| got >= w) {
                break;
            }
        }
        if let Err(e) = out.sync_all().await {
            return PartEnd::Fatal(io("cannot sync", file)(e));
        }
        if let Some(end) = end_state {
            return end;
        }
        match want {
            Some(w) if got < w => PartEnd::Retry(format!("body ended {} bytes short", w - got)),
            _ => PartEnd::Done,
        }
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

/// Concatenates the parts into `<dest>-partial` while hashing, checks size and
/// digest, and renames onto `dest`. Returns the digest.
async fn assemble(req: &BlobRequest, dest: &Path, plan: &Plan) -> Result<String, Assembly> {
    let (dest, plan) = (dest.to_path_buf(), plan.clone());
    let (want_digest, want_size) = (req.digest.clone(), req.size);
    let joined = tokio::task::spawn_blocking(move || -> Result<String, Assembly> {
        use std::io::{Read, Write};
        let tmp = sibling(&dest, "");
        let ioe = |c: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| Assembly::Io(io(c, &p)(e))
        };
        let mut out = std::fs::File::create(&tmp).map_err(ioe("cannot create", &tmp))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..plan.parts.len() {
            let part = sibling(&dest, &format!("-{i}"));
            let mut f = std::fs::File::open(&part).map_err(ioe("cannot open", &part))?;
            loop {
                let n = f.read(&mut buf).map_err(ioe("cannot read", &part))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(ioe("cannot write", &tmp))?;
                size += n as u64;
            }
        }
        out.sync_all().map_err(ioe("cannot sync", &tmp))?;
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        if let Some(want) = want_size.filter(|w| *w != size) {
            return Err(Assembly::Mismatch(format!("size {size} instead of {want}")));
        }
        if let Some(want) = want_digest.filter(|w| !w.eq_ignore_ascii_case(&digest)) {
            return Err(Assembly::Mismatch(format!(
                "digest mismatch: got {digest}, expected {want}"
            )));
        }
        std::fs::rename(&tmp, &dest).map_err(ioe("cannot rename onto", &dest))?;
        for i in 0..plan.parts.len() {
            let _ = std::fs::remove_file(sibling(&dest, &format!("-{i}")));
        }
        let _ = std::fs::remove_file(sibling(&dest, ".json"));
        Ok(digest)
    })
    .await
    .map_err(|e| Assembly::Io(DownloadError::Io(e.to_string())))?;
    joined
}

/// Free bytes for an unprivileged user on the filesystem holding `dir`
/// (its nearest existing ancestor).
///
/// # Errors
/// The `statvfs` error.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(probe).map_err(std::io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
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
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
