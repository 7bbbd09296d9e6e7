//! What a worker binary was built with, from `llm-node-worker --version`:
//! `llm-node-worker 0.1.0 (protocol 9; backends: CPU, CUDA; GPUs: CUDA0)`.
//! The node asks once at start, so it can say loudly when it sees GPUs that
//! its worker cannot use ([`crate::gpu::cpu_only_worker`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--version` may take (a CUDA build initialises the driver).
const TIMEOUT: Duration = Duration::from_secs(20);

/// The backends listed in a `--version` line; `None` when it has none.
pub fn parse_backends(line: &str) -> Option<Vec<String>> {
    let rest = line.split("backends: ").nth(1)?;
    let list = rest.split([';', ')']).next()?;
    let backends: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!backends.is_empty()).then_some(backends)
}

/// Runs `bin --version` and returns its backends.
///
/// # Errors
/// A message when the binary cannot run, times out, or prints no backends
/// (an older worker).
pub fn backends(bin: &Path) -> Result<Vec<String>, String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e}", bin.display()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} --version did not answer", bin.display()));
            }
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    parse_backends(&out)
        .ok_or_else(|| format!("{} --version lists no backends: {out:?}", bin.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_backends_of_a_version_line() {
        let table: &[(&str, Option<&[&str]>)] = &[
            (
                "llm-node-worker 0.1.0 (protocol 9; backends: CPU; GPUs: none)\n",
                Some(&["CPU"]),
            ),
            (
                "llm-node-worker 0.1.0 (protocol 9; backends: CPU, CUDA; GPUs: CUDA0)",
                Some(&["CPU", "CUDA"]),
            ),
            (
                "x (backends: Metal, BLAS, CPU)",
                Some(&["Metal", "BLAS", "CPU"]),
            ),
            ("llm-node-worker 0.1.0", None),
            ("backends: ;", None),
            ("", None),
        ];
        for (line, want) in table {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(parse_backends(line), want, "{line:?}");
        }
    }

    #[test]
    fn a_missing_binary_is_an_error_not_a_hang() {
        let err = backends(Path::new("/nonexistent/llm-node-worker")).unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }
}
