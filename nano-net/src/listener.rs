//! [`Listener`]: one listening address, its transport and its options, for [`App::listen`].
//!
//! [`App::listen`]: crate::App::listen

use crate::server::Transport;
use crate::tls::TlsConfig;

/// A listener for [`App::listen`](crate::App::listen): an address, a transport (raw TCP or
/// WebSocket, each with or without TLS), and options such as the PROXY protocol.
///
/// [`App::tcp`](crate::App::tcp), [`App::websocket`](crate::App::websocket) and their `_tls`
/// forms are shorthands for the plain cases.
///
/// # Examples
///
/// ```no_run
/// use nano_net::Listener;
/// # fn demo(tls: nano_net::TlsConfig) {
/// let app = nano_net::app()
///     // Behind HAProxy / an AWS NLB sending the PROXY protocol:
///     .listen(Listener::tcp("0.0.0.0:3250").proxy_protocol())
///     .listen(Listener::websocket("0.0.0.0:3251", "/nano").tls(tls).proxy_protocol())
///     // Direct, for the LAN:
///     .tcp("10.0.0.5:3252");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Listener {
    pub(crate) addr: String,
    pub(crate) ws_path: Option<String>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) proxy_protocol: bool,
}

impl Listener {
    /// Raw TCP clients on `addr`.
    pub fn tcp(addr: impl Into<String>) -> Self {
        Listener {
            addr: addr.into(),
            ws_path: None,
            tls: None,
            proxy_protocol: false,
        }
    }

    /// WebSocket clients on `addr`, upgraded on `path`; other paths get plain HTTP (see
    /// [`App::http_handler`](crate::App::http_handler)).
    pub fn websocket(addr: impl Into<String>, path: impl Into<String>) -> Self {
        Listener {
            ws_path: Some(path.into()),
            ..Listener::tcp(addr)
        }
    }

    /// Serves over TLS (`wss://` for WebSocket).
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Expects a PROXY protocol header (HAProxy's v1 text or v2 binary, detected per
    /// connection) before anything else on every connection, as a load balancer in front
    /// sends it; the session's [`remote_addr`](nano_core::Session::remote_addr) and the
    /// per-IP limits then use the client address it names. The header comes before the TLS
    /// handshake and before the HTTP request.
    ///
    /// A connection without a valid header (or not complete within the handshake timeout) is
    /// closed. v1 `UNKNOWN` and v2 `LOCAL` (a balancer's health check) keep the real peer's
    /// address (and count against it under the per-IP limits). Only turn this on for a port that nothing but the balancer can reach: the
    /// header is not authenticated.
    #[must_use]
    pub fn proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    /// The transport this listener serves.
    pub fn transport(&self) -> Transport {
        match (&self.ws_path, &self.tls) {
            (None, None) => Transport::Tcp,
            (None, Some(_)) => Transport::TcpTls,
            (Some(_), None) => Transport::WebSocket,
            (Some(_), Some(_)) => Transport::WebSocketTls,
        }
    }
}
