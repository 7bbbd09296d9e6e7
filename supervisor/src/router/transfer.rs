//! Getting one model file onto disk without ever exposing a half-written one.
//!
//! Every transfer writes `<dest>.partial`, checks it (length against what the
//! server announced, `size`/`sha256` when given) and renames it onto `<dest>`
//! (atomic on one filesystem). A download that breaks off is resumed with a
//! `Range` request on the next attempt, also after a node restart, because the
//! `.partial` file stays. Progress goes to a `watch` channel (latest value wins).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::client::ProgressRequest;
use super::pull::PullJob;
use crate::store::download::parse_content_range;
use crate::store::named_dirs::partial_file;

/// Waits before download attempts 2, 3 and 4.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
const COPY_CHUNK: usize = 1 << 20;

/// Where a model file comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file this host can read (the router's `path` on a shared filesystem).
    Path(PathBuf),
    Url(reqwest::Url),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Url(u) => write!(f, "{u}"),
        }
    }
}

/// Why a model could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Source(String),
    #[error("file error: {0}")]
    Io(String),
    #[error("download failed: {0}")]
    Http(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("cannot serve the model: {0}")]
    Add(String),
}

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let what = format!("{context} {}", path.display());
    move |e| TransferError::Io(format!("{what}: {e}"))
}

/// Progress arithmetic of one transfer: monotonic fraction below 1 (1.0 is sent
/// only once the model is served) and integer bytes per second.
#[derive(Debug, Clone)]
pub struct Meter {
    /// Bytes present before this transfer started (a resumed `.partial`).
    resumed: u64,
    total: Option<u64>,
    last: f32,
}

impl Meter {
    pub fn new(resumed: u64, total: Option<u64>) -> Self {
        Self {
            resumed,
            total: total.filter(|t| *t > 0),
            last: 0.0,
        }
    }

    /// The report for `done` bytes after `elapsed`; `None` while the total is unknown.
    pub fn report(&mut self, done: u64, elapsed: Duration) -> Option<ProgressRequest> {
        let total = self.total?;
        let fraction = (done as f64 / total as f64).clamp(0.0, 0.99) as f32;
        self.last = self.last.max(fraction);
        let secs = elapsed.as_secs_f64();
        let speed =
            (secs > 0.0).then(|| (done.saturating_sub(self.resumed) as f64 / secs).round() as u64);
        Some(ProgressRequest {
            progress: self.last,
            speed,
        })
    }
}

