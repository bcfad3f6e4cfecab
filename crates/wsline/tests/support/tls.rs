//! A certificate made for a test, and the rustls configurations and PEM files built from it.
//!
//! Also included by `crates/wsline-cli/tests/cli.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wsline::tls::rustls;
use wsline::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `localhost` (only: `127.0.0.1` is not one of its names).
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Identity {
    pub fn new() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate a certificate");
        Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        }
    }

    /// A server configuration presenting this certificate.
    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .expect("a valid certificate and key");
        Arc::new(config)
    }

    /// A client configuration that trusts this certificate.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("add the root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Writes the certificate and key as PEM files (for peers and commands that read
    /// files) into a directory of their own, named after `name`.
    pub fn write_pem(&self, name: &str) -> PemFiles {
        let dir = std::env::temp_dir().join(format!("wsline-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), &self.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &self.key_pem).unwrap();
        PemFiles { dir }
    }
}

/// PEM files of an [`Identity`]; their directory is removed on drop.
pub struct PemFiles {
    dir: PathBuf,
}

impl PemFiles {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for PemFiles {
    fn drop(&mut self) {
        // Only a temporary directory left behind if it fails.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
