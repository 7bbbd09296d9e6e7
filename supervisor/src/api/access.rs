//! Who may call which route: one middleware in front of the whole route table.
//!
//! Every path falls in one [`Class`] ([`classify`]), decided by its prefix, so
//! a route added later is covered without its handler knowing:
//!
//! | class | routes | who may call |
//! |---|---|---|
//! | open | `/health`, `/health/ready`, `/startup`, `OPTIONS` preflights (answered by CORS) | anyone |
//! | metrics | `/metrics` | anyone; with `--metrics-need-key`, as inference |
//! | admin | `/admin/*` (`/admin/log-level` included); the store-changing Ollama routes `/api/pull`, `/api/delete`, `/api/copy`, `/api/push`, `/api/create`, `/api/blobs/*` | with `--admin-key`: that key (`Authorization: Bearer` or `X-Admin-Key`); without: loopback clients (`127.0.0.1`, `::1`) only (403) |
//! | router | llm-router's `/pull` and `/api/logs` | the router's address, the `--pull-secret` (`X-Pull-Secret`), the admin key, or (without an admin key) loopback |
//! | inference | everything else: `/v1/*`, every other `/api/*` (`/api/chat`, `/api/generate`, `/api/tags`, …), unknown paths | with `--api-key`s: one of them or the admin key (`Authorization: Bearer` or `X-API-Key`; 401); `--trust-router` lets the router's address in without one |
//!
//! Keys are compared in constant time (`subtle`). The client address is the
//! TCP peer's: `X-Forwarded-For` is not trusted (behind a reverse proxy on the
//! same host every client is loopback; give the node an admin key there).
//!
//! A refusal is an [`ApiError`] answered here (401 [`ApiError::InvalidApiKey`]
//! or [`ApiError::Unauthorized`], 403 [`ApiError::Forbidden`]), so
//! [`super::shape`] renders it in Ollama's shape on `/api/*`. An admitted
//! request carries [`Admitted`] in its extensions; [`super::state::authorize`]
//! checks that mark, so a handler reached without this middleware (or without
//! its [`Access`] app data) refuses (fails closed).

use std::net::IpAddr;
use std::path::PathBuf;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::policy::sources;
use crate::router::PullJob;

/// Access control flags (see `docs/operations.md`, "Security model").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// API key required on every inference route (`/v1/*`, Ollama's `/api/*`),
    /// sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`. Repeatable; the
    /// environment variable takes a comma-separated list. None: inference is open.
    #[arg(
        long = "api-key",
        env = "LLM_NODE_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// File of API keys, one per line (blank lines and `#` comments ignored),
    /// added to `--api-key`. Read once at startup.
    #[arg(long, env = "LLM_NODE_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Require an API key (or the admin key) on `/metrics` too.
    #[arg(long, env = "LLM_NODE_METRICS_NEED_KEY")]
    pub metrics_need_key: bool,

    /// Let the registered router's address call inference routes without an
    /// API key (llm-router sends none; it checks its own clients' keys).
    #[arg(long, env = "LLM_NODE_TRUST_ROUTER")]
    pub trust_router: bool,

    /// Secret that lets any address call llm-router's `/pull` and `/api/logs`,
    /// sent as `X-Pull-Secret: SECRET` (the router's own address needs none).
    #[arg(long, env = "LLM_NODE_PULL_SECRET", hide_env_values = true)]
    pub pull_secret: Option<String>,

    /// Directory whose files `/pull`'s `path` may copy into the store
    /// (repeatable; comma-separated in the environment). None by default: a
    /// `path` is refused.
    #[arg(
        long = "pull-path-allow",
        env = "LLM_NODE_PULL_PATH_ALLOW",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub pull_path_allow: Vec<PathBuf>,

    /// Let `/pull`'s `download_url` reach loopback, link-local, unspecified
    /// and cloud metadata addresses (refused by default unless it is the router's host).
    #[arg(long, env = "LLM_NODE_PULL_ALLOW_LOCAL_URLS")]
    pub pull_allow_local_urls: bool,

    /// Origin allowed to call the node from a browser (CORS), e.g.
    /// `https://app.example.com`; `*` allows any. Repeatable (comma-separated in
    /// the environment). None: no CORS headers, preflights are refused.
    #[arg(
        long = "cors-origin",
        env = "LLM_NODE_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

/// Why the access settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read --api-key-file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--api-key-file {0} holds no key")]
    EmptyKeyFile(PathBuf),
    #[error("--pull-path-allow {path}: {source}")]
    PullDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Health and startup probes.
    Open,
    /// `/metrics`.
    Metrics,
    /// `/admin/*` and the store-changing routes.
    Admin,
    /// llm-router's `/pull` and `/api/logs`.
    Router,
    /// Everything else, inference and listings.
    Inference,
}

