//! [`ClientBuilder`]: options, connecting (TCP, TLS, WebSocket) and the nano handshake.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nano_core::protocol::{PacketCodec, MAX_BODY_LEN};
use nano_core::{Json, Serializer};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

use super::conn::{self, BoxIo, Inner, ReadHalf, WriteHalf};
use super::insecure::AcceptAnyCert;
use super::resume::{Connected, Redial, Resumable};
use super::{ws, Client, ClientError};

/// Default [`request_timeout`](ClientBuilder::request_timeout).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`server_name`](ClientBuilder::server_name).
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// `sys.version` of our handshake.
const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options of a [`Client`], then [`connect_tcp`](Self::connect_tcp) or
/// [`connect_ws`](Self::connect_ws).
///
/// `S` is the application's serializer ([`Json`] by default): it encodes request and notify
/// payloads and decodes responses and error responses.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use nano_net::client::Client;
///
/// # async fn run() -> Result<(), nano_net::client::ClientError> {
/// let client: Client = Client::builder()
///     .request_timeout(Duration::from_secs(3))
///     .handshake_user(serde_json::json!({"token": "abc"}))
///     .connect_tcp("127.0.0.1:3250")
///     .await?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder<S = Json> {
    request_timeout: Duration,
    heartbeat: bool,
    user: serde_json::Value,
    max_packet_size: usize,
    root_cert_der: Option<Vec<u8>>,
    insecure: bool,
    server_name: String,
    reconnect: bool,
    _serializer: PhantomData<fn() -> S>,
}

/// Where a client connects, kept to connect again.
#[derive(Clone, Debug)]
enum Target {
    Tcp(Vec<std::net::SocketAddr>),
    Ws(String),
}

impl<S> Clone for ClientBuilder<S> {
    fn clone(&self) -> Self {
        ClientBuilder {
            request_timeout: self.request_timeout,
            heartbeat: self.heartbeat,
            user: self.user.clone(),
            max_packet_size: self.max_packet_size,
            root_cert_der: self.root_cert_der.clone(),
            insecure: self.insecure,
            server_name: self.server_name.clone(),
            reconnect: self.reconnect,
            _serializer: PhantomData,
        }
    }
}

