//! A disk that fills up in the middle of a pull, for real: the node (the
//! `llm-node` binary, with a fake worker) runs in its own user and mount
//! namespace (`unshare -rm`) with its store on a 24 MiB tmpfs, and the test
//! fills that tmpfs (through `/proc/<pid>/root`) while a slow download from a
//! fake registry (`fake_hub/`) is under way, so the store's next write fails
//! with `ENOSPC`.
//!
//! Why this way: the store checks free space before it downloads (and that
//! check is tested with a fake free-space function in store.rs), so only a
//! disk filled by someone else *during* the transfer reaches the `ENOSPC`
//! path. `RLIMIT_FSIZE` would give `EFBIG` (and `SIGXFSZ`), not `ENOSPC`, and
//! a `/dev/full` symlink would fail the first write only. A tmpfs of our own
//! needs no root, only unprivileged user namespaces; where they are missing
//! the test fails with that reason instead of passing without testing.

mod common;
use common::fake_worker;

mod fake_hub;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_hub::{sha256, FakeHub};
use serde_json::{json, Value};

/// tmpfs size of the store.
const DISK: &str = "24m";

fn synthetic(n: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    v[..4].copy_from_slice(b"GGUF");
    v
}

/// The node in its own namespaces; killed on drop.
struct Jailed {
    child: Child,
    url: String,
    /// The store as this process sees it (through the node's root).
    store: PathBuf,
    log: PathBuf,
}

impl Drop for Jailed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails loudly (not a skip) where `unshare -rm` + a tmpfs is not allowed.
fn require_user_namespaces() {
    let probe = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "this test needs unprivileged user namespaces (`unshare -rm` and a tmpfs mount; \
             on Debian/Ubuntu: sysctl kernel.unprivileged_userns_clone=1, \
             kernel.apparmor_restrict_unprivileged_userns=0): {other:?}"
        ),
    }
}

async fn start(dir: &Path, hub: &FakeHub) -> Jailed {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let base = dir.join("base.gguf");
    std::fs::write(&base, "").unwrap();
    let log = dir.join("node.log");
    let node = [
        env!("CARGO_BIN_EXE_llm-node").to_string(),
        "--host=127.0.0.1".into(),
        format!("--port={port}"),
        // Never resolve a public host (see `llm_node::net`).
        "--loopback-only".into(),
        format!("--model=base={}", base.display()),
        format!("--worker-bin={}", fake_worker().display()),
        format!("--store-dir={}", store.display()),
        format!("--registry-url={}", hub.url()),
        format!("--hf-endpoint={}", hub.url()),
        "--no-ollama-models".into(),
        "--shutdown-timeout-secs=2".into(),
    ];
    let script = format!(
        "mount -t tmpfs -o size={DISK} tmpfs {} && exec \"$@\"",
        store.display()
    );
    let child = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script, "sh"])
        .args(node)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let jailed = Jailed {
        store: PathBuf::from(format!("/proc/{}/root{}", child.id(), store.display())),
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/admin/models", jailed.url))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node never listened: {}",
            jailed.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    jailed
}

impl Jailed {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every file under the store, relative to it.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.store, &self.store, &mut out);
        out.sort();
        out
    }

    /// Fills the disk with `filler`, 64 KiB at a time, until it is full.
    fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.store.join("filler")).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        let _ = f.flush();
        n
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn chat(&self, model: &str) -> u16 {
        let body = json!({"model": model, "max_tokens": 2,
                          "messages": [{"role": "user", "content": "hi"}]});
        self.post("/v1/chat/completions", body).await.0
    }
}

#[actix_rt::test]
async fn a_disk_that_fills_mid_pull_is_a_clear_507_leaves_no_partial_files_and_the_next_pull_works()
{
    require_user_namespaces();
    let t0 = Instant::now();
    let hub = FakeHub::start();
    let blob = synthetic(6 << 20, 7);
    hub.publish("library", "big", "latest", &blob, None);
    // Slow enough to fill the disk while it runs: 64 KiB per 30 ms.
    hub.faults(|f| f.chunk_delay = Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path(), &hub).await;
    assert_eq!(node.chat("base").await, 200);
    let before = node.files();

    let pull = node.post("/api/pull", json!({"model": "big", "stream": false}));
    let fill = async {
        // Fill the disk once the download is under way.
        let deadline = Instant::now() + Duration::from_secs(20);
        while hub.served() < 256 << 10 {
            assert!(Instant::now() < deadline, "the download never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let filled = node.fill();
        println!("filled {filled} bytes after {} served", hub.served());
    };
    let ((status, body), ()) = tokio::join!(pull, fill);
    println!("pull on a full disk: {status} {body}");
    assert_eq!(status, 507, "{body}");
    // Ollama's shape: `{"error": "…"}`.
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("disk") && !message.contains(&*node.store.to_string_lossy()),
        "the answer names no path of the store: {message}"
    );
    // No partial or half-installed files: besides the filler, only small
    // layers that completed before the disk filled (whole, verified blobs
    // that the next pull reuses); not the model's blob, no manifest.
    let new: Vec<String> = node
        .files()
        .into_iter()
        .filter(|f| !before.contains(f) && f != "filler")
        .collect();
    for f in &new {
        let bytes = std::fs::read(node.store.join(f)).unwrap();
        let whole = f.strip_prefix("blobs/") == Some(&sha256(&bytes).replace(':', "-"));
        assert!(
            whole && bytes.len() < 4096,
            "left by the failed pull: {f} ({} bytes)",
            bytes.len()
        );
    }
    println!("left by the failed pull: {new:?} (whole small layers)");
    // The served model never noticed; the node is alive.
    assert_eq!(node.chat("base").await, 200);

    // Space freed: the same pull works, and the model serves.
    std::fs::remove_file(node.store.join("filler")).unwrap();
    hub.faults(|f| f.chunk_delay = Duration::ZERO);
    let (status, body) = node
        .post("/api/pull", json!({"model": "big", "stream": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Served under its full name:tag (docs/models.md).
    assert_eq!(node.chat("big:latest").await, 200);
    let log = node.log();
    let panics = log.matches("panicked").count();
    let deaths = usize::from(node.child.try_wait().unwrap().is_some());
    println!(
        "disk full: 5xx other than the 507: 0, panics: {panics}, node deaths: {deaths}, \
         partial files left: 0 ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!((panics, deaths), (0, 0), "{log}");
}