/// Ollama routes that change the store: admin, not inference.
const STORE_ROUTES: &[&str] = &[
    "/api/pull",
    "/api/delete",
    "/api/copy",
    "/api/push",
    "/api/create",
];

/// The class of `path` (see the table above). Unknown paths are inference, so
/// a new route is closed by default.
pub fn classify(path: &str) -> Class {
    match path {
        "/health" | "/health/ready" | "/startup" => Class::Open,
        "/metrics" => Class::Metrics,
        "/pull" | "/api/logs" => Class::Router,
        p if p == "/admin" || p.starts_with("/admin/") => Class::Admin,
        p if STORE_ROUTES.contains(&p) || p.starts_with("/api/blobs/") => Class::Admin,
        _ => Class::Inference,
    }
}

/// Marks a request the middleware let through, and how.
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    pub class: Class,
}

/// The credentials a request carries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer …`.
    pub bearer: Option<&'a str>,
    /// `X-API-Key`.
    pub api_key: Option<&'a str>,
    /// `X-Admin-Key`.
    pub admin_key: Option<&'a str>,
    /// `X-Pull-Secret`.
    pub pull_secret: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// The credentials in `headers`.
    pub fn of(headers: &'a HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        Credentials {
            bearer,
            api_key: header("x-api-key").map(str::trim),
            admin_key: header("x-admin-key").map(str::trim),
            pull_secret: header("x-pull-secret").map(str::trim),
        }
    }
}

/// The node's access policy, as app data (`web::Data<Access>`).
#[derive(Debug, Clone, Default)]
pub struct Access {
    api_keys: Vec<String>,
    admin_key: Option<String>,
    metrics_need_key: bool,
    trust_router: bool,
    pull_secret: Option<String>,
    router_ips: Vec<IpAddr>,
    /// `--pull-path-allow`, canonical.
    pull_dirs: Vec<PathBuf>,
    pull_allow_local: bool,
    /// The registered router's host, whose URLs `/pull` may always download.
    router_host: Option<String>,
}

/// Constant-time equality of a given secret with the configured one.
fn same(given: &str, secret: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(secret.as_bytes()))
}

impl Access {
    /// The policy from the flags, the admin key and the router's URL
    /// (`--router-url`), whose host is resolved once, here.
    ///
    /// # Errors
    /// [`AccessError`] when `--api-key-file` cannot be read or holds no key,
    /// or a `--pull-path-allow` directory does not exist.
    pub fn new(
        args: &AccessArgs,
        admin_key: Option<String>,
        router_url: Option<&str>,
    ) -> Result<Self, AccessError> {
        let router_host = router_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
            });
        let router_ips = router_url.map(router_ips).unwrap_or_default();
        let pull_dirs = args
            .pull_path_allow
            .iter()
            .map(|d| {
                d.canonicalize().map_err(|source| AccessError::PullDir {
                    path: d.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut api_keys: Vec<String> = args
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(path) = &args.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| AccessError::KeyFile {
                path: path.clone(),
                source,
            })?;
            let before = api_keys.len();
            api_keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
            if api_keys.len() == before {
                return Err(AccessError::EmptyKeyFile(path.clone()));
            }
        }
        Ok(Access {
            api_keys,
            admin_key: admin_key.filter(|k| !k.is_empty()),
            metrics_need_key: args.metrics_need_key,
            trust_router: args.trust_router,
            pull_secret: args.pull_secret.clone().filter(|s| !s.is_empty()),
            router_ips,
            pull_dirs,
            pull_allow_local: args.pull_allow_local_urls,
            router_host,
        })
    }

    /// Whether inference needs a key.
    pub fn keyed(&self) -> bool {
        !self.api_keys.is_empty()
    }

    /// Whether admin routes are closed to all but loopback clients (no admin key).
    pub fn loopback_admin(&self) -> bool {
        self.admin_key.is_none()
    }

    fn is_admin(&self, token: Option<&str>) -> bool {
        matches!((&self.admin_key, token), (Some(key), Some(t)) if same(t, key))
    }

    fn is_api_key(&self, token: Option<&str>) -> bool {
        // Every key is compared, so the time does not tell which one matched.
        token.is_some_and(|t| {
            self.api_keys
                .iter()
                .fold(false, |found, key| found | same(t, key))
        })
    }

    fn is_router(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.router_ips.iter().any(|r| same_ip(*r, ip)))
    }

    /// Whether a request of `class` from `peer` with `creds` may proceed. Pure.
    ///
    /// # Errors
    /// The refusal to answer: 401 for a missing or wrong key, 403 for a caller
    /// the route never serves.
    pub fn decide(
        &self,
        class: Class,
        creds: Credentials<'_>,
        peer: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let loopback = peer.is_some_and(is_loopback);
        let admin = self.is_admin(creds.bearer) || self.is_admin(creds.admin_key);
        let inference = || {
            admin
                || self.is_api_key(creds.bearer)
                || self.is_api_key(creds.api_key)
                || (self.trust_router && self.is_router(peer))
        };
        match class {
            Class::Open => Ok(()),
            Class::Metrics if !self.metrics_need_key => Ok(()),
            Class::Inference | Class::Metrics if !self.keyed() || inference() => Ok(()),
            Class::Inference | Class::Metrics => Err(ApiError::InvalidApiKey),
            Class::Admin if admin => Ok(()),
            Class::Admin if self.admin_key.is_some() => Err(ApiError::Unauthorized),
            Class::Admin if loopback => Ok(()),
            Class::Admin => Err(ApiError::Forbidden(
                "Admin routes answer only loopback clients on a node without an admin key \
                 (set --admin-key to manage it remotely)"
                    .into(),
            )),
            Class::Router => {
                let secret = matches!((&self.pull_secret, creds.pull_secret),
                    (Some(s), Some(given)) if same(given, s));
                if secret || admin || self.is_router(peer) || (loopback && self.loopback_admin()) {
                    Ok(())
                } else {
                    Err(ApiError::Router(Box::new(ApiError::Forbidden(
                        "This route answers only the registered router, loopback clients \
                         or a request with the X-Pull-Secret"
                            .into(),
                    ))))
                }
            }
        }
    }
}

