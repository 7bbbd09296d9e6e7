//! Which sources llm-router's `/pull` may copy or download a model from.
//!
//! `/pull` names a `path` on this host and a `download_url`; without limits any
//! file the node can read, or any address it can reach (a cloud metadata
//! service, a loopback-only admin API), would be copied into the store. Two pure
//! decisions, applied by `api::router` before a pull is queued:
//!
//! - [`path_allowed`]: a path (already canonical: symlinks and `..` resolved)
//!   must lie inside one of the `--pull-path-allow` directories; none by default.
//! - [`url_refusal`]: a URL must be `http(s)`; a host that is a loopback,
//!   link-local, unspecified or cloud metadata address (IPv4-mapped forms
//!   included) or a metadata host name is refused unless it is the router's own
//!   host or `--pull-allow-local-urls` is set. Host names are judged by name,
//!   not resolved here (a name that resolves to such an address is not caught).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Whether `path` (canonical) lies inside one of `dirs` (canonical).
pub fn path_allowed(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| path.starts_with(dir))
}

/// Host names of cloud metadata services.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why `url` may not be downloaded from, or `None` when it may.
/// `router_host` is the registered router's host (always allowed).
pub fn url_refusal(
    url: &reqwest::Url,
    router_host: Option<&str>,
    allow_local: bool,
) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!(
            "download_url must be http or https, not {}:",
            url.scheme()
        ));
    }
    let Some(host) = url.host_str() else {
        return Some("download_url has no host".into());
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if allow_local || router_host.is_some_and(|r| r.eq_ignore_ascii_case(&host)) {
        return None;
    }
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
        _ => {
            host == "localhost"
                || host.ends_with(".localhost")
                || METADATA_NAMES.contains(&host.as_str())
        }
    };
    local.then(|| {
        format!(
            "download_url host {host} is a loopback, link-local or metadata address \
             (the node allows it only with --pull-allow-local-urls)"
        )
    })
}

/// Loopback, link-local, unspecified, or a known metadata address.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| v6.to_ipv4()) {
            Some(v4) if !v6.is_loopback() && !v6.is_unspecified() => is_local_v4(v4),
            _ => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    // fe80::/10
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
                    // AWS's IPv6 metadata endpoint
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        // Alibaba Cloud's metadata service.
        || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_refused_by_scheme_and_address() {
        let table: &[(&str, Option<&str>, bool, bool)] = &[
            // (url, router host, allow local, refused)
            ("https://huggingface.co/x.gguf", None, false, false),
            ("http://10.0.0.5:8080/x.gguf", None, false, false),
            (
                "http://169.254.169.254/latest/meta-data/",
                None,
                false,
                true,
            ),
            (
                "http://169.254.169.254/latest/meta-data/",
                None,
                true,
                false,
            ),
            ("http://[fd00:ec2::254]/latest/", None, false, true),
            ("http://[fe80::1]/x", None, false, true),
            ("http://[::ffff:169.254.169.254]/x", None, false, true),
            ("http://[::ffff:127.0.0.1]/x", None, false, true),
            ("http://[::1]:11435/admin/models", None, false, true),
            ("http://127.0.0.1:11435/admin/models", None, false, true),
            ("http://127.0.0.2/x", None, false, true),
            ("http://0.0.0.0:11435/x", None, false, true),
            (
                "http://100.100.100.200/latest/meta-data/",
                None,
                false,
                true,
            ),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                None,
                false,
                true,
            ),
            ("http://localhost:8080/x", None, false, true),
            (
                "http://127.0.0.1:9000/files/x.gguf",
                Some("127.0.0.1"),
                false,
                false,
            ),
            ("http://localhost:9000/x", Some("LOCALHOST"), false, false),
            ("file:///etc/passwd", None, true, true),
            ("ftp://example.com/x", None, false, true),
            ("gopher://example.com/x", Some("example.com"), false, true),
        ];
        for (url, router, allow, refused) in table {
            let parsed = reqwest::Url::parse(url).unwrap();
            let got = url_refusal(&parsed, *router, *allow);
            assert_eq!(got.is_some(), *refused, "{url}: {got:?}");
        }
    }

    #[test]
    fn paths_must_lie_inside_an_allowed_directory() {
        let dirs = [PathBuf::from("/srv/models"), PathBuf::from("/data/shared")];
        let table: &[(&str, bool)] = &[
            ("/srv/models/a/model.gguf", true),
            ("/data/shared/x.gguf", true),
            ("/etc/passwd", false),
            ("/srv/models-evil/x.gguf", false),
            ("/srv", false),
        ];
        for (path, allowed) in table {
            assert_eq!(path_allowed(Path::new(path), &dirs), *allowed, "{path}");
        }
        assert!(
            !path_allowed(Path::new("/srv/models/x"), &[]),
            "none by default"
        );
    }
}
