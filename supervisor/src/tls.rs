//! HTTPS: the node serves TLS when given a certificate and key (PEM), and
//! picks up a renewed certificate without a restart.
//!
//! [`server_config`] builds the rustls configuration (ring provider, TLS 1.2
//! and 1.3, no client certificates) around a [`Reloading`] resolver. The
//! resolver hands out the current certificate; at most once per
//! [`CHECK_EVERY`], on a handshake, it compares the two files' inode, size and
//! modification time with those it loaded, and re-reads them when either
//! changed. A pair
//! that does not load (a half-written renewal, a key that does not match) is
//! logged and the previous certificate kept, so a botched renewal never takes
//! HTTPS down; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often, at most, a handshake looks at the files for a renewal.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path:?}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("the certificate file {0:?} holds no certificate")]
    NoCert(PathBuf),
    #[error("cannot read the private key {path:?}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Reads `cert` (a PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or
/// SEC1) into a key rustls can serve.
///
/// # Errors
/// [`TlsError`] when a file cannot be read or parsed, or the key type is not
/// supported.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |e: rustls::pki_types::pem::Error| TlsError::Cert {
        path: cert.to_path_buf(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_path_buf()));
    }
    let key_error = |message: String| TlsError::Key {
        path: key.to_path_buf(),
        message,
    };
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_error(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    // A key that does not belong to the certificate fails every handshake.
    certified
        .keys_match()
        .map_err(|e| key_error(format!("it does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// What identifies one version of a file: its inode (a renewal usually
/// renames a new file into place), size and modification time (timestamps
/// alone are too coarse: two writes in one tick look alike).
type FileStamp = Option<(u64, u64, u64, Option<SystemTime>)>;

/// Both files' stamps, as last seen.
type Stamp = (FileStamp, FileStamp);

fn stamp(cert: &Path, key: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.modified().ok()))
    };
    (of(cert), of(key))
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// The certificate resolver that re-reads renewed files (module docs).
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    /// Read on every handshake, written at most once per [`CHECK_EVERY`]
    /// (by the handshake that finds the check due); a poisoned lock still
    /// holds a whole `Current`, so it is used as is.
    current: RwLock<Current>,
}

impl Reloading {
    /// Loads the pair once.
    ///
    /// # Errors
    /// [`TlsError`] when the pair cannot be served.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let loaded = load(cert, key)?;
        Ok(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Current {
                key: loaded,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to serve now, re-read first when the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        {
            let now = self.current.read().unwrap_or_else(|e| e.into_inner());
            if now.checked.elapsed() < CHECK_EVERY {
                return now.key.clone();
            }
        }
        let mut now = self.current.write().unwrap_or_else(|e| e.into_inner());
        if now.checked.elapsed() >= CHECK_EVERY {
            now.checked = Instant::now();
            let seen = stamp(&self.cert, &self.key);
            if seen != now.stamp {
                now.stamp = seen;
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        now.key = key;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate changed but cannot be loaded; serving the previous one"
                    ),
                }
            }
        }
        now.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server configuration for `cert` and `key`.
///
/// # Errors
/// [`TlsError`] when the pair cannot be served.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let resolver = Reloading::new(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, host: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn bad_pairs_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = pair(dir.path(), "a", "localhost");
        let (_, k2) = pair(dir.path(), "b", "localhost");
        assert!(load(&c1, &k1).is_ok());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for (cert, key, needle) in [
            (&empty, &k1, "holds no certificate"),
            (&c1, &empty, "private key"),
            (&c1, &k2, "does not match"),
            (&dir.path().join("missing"), &k1, "missing"),
        ] {
            let e = load(cert, key).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = pair(dir.path(), "live", "localhost");
        let reloading = Reloading::new(&c, &k).unwrap();
        let first = reloading.current().cert[0].clone();
        // Renewed: both files replaced; seen after the check interval.
        let (c2, k2) = pair(dir.path(), "next", "localhost");
        std::fs::rename(&c2, &c).unwrap();
        std::fs::rename(&k2, &k).unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        let second = reloading.current().cert[0].clone();
        assert_ne!(first, second, "the renewed certificate is served");
        // A half-written renewal keeps the previous certificate.
        std::fs::write(&c, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert_eq!(reloading.current().cert[0], second);
    }
}
