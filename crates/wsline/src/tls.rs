//! TLS for `wss://` with rustls (feature `rustls`, with the `ring` crypto provider).
//!
//! The sync and tokio clients open `wss://` URIs themselves: with
//! [`ConnectConfig::tls`](crate::ConnectConfig::tls) left at `None` they trust the Mozilla
//! root certificates (`webpki-roots`); set it to your own [`rustls::ClientConfig`] for a
//! private CA ([`client_config_trusting_pem`]), client certificates or other protocol
//! versions.
//!
//! ```no_run
//! # fn main() -> wsline::Result<()> {
//! let ws = wsline::sync::client::connect("wss://example.com/chat")?;
//! ws.send_text("Hello!")?;
//! # Ok(())
//! # }
//! ```
//!
//! Servers serve `wss://` when [`ServerConfig::tls`](crate::ServerConfig::tls) holds a
//! [`rustls::ServerConfig`]: the sync event-loop server, the thread-per-connection server
//! and the tokio server alike. [`server_config_from_pem`] builds one from the PEM files
//! most certificate tools write.
//!
//! ```no_run
//! # fn main() -> wsline::Result<()> {
//! use std::path::Path;
//! use wsline::ServerConfig;
//!
//! let config = ServerConfig {
//!     tls: Some(wsline::tls::server_config_from_pem(
//!         Path::new("cert.pem"),
//!         Path::new("key.pem"),
//!     )?),
//!     ..ServerConfig::default()
//! };
//! # let _ = config;
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;
#[cfg(any(feature = "sync", feature = "tokio"))]
use {
    crate::{ConnectConfig, WsUri},
    rustls::pki_types::ServerName,
    std::io,
};

/// The client configuration used when [`ConnectConfig::tls`](crate::ConnectConfig::tls) is
/// `None`: the Mozilla root certificates, rustls' default protocol versions and cipher
/// suites.
#[must_use]
pub fn default_client_config() -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| client_config(mozilla_roots())))
}

/// A client configuration that trusts the Mozilla roots and also the certificates in a PEM
/// file (a private CA, a self-signed server certificate).
///
/// # Errors
/// [`Error::Tls`] when the file cannot be read or holds no valid certificate.
pub fn client_config_trusting_pem(ca_file: &Path) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = mozilla_roots();
    for cert in read_certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|error| Error::Tls(format!("{}: {error}", ca_file.display())))?;
    }
    Ok(client_config(roots))
}

/// A server configuration from a PEM certificate chain (the server's certificate first)
/// and a PEM private key (PKCS#8, PKCS#1 or SEC1), with rustls' default protocol versions
/// and cipher suites.
///
/// # Errors
/// [`Error::Tls`] when a file cannot be read, holds nothing usable, or the key does not
/// match the certificate.
pub fn server_config_from_pem(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| Error::Tls(format!("{}: {error}", key_file.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| Error::Tls(format!("{}: {error}", cert_file.display())))?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn mozilla_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let failed = |error: &dyn std::fmt::Display| Error::Tls(format!("{}: {error}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|error| failed(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(&error))?;
    if certs.is_empty() {
        return Err(failed(&"no certificate in the file"));
    }
    Ok(certs)
}

/// The TLS client session for `uri`: the configured or default client configuration and
/// the URI's host as the server name (SNI and certificate check).
#[cfg(any(feature = "sync", feature = "tokio"))]
pub(crate) fn client_session(
    uri: &WsUri,
    config: &ConnectConfig,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), Error> {
    let name = ServerName::try_from(uri.host().to_owned())
        .map_err(|error| Error::Tls(format!("{}: not a TLS server name: {error}", uri.host())))?;
    let tls = config.tls.clone().unwrap_or_else(default_client_config);
    Ok((tls, name))
}

/// A transport error during a TLS session: rustls reports certificate and protocol failures
/// as I/O errors that carry a [`rustls::Error`]; those become [`Error::Tls`].
#[cfg(any(feature = "sync", feature = "tokio"))]
pub(crate) fn io_error(error: io::Error) -> Error {
    let is_tls = error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if is_tls {
        Error::Tls(error.to_string())
    } else {
        Error::Io(error)
    }
}
