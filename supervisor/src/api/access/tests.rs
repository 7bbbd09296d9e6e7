//! The access policy as a table, and against every route of the route table.

use std::net::{IpAddr, SocketAddr};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test as web_test, web, App};
use serde_json::Value;

use super::*;
use crate::api::{configure, AppState};
use crate::testing::fake_models;

const REMOTE: &str = "10.1.2.3:5555";
const LOOPBACK: &str = "127.0.0.1:5555";

fn access(api_keys: &[&str], admin_key: Option<&str>, router: Option<&str>) -> Access {
    let args = AccessArgs {
        api_keys: api_keys.iter().map(|k| k.to_string()).collect(),
        pull_secret: Some("pull-s3cret".into()),
        ..AccessArgs::default()
    };
    Access::new(&args, admin_key.map(String::from), router).unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn each_class_admits_its_callers_only() {
    let keyed = access(&["k1", "k2"], Some("adm"), Some("http://10.9.9.9:8080"));
    let open = access(&[], None, None);
    let none = Credentials::default();
    let bearer = |t| Credentials {
        bearer: Some(t),
        ..Credentials::default()
    };
    let x_api = |t| Credentials {
        api_key: Some(t),
        ..Credentials::default()
    };
    let x_admin = |t| Credentials {
        admin_key: Some(t),
        ..Credentials::default()
    };
    let secret = |t| Credentials {
        pull_secret: Some(t),
        ..Credentials::default()
    };
    let remote = ip("10.1.2.3");
    let lo = ip("127.0.0.1");
    let lo_mapped = ip("::ffff:127.0.0.1");
    let router = ip("10.9.9.9");
    // (policy, class, credentials, peer, expected status; 0 = admitted)
    let table: Vec<(&Access, Class, Credentials, Option<IpAddr>, u16)> = vec![
        (&keyed, Class::Open, none, remote, 0),
        (&keyed, Class::Metrics, none, remote, 0),
        (&keyed, Class::Inference, none, remote, 401),
        (&keyed, Class::Inference, none, lo, 401),
        (&keyed, Class::Inference, bearer("k3"), remote, 401),
        (&keyed, Class::Inference, bearer("k"), remote, 401),
        (&keyed, Class::Inference, bearer("k2"), remote, 0),
        (&keyed, Class::Inference, x_api("k1"), remote, 0),
        (&keyed, Class::Inference, bearer("adm"), remote, 0),
        (&keyed, Class::Inference, none, router, 401),
        (&keyed, Class::Admin, bearer("k1"), lo, 401),
        (&keyed, Class::Admin, none, lo, 401),
        (&keyed, Class::Admin, x_admin("adm"), remote, 0),
        (&keyed, Class::Admin, bearer("adm"), remote, 0),
        (&keyed, Class::Router, none, remote, 403),
        (&keyed, Class::Router, none, lo, 403),
        (&keyed, Class::Router, none, router, 0),
        (&keyed, Class::Router, secret("pull-s3cret"), remote, 0),
        (&keyed, Class::Router, secret("wrong"), remote, 403),
        (&keyed, Class::Router, bearer("adm"), remote, 0),
        (&open, Class::Inference, none, remote, 0),
        (&open, Class::Inference, none, None, 0),
        (&open, Class::Admin, none, remote, 403),
        (&open, Class::Admin, none, None, 403),
        (&open, Class::Admin, none, lo, 0),
        (&open, Class::Admin, none, lo_mapped, 0),
        (&open, Class::Admin, none, ip("::1"), 0),
        (&open, Class::Admin, bearer("anything"), remote, 403),
        (&open, Class::Admin, none, ip("127.0.0.2"), 403),
        (&open, Class::Router, none, lo, 0),
        (&open, Class::Router, none, remote, 403),
    ];
    for (i, (policy, class, creds, peer, want)) in table.into_iter().enumerate() {
        let got = match policy.decide(class, creds, peer) {
            Ok(()) => 0,
            Err(e) => actix_web::ResponseError::status_code(&e).as_u16(),
        };
        assert_eq!(got, want, "row {i}: {class:?} {creds:?} from {peer:?}");
    }
}

#[test]
fn metrics_need_a_key_only_when_asked() {
    let args = AccessArgs {
        api_keys: vec!["k1".into()],
        metrics_need_key: true,
        ..AccessArgs::default()
    };
    let policy = Access::new(&args, None, None).unwrap();
    let peer = ip("10.1.2.3");
    assert!(policy
        .decide(Class::Metrics, Credentials::default(), peer)
        .is_err());
    let creds = Credentials {
        bearer: Some("k1"),
        ..Credentials::default()
    };
    assert!(policy.decide(Class::Metrics, creds, peer).is_ok());
}

#[test]
fn the_router_may_infer_without_a_key_only_when_trusted() {
    let args = AccessArgs {
        api_keys: vec!["k1".into()],
        trust_router: true,
        ..AccessArgs::default()
    };
    let policy = Access::new(&args, None, Some("http://10.9.9.9:8080")).unwrap();
    let none = Credentials::default();
    assert!(policy
        .decide(Class::Inference, none, ip("10.9.9.9"))
        .is_ok());
    assert!(policy
        .decide(Class::Inference, none, ip("10.9.9.8"))
        .is_err());
}

#[test]
fn api_keys_come_from_a_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# team a\nfile-key-1\n\n  file-key-2  \n").unwrap();
    let args = AccessArgs {
        api_keys: vec!["flag-key".into()],
        api_key_file: Some(file.clone()),
        ..AccessArgs::default()
    };
    let policy = Access::new(&args, None, None).unwrap();
    for key in ["flag-key", "file-key-1", "file-key-2"] {
        let creds = Credentials {
            bearer: Some(key),
            ..Credentials::default()
        };
        assert!(
            policy.decide(Class::Inference, creds, None).is_ok(),
            "{key}"
        );
    }
    std::fs::write(&file, "# nothing\n").unwrap();
    assert!(matches!(
        Access::new(&args, None, None),
        Err(AccessError::EmptyKeyFile(_))
    ));
    let missing = AccessArgs {
        api_key_file: Some(dir.path().join("nope")),
        ..AccessArgs::default()
    };
    assert!(matches!(
        Access::new(&missing, None, None),
        Err(AccessError::KeyFile { .. })
    ));
}