impl<S> fmt::Debug for ClientBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("request_timeout", &self.request_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("user", &self.user)
            .field("max_packet_size", &self.max_packet_size)
            .field("tls", &(self.root_cert_der.is_some() || self.insecure))
            .field("insecure", &self.insecure)
            .field("server_name", &self.server_name)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl<S: Serializer> Default for ClientBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Serializer> ClientBuilder<S> {
    /// A builder with the defaults: 10 s request timeout, heartbeats on, `user` = `{}`,
    /// packet limit [`MAX_BODY_LEN`], no TLS, server name `localhost`.
    #[must_use]
    pub fn new() -> Self {
        ClientBuilder {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            heartbeat: true,
            user: serde_json::Value::Object(serde_json::Map::new()),
            max_packet_size: MAX_BODY_LEN,
            root_cert_der: None,
            insecure: false,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            reconnect: true,
            _serializer: PhantomData,
        }
    }

    /// Whether a lost connection is dialled again to resume the session, when the server
    /// resumes sessions (default on; see [`Client::connection_events`]). A Kick never is.
    #[must_use]
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// How long a request waits for its response before failing with
    /// [`ClientError::Timeout`] (default 10 s). Also bounds connecting and the handshake.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether to send heartbeats at the interval the server announced (default `true`).
    ///
    /// With heartbeats on, the client also closes the connection when the server has been
    /// silent for twice the interval. Turning them off lets a test provoke the server's
    /// heartbeat timeout.
    #[must_use]
    pub fn heartbeat(mut self, on: bool) -> Self {
        self.heartbeat = on;
        self
    }

    /// The `user` field of the handshake (application data a server-side validator may
    /// inspect). Default `{}`.
    #[must_use]
    pub fn handshake_user(mut self, user: serde_json::Value) -> Self {
        self.user = user;
        self
    }

    /// Largest packet body accepted from the server, and sent by
    /// [`request`](Client::request)/[`notify`](Client::notify) (default and maximum
    /// [`MAX_BODY_LEN`], 16 MiB − 1). A larger packet from the server ends the connection.
    #[must_use]
    pub fn max_packet_size(mut self, n: usize) -> Self {
        self.max_packet_size = n.min(MAX_BODY_LEN);
        self
    }

    /// Trusts this DER-encoded certificate (for example a self-signed one) and enables TLS:
    /// [`connect_tcp`](Self::connect_tcp) then speaks TLS, and `wss://` URLs use it.
    #[must_use]
    pub fn tls_root_cert_der(mut self, der: Vec<u8>) -> Self {
        self.root_cert_der = Some(der);
        self
    }

    /// Enables TLS and accepts any server certificate (no chain or name check; handshake
    /// signatures are still verified). For development servers with throwaway certificates:
    /// anyone on the path can impersonate the server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nano_net::client::ClientError> {
    /// let client: nano_net::client::Client = nano_net::client::Client::builder()
    ///     .tls_insecure()
    ///     .connect_tcp("127.0.0.1:3250")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn tls_insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Whether TLS is on (a trusted certificate or [`tls_insecure`](Self::tls_insecure)).
    fn tls(&self) -> bool {
        self.root_cert_der.is_some() || self.insecure
    }

    /// The name sent as TLS SNI and checked against the server's certificate (default
    /// `localhost`).
    #[must_use]
    pub fn server_name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.server_name);
        self
    }

    /// Connects over TCP (TLS when a root certificate was given), performs the nano
    /// handshake and starts the connection.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] (connect), [`ClientError::Tls`], [`ClientError::Handshake`]
    /// (refused), [`ClientError::Protocol`] (bad answer), [`ClientError::Closed`] (the server
    /// hung up), [`ClientError::Timeout`] (no answer within the request timeout).
    pub async fn connect_tcp(self, addr: impl ToSocketAddrs) -> Result<Client<S>, ClientError> {
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, self.connect_tcp_inner(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Connects to a `ws://host:port/path` or `wss://…` URL (`wss` needs
    /// [`tls_root_cert_der`](Self::tls_root_cert_der)), performs the nano handshake and
    /// starts the connection.
    ///
    /// # Errors
    ///
    /// As [`connect_tcp`](Self::connect_tcp), plus [`ClientError::WebSocket`] for a bad URL
    /// or a failed HTTP upgrade.
    pub async fn connect_ws(self, url: &str) -> Result<Client<S>, ClientError> {
        let timeout = self.request_timeout;
        tokio::time::timeout(timeout, self.connect_ws_inner(url))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn connect_tcp_inner(self, addr: impl ToSocketAddrs) -> Result<Client<S>, ClientError> {
        let addrs: Vec<_> = tokio::net::lookup_host(addr).await?.collect();
        self.start(Target::Tcp(addrs)).await
    }

    async fn connect_ws_inner(self, url: &str) -> Result<Client<S>, ClientError> {
        self.start(Target::Ws(url.to_owned())).await
    }

    /// Opens a transport to `target`; returns it with the client type our handshake names.
    async fn dial(
        &self,
        target: &Target,
    ) -> Result<(ReadHalf, WriteHalf, &'static str), ClientError> {
        match target {
            Target::Tcp(addrs) => {
                let (r, w) = self.dial_tcp(addrs).await?;
                Ok((r, w, "rust-tcp"))
            }
            Target::Ws(url) => {
                let (r, w) = self.dial_ws(url).await?;
                Ok((r, w, "rust-websocket"))
            }
        }
    }

    async fn dial_tcp(
        &self,
        addrs: &[std::net::SocketAddr],
    ) -> Result<(ReadHalf, WriteHalf), ClientError> {
        let tcp = TcpStream::connect(addrs).await?;
        let _ = tcp.set_nodelay(true);
        Ok(if self.tls() {
            let tls = self.tls_connect(tcp).await?;
            let (r, w) = tokio::io::split(tls);
            (ReadHalf::Io(Box::new(r)), WriteHalf::Io(Box::new(w)))
        } else {
            let (r, w) = tcp.into_split();
            (ReadHalf::Io(Box::new(r)), WriteHalf::Io(Box::new(w)))
        })
    }

    async fn dial_ws(&self, url: &str) -> Result<(ReadHalf, WriteHalf), ClientError> {
        let target = ws::parse_url(url)?;
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let _ = tcp.set_nodelay(true);
        let stream: BoxIo = if target.tls {
            if !self.tls() {
                return Err(ClientError::Tls(
                    "wss:// needs a trusted certificate (ClientBuilder::tls_root_cert_der)".into(),
                ));
            }
            Box::new(self.tls_connect(tcp).await?)
        } else {
            Box::new(tcp)
        };
        ws::upgrade(url, stream).await
    }

    /// TLS client handshake over `tcp`, trusting only the configured certificate (or any,
    /// with [`tls_insecure`](Self::tls_insecure)).
    async fn tls_connect(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        } else {
            let der = self
                .root_cert_der
                .clone()
                .ok_or_else(|| ClientError::Tls("no trusted certificate configured".into()))?;
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from(der))
                .map_err(|e| ClientError::Tls(format!("bad trusted certificate: {e}")))?;
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| {
            ClientError::Tls(format!("bad server name {:?}: {e}", self.server_name))
        })?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))
    }

    /// Dials `target` and performs the nano handshake (with `resume` as `sys.resume` when
    /// reconnecting).
    async fn connect(
        &self,
        target: &Target,
        resume: Option<serde_json::Value>,
    ) -> Result<Connected, ClientError> {
        let (mut r, mut w, client_type) = self.dial(target).await?;
        let mut sys = serde_json::json!({"version": CLIENT_VERSION, "type": client_type});
        if let Some(resume) = resume {
            sys["resume"] = resume;
        }
        let request = serde_json::json!({ "sys": sys, "user": self.user });
        let mut codec = PacketCodec::new(self.max_packet_size);
        let mut buf = BytesMut::with_capacity(4096);
        let info = conn::handshake(&mut r, &mut w, &mut codec, &mut buf, &request).await?;
        Ok(Connected {
            r,
            w,
            codec,
            buf,
            info,
        })
    }

    /// Connects, then starts the background tasks.
    async fn start(self, target: Target) -> Result<Client<S>, ClientError> {
        let c = self.connect(&target, None).await?;
        let heartbeat = c.info.heartbeat.filter(|_| self.heartbeat);
        let (inner, rx) = Inner::new(c.info, self.request_timeout, self.max_packet_size);
        if self.reconnect {
            let hb = self.heartbeat;
            let redial = Arc::new(Redialer {
                builder: self,
                target,
            });
            *conn::lock(&inner.resume) = Resumable::offered(&inner.handshake, redial, hb);
        }
        inner.spawn_tasks(c.r, c.w, rx, c.codec, c.buf, heartbeat);
        Ok(Client::from_inner(inner))
    }
}

/// Dials a client's server again (see [`Redial`]).
struct Redialer<S> {
    builder: ClientBuilder<S>,
    target: Target,
}

impl<S: Serializer> Redial for Redialer<S> {
    fn redial(
        &self,
        resume: serde_json::Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connected, ClientError>> + Send>>
    {
        let builder = self.builder.clone();
        let target = self.target.clone();
        Box::pin(async move { builder.connect(&target, Some(resume)).await })
    }
}
