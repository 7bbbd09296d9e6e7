//! What this binary is: version, git commit, build flavour and the worker's
//! llama.cpp backends, as `build.rs` recorded them. A leaf: `config` shows it
//! in `--version`, `api` in `/health`.
//!
//! The flavour is `native` for a plain `cargo build` (`.cargo/config.toml`
//! targets this machine's CPU) and `portable` for `scripts/build-release.sh`
//! (baseline x86-64, CPU variants chosen at run time).

use serde::Serialize;

/// The whole `--version` line after the program name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("LLM_NODE_GIT_SHA"),
    ", ",
    env!("LLM_NODE_BUILD_FLAVOR"),
    ", backends: ",
    env!("LLM_NODE_BUILD_BACKENDS"),
    ")"
);

/// The same facts as a JSON object (`/health`'s `build`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_sha: &'static str,
    /// `native` or `portable`.
    pub flavor: &'static str,
    /// Comma-separated llama.cpp backends of the worker built alongside.
    pub backends: &'static str,
}

/// This binary's build.
pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    git_sha: env!("LLM_NODE_GIT_SHA"),
    flavor: env!("LLM_NODE_BUILD_FLAVOR"),
    backends: env!("LLM_NODE_BUILD_BACKENDS"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_names_version_commit_flavor_and_backends() {
        for part in [BUILD.version, BUILD.git_sha, BUILD.flavor, BUILD.backends] {
            assert!(!part.is_empty());
            assert!(LONG_VERSION.contains(part), "{LONG_VERSION} lacks {part}");
        }
        assert!(LONG_VERSION.starts_with(BUILD.version));
    }
}
