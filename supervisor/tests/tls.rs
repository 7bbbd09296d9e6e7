//! HTTPS on a whole node with a fake worker: `--tls-cert`/`--tls-key` serve
//! the API over TLS, plain HTTP is not answered, and a renewed certificate is
//! served to new connections without a restart.

mod common;
use common::fake_worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use llm_node::{Args, Node};

/// A self-signed certificate for `localhost`, written as `name.crt`/`name.key`;
/// the certificate's PEM.
fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c, k, cert.cert.pem())
}

/// A client that trusts only `pem` (no system roots).
fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    match client.get(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[actix_rt::test]
async fn a_node_serves_https_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = pair(dir.path(), "live");
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, "").unwrap();
    let args = Args::try_parse_from([
        "llm-node".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        "--loopback-only".into(),
        format!("--worker-bin={}", fake_worker().display()),
        "--shutdown-timeout-secs=5".into(),
        "--no-ollama-models".into(),
        format!("--store-dir={}", dir.path().join("store").display()),
        format!("--model=m={}", model.display()),
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
    ])
    .unwrap();
    let node = Node::start(args).await.unwrap();
    let port = node.addr().port();
    let https = format!("https://localhost:{port}/health");

    assert_eq!(status(&trusting(&first), &https).await, Ok(200));
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let http = format!("http://127.0.0.1:{port}/health");
    assert!(status(&plain, &http).await.is_err());

    // Renewal: both files replaced (as certbot's deploy does), then new
    // connections get the new certificate once the check interval passed.
    let (c2, k2, second) = pair(dir.path(), "next");
    std::fs::rename(&k2, &key).unwrap();
    std::fs::rename(&c2, &cert).unwrap();
    tokio::time::sleep(llm_node::tls::CHECK_EVERY + Duration::from_millis(200)).await;
    let mut served = Err(String::new());
    for _ in 0..20 {
        served = status(&trusting(&second), &https).await;
        if served == Ok(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, Ok(200), "the renewed certificate is served");
    assert!(
        status(&trusting(&first), &https).await.is_err(),
        "the old certificate is no longer served"
    );
    node.stop().await;
}

#[test]
fn a_certificate_without_a_key_is_refused_by_the_command_line() {
    let err = Args::try_parse_from(["llm-node", "--tls-cert=/x.crt"]).unwrap_err();
    assert!(err.to_string().contains("--tls-key"), "{err}");
}
