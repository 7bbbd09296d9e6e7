//! CORS for browser clients (`--cors-origin`, `actix-cors`).
//!
//! Without `--cors-origin` the middleware is off: no CORS headers, and a
//! preflight reaches the route table (405 or the access check), so browsers
//! refuse cross-origin calls. With origins (or `*` for any), preflights are
//! answered here, before [`super::access`], for the methods the node serves and
//! the headers clients send (`Authorization`, `Content-Type`, `X-API-Key`,
//! `X-Request-Id`, `traceparent`); `X-Request-Id` and `traceparent` are exposed
//! to scripts. A request from an origin not listed is refused by `actix-cors`
//! (400, plain text), preflight or not.

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::middleware::Condition;

/// Why a `--cors-origin` is unusable.
#[derive(Debug, thiserror::Error)]
#[error("--cors-origin {0:?} is not `*` or an origin like https://app.example.com[:port]")]
pub struct BadOrigin(String);

/// The configured origins, checked: `*` or `scheme://host[:port]`, nothing more.
///
/// # Errors
/// [`BadOrigin`] naming the first unusable one.
pub fn origins(given: &[String]) -> Result<Vec<String>, BadOrigin> {
    given
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .map(|o| {
            if o == "*" {
                return Ok(o);
            }
            let url = url::Url::parse(&o).map_err(|_| BadOrigin(o.clone()))?;
            let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
            let origin = url.origin().ascii_serialization();
            match (url.scheme(), bare, origin == "null") {
                ("http" | "https", true, false) => Ok(origin),
                _ => Err(BadOrigin(o)),
            }
        })
        .collect()
}

/// The CORS middleware for `origins` (from [`origins`]); off when empty.
pub fn middleware(origins: &[String]) -> Condition<Cors> {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("x-api-key"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
    }
    Condition::new(!origins.is_empty(), cors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_bare_http_origins_or_a_star() {
        let ok = |o: &str| origins(&[o.to_string()]).map(|v| v.concat());
        assert_eq!(ok("*").unwrap(), "*");
        assert_eq!(
            ok("https://App.example.com/").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            ok("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "app.example.com",
            "https://a.com/path",
            "file:///x",
            "ftp://a.com",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        assert!(origins(&[]).unwrap().is_empty());
    }
}
