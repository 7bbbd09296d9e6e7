//! A Hugging Face Hub subset on loopback, for tests that pull a checkpoint
//! through the node's own `/api/pull` (`--hf-endpoint`): it serves the files
//! of one local directory as one repository — the recursive tree listing
//! (sizes, the LFS digest of weights, the directories) and
//! `resolve/main/<path>` with `Range`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};

fn files_under(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, p));
        }
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The Hub's recursive tree listing of `dir`.
fn listing(dir: &Path) -> String {
    let mut files = Vec::new();
    files_under(dir, dir, &mut files);
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|(rel, _)| rel.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.sort();
    dirs.dedup();
    let entries = files.iter().map(|(rel, p)| {
        let size = std::fs::metadata(p).unwrap().len();
        let mut entry = json!({"type": "file", "path": rel, "size": size});
        if rel.ends_with(".safetensors") {
            entry["lfs"] = json!({"oid": sha256_hex(p), "size": size});
        }
        entry
    });
    let dirs = dirs.iter().map(|d| json!({"type": "directory", "path": d}));
    Value::Array(entries.chain(dirs).collect()).to_string()
}

/// Serves the checkpoint in `dir` as `owner_repo` until the test process
/// ends; returns the endpoint's URL (for `--hf-endpoint`).
pub fn serve(owner_repo: &str, dir: &Path) -> String {
    let listing = Arc::new(listing(dir));
    let root = Arc::new(dir.to_path_buf());
    let repo = Arc::new(owner_repo.to_string());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (listing, root, repo) = (listing.clone(), root.clone(), repo.clone());
            std::thread::spawn(move || {
                let _ = answer(conn, &repo, &listing, &root);
            });
        }
    });
    url
}

fn answer(mut conn: TcpStream, repo: &str, listing: &str, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().trim_start_matches("bytes=").to_string());
        }
    }
    const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let tree = format!("/api/models/{repo}/tree/main?recursive=true");
    let resolve = format!("/{repo}/resolve/main/");
    let body = if path == tree {
        listing.as_bytes().to_vec()
    } else if let Some(rel) = path.strip_prefix(&resolve) {
        match std::fs::read(root.join(rel)) {
            Ok(b) if !rel.contains("..") => b,
            _ => return conn.write_all(NOT_FOUND),
        }
    } else {
        return conn.write_all(NOT_FOUND);
    };
    let len = body.len();
    let (start, end, head) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let a: usize = a.parse().unwrap();
            let b: usize = b.parse().map_or(len - 1, |b: usize| b.min(len - 1));
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b - a + 1
            );
            (a, b, head)
        }
        None => (
            0,
            len.saturating_sub(1),
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"),
        ),
    };
    conn.write_all(head.as_bytes())?;
    if len > 0 {
        conn.write_all(&body[start..=end])?;
    }
    Ok(())
}
