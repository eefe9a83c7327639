//! TLS for TCP and WebSocket listeners (rustls).

use std::io;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// A server certificate chain and private key.
///
/// # Examples
///
/// ```no_run
/// let tls = nano_net::TlsConfig::from_pem_files("cert.pem", "key.pem").unwrap();
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// From PEM text: a certificate chain and a private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// `InvalidData` when the PEM holds no certificate or key, or rustls refuses them.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Self> {
        let certs = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<Vec<_>, _>>()?;
        if certs.is_empty() {
            return Err(invalid("no certificate in PEM"));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])?
            .ok_or_else(|| invalid("no private key in PEM"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// From PEM files.
    ///
    /// # Errors
    ///
    /// I/O errors reading the files, or as [`TlsConfig::from_pem`].
    pub fn from_pem_files(
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> io::Result<Self> {
        Self::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}