/// Checks that `path` is a regular file of `size` bytes with `sha256` (lowercase hex),
/// each when given.
///
/// # Errors
/// [`TransferError::Verify`] naming the mismatch, [`TransferError::Io`].
pub async fn verify(
    path: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
) -> Result<(), TransferError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(io("cannot stat", path))?;
    if !meta.is_file() {
        return Err(TransferError::Verify(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if let Some(size) = size.filter(|s| *s != meta.len()) {
        return Err(TransferError::Verify(format!(
            "size {} instead of {size}",
            meta.len()
        )));
    }
    if let Some(want) = sha256 {
        let owned = path.to_path_buf();
        let got = tokio::task::spawn_blocking(move || sha256_file(&owned))
            .await
            .map_err(|e| TransferError::Io(e.to_string()))?
            .map_err(io("cannot read", path))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(TransferError::Verify(format!(
                "sha256 {got} instead of {want}"
            )));
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Puts `source` at `dest` (see the module docs).
///
/// # Errors
/// [`TransferError`]; `dest` is then untouched and at most a `.partial` remains.
pub async fn fetch(
    http: &reqwest::Client,
    source: &Source,
    dest: &Path,
    job: &PullJob,
    progress: &watch::Sender<Option<ProgressRequest>>,
) -> Result<(), TransferError> {
    let dir = dest
        .parent()
        .ok_or_else(|| TransferError::Io("destination has no directory".into()))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io("cannot create", dir))?;
    let partial = partial_file(dest);
    match source {
        Source::Path(path) => copy(path, &partial, progress).await?,
        Source::Url(url) => download(http, url, &partial, job.size, progress).await?,
    }
    if let Err(e) = verify(&partial, job.size, job.sha256.as_deref()).await {
        // A complete but wrong file cannot be resumed into a right one.
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(io("cannot rename onto", dest))
}

async fn copy(
    from: &Path,
    partial: &Path,
    progress: &watch::Sender<Option<ProgressRequest>>,
) -> Result<(), TransferError> {
    let mut src = tokio::fs::File::open(from)
        .await
        .map_err(io("cannot open", from))?;
    let total = src.metadata().await.map_err(io("cannot stat", from))?.len();
    let mut out = tokio::fs::File::create(partial)
        .await
        .map_err(io("cannot create", partial))?;
    let mut meter = Meter::new(0, Some(total));
    let start = Instant::now();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    loop {
        let n = src.read(&mut buf).await.map_err(io("cannot read", from))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .await
            .map_err(io("cannot write", partial))?;
        done += n as u64;
        progress.send_replace(meter.report(done, start.elapsed()));
    }
    out.sync_all().await.map_err(io("cannot sync", partial))
}

/// What one download attempt ended with.
enum Attempt {
    Done,
    Retry(TransferError),
    Fatal(TransferError),
}

async fn download(
    http: &reqwest::Client,
    url: &reqwest::Url,
    partial: &Path,
    size: Option<u64>,
    progress: &watch::Sender<Option<ProgressRequest>>,
) -> Result<(), TransferError> {
    let mut last = None;
    for attempt in 0..=RETRY_DELAYS.len() {
        if attempt > 0 {
            tokio::time::sleep(RETRY_DELAYS[attempt - 1]).await;
        }
        match download_once(http, url, partial, size, progress).await {
            Attempt::Done => return Ok(()),
            Attempt::Fatal(e) => return Err(e),
            Attempt::Retry(e) => {
                tracing::debug!(%url, attempt, "download attempt failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| TransferError::Http("no attempt made".into())))
}

async fn download_once(
    http: &reqwest::Client,
    url: &reqwest::Url,
    partial: &Path,
    size: Option<u64>,
    progress: &watch::Sender<Option<ProgressRequest>>,
) -> Attempt {
    let have = tokio::fs::metadata(partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let mut req = http.get(url.clone());
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return Attempt::Retry(TransferError::Http(e.to_string())),
    };
    let status = resp.status();
    let length = resp.content_length();
    let (offset, total) = match status {
        StatusCode::PARTIAL_CONTENT => {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match range {
                Some((start, total)) if start == have => (have, total.or(length.map(|l| l + have))),
                _ => {
                    let _ = tokio::fs::remove_file(partial).await;
                    return Attempt::Retry(TransferError::Http(
                        "server resumed at the wrong offset".into(),
                    ));
                }
            }
        }
        s if s.is_success() => (0, length),
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            if size == Some(have) {
                return Attempt::Done;
            }
            let _ = tokio::fs::remove_file(partial).await;
            return Attempt::Retry(TransferError::Http("416 on resume; starting over".into()));
        }
        s if s.is_client_error() => {
            return Attempt::Fatal(TransferError::Http(format!("{url} answered HTTP {s}")));
        }
        s => return Attempt::Retry(TransferError::Http(format!("{url} answered HTTP {s}"))),
    };
    let file = if offset > 0 {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(partial)
            .await
    } else {
        tokio::fs::File::create(partial).await
    };
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return Attempt::Fatal(io("cannot open", partial)(e)),
    };
    let mut meter = Meter::new(offset, total.or(size));
    let start = Instant::now();
    let mut done = offset;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = file.sync_all().await;
                return Attempt::Retry(TransferError::Http(format!("connection lost: {e}")));
            }
        };
        if let Err(e) = file.write_all(&chunk).await {
            return Attempt::Fatal(io("cannot write", partial)(e));
        }
        done += chunk.len() as u64;
        progress.send_replace(meter.report(done, start.elapsed()));
    }
    if let Err(e) = file.sync_all().await {
        return Attempt::Fatal(io("cannot sync", partial)(e));
    }
    match total {
        Some(total) if done < total => Attempt::Retry(TransferError::Http(format!(
            "body ended at {done} of {total} bytes"
        ))),
        _ => Attempt::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_is_monotonic_below_one_with_integer_speed() {
        let mut m = Meter::new(0, Some(1000));
        let r = m.report(500, Duration::from_millis(500)).unwrap();
        assert_eq!(r.progress, 0.5);
        assert_eq!(r.speed, Some(1000));
        let r = m.report(400, Duration::from_secs(1)).unwrap();
        assert_eq!(r.progress, 0.5, "never goes back");
        let r = m.report(1000, Duration::from_secs(1)).unwrap();
        assert_eq!(r.progress, 0.99, "1.0 is kept for when the model is served");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"speed\":1000"), "{json}");
        assert!(Meter::new(0, None)
            .report(10, Duration::from_secs(1))
            .is_none());
    }

    #[test]
    fn resumed_bytes_do_not_count_as_speed() {
        let mut m = Meter::new(900, Some(1000));
        let r = m.report(1000, Duration::from_secs(1)).unwrap();
        assert_eq!(r.speed, Some(100));
        assert_eq!(m.report(1000, Duration::ZERO).unwrap().speed, None);
    }

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((10, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[actix_rt::test]
    async fn verify_checks_size_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify(&f, Some(3), Some(sha)).await.unwrap();
        assert!(verify(&f, Some(4), None).await.is_err());
        assert!(verify(&f, None, Some(&sha.replace('b', "c")))
            .await
            .is_err());
        assert!(verify(dir.path(), None, None).await.is_err());
        assert!(verify(&dir.path().join("none"), None, None).await.is_err());
    }
}