impl Access {
    /// Whether llm-router's `/pull` may use `job`'s sources (see
    /// [`crate::policy::sources`]). A `path` this host cannot resolve is left
    /// to the store (which skips an unreadable one).
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] naming the refused `path` or `download_url`.
    pub fn check_pull(&self, job: &PullJob) -> Result<(), ApiError> {
        if let Some(path) = &job.path {
            if let Ok(real) = path.canonicalize() {
                if !sources::path_allowed(&real, &self.pull_dirs) {
                    return Err(ApiError::Forbidden(format!(
                        "path {} is outside the directories this node copies from \
                         (--pull-path-allow)",
                        path.display()
                    )));
                }
            }
        }
        if let Some(url) = &job.download_url {
            // A relative URL is resolved against the router (or dropped standalone).
            if let Ok(url) = reqwest::Url::parse(url) {
                let refusal =
                    sources::url_refusal(&url, self.router_host.as_deref(), self.pull_allow_local);
                if let Some(why) = refusal {
                    return Err(ApiError::Forbidden(why));
                }
            }
        }
        Ok(())
    }
}

/// The addresses of the router at `url`: an IP literal, `localhost`'s loopback
/// addresses, or the name resolved once (none when it cannot be).
fn router_ips(url: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) if name.eq_ignore_ascii_case("localhost") => vec![
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ],
        // Under --loopback-only no other name is resolved (see `net`).
        Some(url::Host::Domain(_)) if crate::net::loopback_only() => Vec::new(),
        Some(url::Host::Domain(name)) => (name, url.port_or_known_default().unwrap_or(80))
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .unwrap_or_else(|e| {
                tracing::warn!("cannot resolve the router's host {name}: {e}; /pull then needs the X-Pull-Secret");
                Vec::new()
            }),
        None => Vec::new(),
    }
}

/// Whether `ip` is `127.0.0.1` or `::1` (IPv4-mapped included). Other 127/8
/// addresses are not trusted: nothing on this host needs them, and a test can
/// stand in for a remote client by connecting from one.
fn is_loopback(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one (`::ffff:127.0.0.1` is loopback).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

/// The middleware (`App::wrap(from_fn(access::middleware))`), inside
/// [`super::shape`] so refusals on `/api/*` come out in Ollama's shape.
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let class = classify(req.path());
    // Preflights carry no credentials; the CORS middleware outside answers them.
    let decision = if req.method() == Method::OPTIONS {
        Ok(())
    } else {
        match req.app_data::<web::Data<Access>>() {
            Some(access) => access.decide(
                class,
                Credentials::of(req.headers()),
                req.peer_addr().map(|a| a.ip()),
            ),
            // Fail closed: a node built without a policy serves only the probes.
            None if class == Class::Open => Ok(()),
            None => Err(ApiError::Forbidden("No access policy configured".into())),
        }
    };
    match decision {
        Ok(()) => {
            req.extensions_mut().insert(Admitted { class });
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Err(refusal) => {
            tracing::info!(class = ?class, peer = ?req.peer_addr(), "refused: {refusal}");
            Ok(req.error_response(refusal).map_into_boxed_body())
        }
    }
}

#[cfg(test)]
mod tests;
