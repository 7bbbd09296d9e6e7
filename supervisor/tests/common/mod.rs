//! Helpers shared by the whole-node tests.

use std::path::PathBuf;

/// `target/<profile>/examples/fake_worker`, the stand-in worker with fault
/// flags (`examples/fake_worker.rs`); `cargo test -p llm-node` builds it.
pub fn fake_worker() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/fake_worker");
    assert!(
        path.is_file(),
        "{path:?} missing: run `cargo test -p llm-node` (which builds examples) or `cargo build --examples -p llm-node`"
    );
    path
}
