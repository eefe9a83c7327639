//! Server URLs (`tcp://`, `tls://`, `ws://`, `wss://`) and connecting to them.

use std::time::Duration;

use nano::{Client, ClientError, Serializer};

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `tcp://host:port`, or `tls://host:port` when `tls` is set.
    Tcp {
        /// `host:port`.
        addr: String,
        /// The host, for TLS server-name checks.
        host: String,
        /// `tls://`.
        tls: bool,
    },
    /// `ws://host:port/path` or `wss://…` (the whole URL).
    Ws {
        /// The URL as given.
        url: String,
        /// The host, for TLS server-name checks.
        host: String,
        /// `wss://`.
        tls: bool,
    },
}

impl Target {
    /// Parses a server URL.
    ///
    /// # Errors
    ///
    /// An unknown scheme or a missing `host:port`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("bad URL {url:?}: expected tcp://, tls://, ws:// or wss://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = host_of(authority)
            .ok_or_else(|| format!("bad URL {url:?}: expected host:port"))?
            .to_owned();
        match scheme {
            "tcp" | "tls" => {
                if rest.len() != authority.len() {
                    return Err(format!("bad URL {url:?}: {scheme}:// takes no path"));
                }
                Ok(Target::Tcp {
                    addr: authority.to_owned(),
                    host,
                    tls: scheme == "tls",
                })
            }
            "ws" | "wss" => Ok(Target::Ws {
                url: url.to_owned(),
                host,
                tls: scheme == "wss",
            }),
            other => Err(format!(
                "bad URL {url:?}: unknown scheme {other:?} (tcp, tls, ws or wss)"
            )),
        }
    }

    /// Whether the connection uses TLS.
    pub fn tls(&self) -> bool {
        match self {
            Target::Tcp { tls, .. } | Target::Ws { tls, .. } => *tls,
        }
    }

    fn host(&self) -> &str {
        match self {
            Target::Tcp { host, .. } | Target::Ws { host, .. } => host,
        }
    }
}

/// The host of `host:port` or `[v6]:port`; `None` without a port.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        authority.rsplit_once(':')?
    };
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(host)
}

/// Connection options shared by every command.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Request (and connect) timeout.
    pub timeout: Duration,
    /// DER of the certificate to trust for `tls://` / `wss://`.
    pub ca_der: Option<Vec<u8>>,
    /// Accept any server certificate (`--insecure`).
    pub insecure: bool,
    /// The TLS server name (default: the URL's host).
    pub server_name: Option<String>,
    /// The handshake's `user` object.
    pub user: serde_json::Value,
}

/// Reads the first certificate of a PEM file, as DER.
///
/// # Errors
///
/// Unreadable file, or no certificate in it.
pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = pem.as_slice();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(cert)) => Ok(cert.to_vec()),
        Some(Err(e)) => Err(format!("bad certificate in {}: {e}", path.display())),
        None => Err(format!("no certificate in {}", path.display())),
    }
}

/// Connects to `target` and performs the nano handshake.
///
/// # Errors
///
/// What [`nano::ClientBuilder`] returns; a TLS URL without a CA is a [`ClientError::Tls`].
pub async fn connect<S: Serializer>(
    target: &Target,
    opts: &ConnectOptions,
) -> Result<Client<S>, ClientError> {
    let mut builder = Client::<S>::builder()
        .request_timeout(opts.timeout)
        .handshake_user(opts.user.clone());
    if target.tls() && opts.insecure {
        builder = builder.tls_insecure();
    } else if target.tls() {
        let der = opts.ca_der.clone().ok_or_else(|| {
            ClientError::Tls(
                "a tls:// or wss:// URL needs --ca FILE (the server's CA, PEM) or --insecure"
                    .into(),
            )
        })?;
        builder = builder.tls_root_cert_der(der);
    }
    if target.tls() {
        builder = builder.server_name(opts.server_name.as_deref().unwrap_or(target.host()));
    }
    match target {
        Target::Tcp { addr, .. } => builder.connect_tcp(addr.as_str()).await,
        Target::Ws { url, .. } => builder.connect_ws(url).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Target::parse("tcp://127.0.0.1:3250").unwrap(),
            Target::Tcp {
                addr: "127.0.0.1:3250".into(),
                host: "127.0.0.1".into(),
                tls: false
            }
        );
        assert!(Target::parse("tls://example.com:443").unwrap().tls());
        assert_eq!(
            Target::parse("ws://[::1]:80/nano").unwrap(),
            Target::Ws {
                url: "ws://[::1]:80/nano".into(),
                host: "::1".into(),
                tls: false
            }
        );
        assert!(Target::parse("wss://h:1/x").unwrap().tls());
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "127.0.0.1:3250",
            "http://h:1",
            "tcp://h",
            "tcp://h:99999",
            "tcp://h:1/path",
            "ws://:1/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
