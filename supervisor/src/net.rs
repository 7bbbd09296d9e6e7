//! Outgoing HTTP clients, and the loopback-only guard.
//!
//! Every client the node uses to reach beyond itself (registries, the Hugging
//! Face Hub, `download_url` pulls, the router) is built from
//! [`client_builder`], so one switch decides where the node may go.
//!
//! With `--loopback-only` ([`set_loopback_only`]) the clients resolve host
//! names with [`LoopbackOnly`]: `localhost` (and `*.localhost`) resolve to the
//! loopback addresses, and every other name is refused *before* any DNS query
//! leaves the machine, logged at `error` with [`REFUSED_MARK`] and counted
//! ([`refused`]). System proxies are ignored in that mode, so a proxy variable
//! cannot carry a request off the machine either. An IP literal is not a name
//! and is not resolved, so a configured public address is still reached: the
//! guard exists for the defaults (`registry.ollama.ai`, `huggingface.co`) and
//! for redirects, which are the ways a test or an air-gapped node could leave
//! its machine without anyone writing a public address.
//!
//! The test suite runs every node it starts this way and fails when a node logs
//! the mark (see `tests/src/lib.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Text in the log line of every refused resolution (tests look for it).
pub const REFUSED_MARK: &str = "loopback-only: refused to resolve";

static LOOPBACK_ONLY: AtomicBool = AtomicBool::new(false);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Sets the process-wide policy (from `--loopback-only`) for clients built afterwards.
pub fn set_loopback_only(on: bool) {
    LOOPBACK_ONLY.store(on, Ordering::Relaxed);
}

/// Whether `--loopback-only` is on.
pub fn loopback_only() -> bool {
    LOOPBACK_ONLY.load(Ordering::Relaxed)
}

/// Host names refused by [`LoopbackOnly`] since the process started.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// A client builder under the node's network policy.
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match LOOPBACK_ONLY.load(Ordering::Relaxed) {
        true => builder.no_proxy().dns_resolver(Arc::new(LoopbackOnly)),
        false => builder,
    }
}

/// `e` with its chain of causes (`error sending request for url (…): client
/// error (Connect): dns error: …`): reqwest's own text stops at the first
/// line, which never says why.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Resolves `localhost` names to loopback; refuses every other name.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackOnly;

impl LoopbackOnly {
    /// The addresses of `host`, or why it is refused.
    fn lookup(host: &str) -> Result<Vec<SocketAddr>, String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
            ]);
        }
        REFUSED.fetch_add(1, Ordering::Relaxed);
        tracing::error!(host, "{REFUSED_MARK} a host that is not loopback");
        Err(format!(
            "--loopback-only: {host} is not a loopback host; not resolved"
        ))
    }
}

impl Resolve for LoopbackOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let result = Self::lookup(name.as_str())
            .map(|addrs| Box::new(addrs.into_iter()) as Addrs)
            .map_err(Into::into);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_resolve_to_loopback_and_nothing_else_resolves() {
        for host in ["localhost", "LOCALHOST.", "node.localhost"] {
            let addrs = LoopbackOnly::lookup(host).unwrap();
            assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{host}");
        }
        let before = refused();
        for host in [
            "registry.ollama.ai",
            "huggingface.co",
            "localhost.example.com",
        ] {
            let e = LoopbackOnly::lookup(host).unwrap_err();
            assert!(e.contains(host), "{e}");
        }
        assert!(refused() >= before + 3);
    }

    #[actix_rt::test]
    async fn a_guarded_client_fails_on_a_public_name_before_any_query() {
        set_loopback_only(true);
        let client = client_builder().build().unwrap();
        let e = client
            .get("http://registry.ollama.ai/v2/")
            .send()
            .await
            .unwrap_err();
        assert!(
            describe(&e).contains("registry.ollama.ai is not a loopback host"),
            "{e:?}"
        );
    }
}
