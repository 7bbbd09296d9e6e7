//! Where llm-node keeps things on disk by default. A leaf: any layer may ask.

use std::path::PathBuf;

/// Where `scripts/setup.sh` caches the bundled model: `$LLM_NODE_CACHE/models`,
/// default `~/.cache/llm-node/models`.
pub fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("LLM_NODE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/llm-node")
        });
    cache.join("models")
}
