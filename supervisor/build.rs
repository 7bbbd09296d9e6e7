//! Build facts `llm-node --version` and `/health` report (`src/build_info.rs`):
//! the git commit, and what `scripts/build-release.sh` says about the build
//! (`LLM_NODE_BUILD_FLAVOR`: `native` by default, `portable` for release
//! artifacts; `LLM_NODE_BUILD_BACKENDS`: the worker's llama.cpp backends).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    for var in [
        "LLM_NODE_GIT_SHA",
        "LLM_NODE_BUILD_FLAVOR",
        "LLM_NODE_BUILD_BACKENDS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // A new commit changes HEAD (detached) or the branch's ref.
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])),
    ]
    .into_iter()
    .flatten()
    {
        println!("cargo:rerun-if-changed={path}");
    }
    let sha = std::env::var("LLM_NODE_GIT_SHA")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let flavor = std::env::var("LLM_NODE_BUILD_FLAVOR").unwrap_or_else(|_| "native".into());
    let backends = std::env::var("LLM_NODE_BUILD_BACKENDS").unwrap_or_else(|_| "cpu".into());
    println!("cargo:rustc-env=LLM_NODE_GIT_SHA={sha}");
    println!("cargo:rustc-env=LLM_NODE_BUILD_FLAVOR={flavor}");
    println!("cargo:rustc-env=LLM_NODE_BUILD_BACKENDS={backends}");
}