#[test]
fn paths_are_classified_by_prefix_and_unknown_ones_are_inference() {
    let table = [
        ("/health", Class::Open),
        ("/health/ready", Class::Open),
        ("/startup", Class::Open),
        ("/metrics", Class::Metrics),
        ("/pull", Class::Router),
        ("/api/logs", Class::Router),
        ("/admin/models", Class::Admin),
        ("/admin/log-level", Class::Admin),
        ("/admin", Class::Admin),
        ("/api/pull", Class::Admin),
        ("/api/delete", Class::Admin),
        ("/api/copy", Class::Admin),
        ("/api/blobs/sha256:abc", Class::Admin),
        ("/api/chat", Class::Inference),
        ("/api/show", Class::Inference),
        ("/api/tags", Class::Inference),
        ("/v1/chat/completions", Class::Inference),
        ("/v1/models", Class::Inference),
        ("/administrator", Class::Inference),
        ("/healthz", Class::Inference),
        ("/something/new", Class::Inference),
    ];
    for (path, class) in table {
        assert_eq!(classify(path), class, "{path}");
    }
}

/// Every path registered in `routes.rs` (`{…}` segments filled with `m`), read
/// from its source so a route added there is checked without editing this test.
fn route_table() -> Vec<String> {
    let source = include_str!("../routes.rs");
    let start = source
        .find("pub fn configure")
        .expect("configure in routes.rs");
    let end = source[start..]
        .find("#[cfg(test)]")
        .map_or(source.len(), |e| start + e);
    let mut paths: Vec<String> = source[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/'))
        .map(|p| {
            p.split('/')
                .map(|seg| if seg.starts_with('{') { "m" } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

async fn app(
    policy: Option<Access>,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let (models, fakes) = fake_models(&["m"]);
    // The fakes must outlive the app; tests are short.
    std::mem::forget(fakes);
    let mut app = App::new().app_data(AppState::new(models).into_data());
    if let Some(policy) = policy {
        app = app.app_data(web::Data::new(policy));
    }
    web_test::init_service(
        app.wrap(actix_web::middleware::from_fn(middleware))
            .wrap(actix_web::middleware::from_fn(
                super::super::shape::middleware,
            ))
            .configure(configure),
    )
    .await
}

async fn call(
    app: &impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    req: web_test::TestRequest,
    peer: &str,
) -> (StatusCode, Value) {
    let peer: SocketAddr = peer.parse().unwrap();
    let resp = web_test::call_service(app, req.peer_addr(peer).to_request()).await;
    let status = resp.status();
    let body = web_test::read_body(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn with_bearer(req: web_test::TestRequest, key: Option<&str>) -> web_test::TestRequest {
    match key {
        Some(k) => req.insert_header(("authorization", format!("Bearer {k}"))),
        None => req,
    }
}

#[actix_rt::test]
async fn every_inference_route_needs_a_valid_api_key() {
    let routes = route_table();
    assert!(
        routes.len() >= 15,
        "the route table was not read: {routes:?}"
    );
    let app = app(Some(access(&["good-key"], Some("adm"), None))).await;
    let mut inference = 0;
    for path in &routes {
        let class = classify(path);
        for method in ["GET", "POST"] {
            let req = || {
                web_test::TestRequest::default()
                    .method(method.parse().unwrap())
                    .uri(path)
            };
            let (none, body) = call(&app, req(), REMOTE).await;
            let (wrong, _) = call(&app, with_bearer(req(), Some("bad-key")), REMOTE).await;
            let (right, _) = call(&app, with_bearer(req(), Some("good-key")), REMOTE).await;
            match class {
                Class::Inference => {
                    assert_eq!(none, 401, "{method} {path} without a key");
                    assert_eq!(wrong, 401, "{method} {path} with a wrong key");
                    assert_ne!(right, 401, "{method} {path} with the key");
                    assert_ne!(right, 403, "{method} {path} with the key");
                    // The error in the route's API shape.
                    if super::super::shape::is_ollama(path) {
                        assert!(body["error"].is_string(), "{path}: {body}");
                    } else {
                        assert_eq!(body["error"]["code"], "invalid_api_key", "{path}: {body}");
                        assert_eq!(body["error"]["type"], "authentication_error");
                    }
                    inference += 1;
                }
                Class::Open | Class::Metrics => {
                    assert!(none != 401 && none != 403, "{method} {path}: {none}");
                }
                Class::Admin => {
                    assert_eq!(none, 401, "{method} {path}");
                    assert_eq!(right, 401, "an API key is no admin key: {method} {path}");
                }
                Class::Router => assert_eq!(none, 403, "{method} {path}"),
            }
        }
    }
    assert!(inference >= 10, "{inference} inference checks");
}

#[actix_rt::test]
async fn admin_routes_without_an_admin_key_answer_loopback_only() {
    let routes = route_table();
    let app = app(Some(access(&[], None, None))).await;
    let admin: Vec<&String> = routes
        .iter()
        .filter(|p| classify(p) == Class::Admin)
        .collect();
    assert!(admin.len() >= 8, "{admin:?}");
    for path in admin {
        let req = web_test::TestRequest::post().uri(path);
        let (status, body) = call(&app, req, REMOTE).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, body) = call(
        &app,
        web_test::TestRequest::get().uri("/admin/models"),
        LOOPBACK,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Ollama's shape on /api/*.
    let (status, body) = call(&app, web_test::TestRequest::post().uri("/api/pull"), REMOTE).await;
    assert_eq!(status, 403);
    assert!(body["error"].is_string(), "{body}");
}

#[actix_rt::test]
async fn an_app_without_the_policy_fails_closed() {
    let app = app(None).await;
    let (status, _) = call(
        &app,
        web_test::TestRequest::get().uri("/admin/models"),
        LOOPBACK,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&app, web_test::TestRequest::get().uri("/health"), REMOTE).await;
    assert_eq!(status, 200);
    // A handler reached without the middleware refuses too.
    let (models, _fakes) = fake_models(&["m"]);
    let bare = web_test::init_service(
        App::new()
            .app_data(AppState::new(models).into_data())
            .configure(configure),
    )
    .await;
    let (status, _) = call(
        &bare,
        web_test::TestRequest::get().uri("/admin/models"),
        LOOPBACK,
    )
    .await;
    assert_eq!(status, 401);
}
