//! Server settings.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::per_ip::PerIpLimits;

/// What to do with a connection whose bounded send queue is full (the client stopped reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullQueuePolicy {
    /// Disconnect the client with a traced reason (default). Nothing is dropped silently: the
    /// client sees the connection close.
    #[default]
    Disconnect,
    /// Drop the packet that did not fit and trace a warning; the connection stays open. Only for
    /// applications that tolerate lost pushes; a dropped response leaves a request unanswered.
    DropAndWarn,
}

/// The client's handshake, as seen by a handshake validator.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    /// The `sys` object (`type`, `version` of the client SDK).
    pub sys: Value,
    /// The `user` object (application data), `Null` when absent.
    pub user: Value,
    /// The peer's address.
    pub remote: std::net::SocketAddr,
}

/// A refused handshake: the code sent to the client (e.g. 501 "version not supported") before
/// the connection is closed.
#[derive(Debug, Clone)]
pub struct HandshakeRefusal {
    /// The handshake response code (not 200).
    pub code: u16,
    /// Optional reason, traced and sent as `"msg"`.
    pub reason: String,
}

/// Decides whether a handshake is accepted.
pub type HandshakeValidator =
    Arc<dyn Fn(&HandshakeRequest) -> Result<(), HandshakeRefusal> + Send + Sync>;

/// Connection settings of a server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Heartbeat interval; a connection silent for twice this long is kicked. `None`: no
    /// heartbeat (default 30 s). The handshake announces it in whole seconds (the protocol's
    /// unit), so the server rounds a fractional interval up to the next second, with a
    /// warning, and sweeps at the interval it announced.
    pub heartbeat: Option<Duration>,
    /// Time allowed from accept to the HandshakeAck (default 10 s).
    pub handshake_timeout: Duration,
    /// Connections served at once; more are accepted and closed at once (default 100 000).
    pub max_connections: usize,
    /// Packets queued per connection before [`FullQueuePolicy`] applies (default 1024).
    pub send_queue: usize,
    /// Bytes queued per connection before [`FullQueuePolicy`] applies, whatever the packet
    /// count (default 1 MiB). A packet larger than this still goes out when it is alone in the
    /// queue.
    ///
    /// Why 1 MiB: it holds a thousand typical game packets (a few hundred bytes each), so
    /// only a client that stopped reading reaches it, while the worst case of the packet
    /// bound alone (1024 packets of up to 64 KiB: 64 MiB per connection) is cut to what
    /// 10,000 stuck connections can hold in 10 GiB. A client 1 MiB behind is seconds behind on
    /// a mobile link: its state is stale anyway.
    pub send_queue_bytes: usize,
    /// A connection whose writes accept no byte for this long is closed (default 5 s): a
    /// peer that stops reading cannot hold its connection, task and buffers. The clock runs
    /// only while a write is blocked and starts over whenever the socket accepts bytes, so a
    /// slow client that keeps reading is not cut: on Linux the kernel holds at most 64 KiB
    /// unsent per connection (`TCP_NOTSENT_LOWAT`), so a blocked write progresses whenever the
    /// peer has read about 32 KiB; a peer reading slower than that per deadline is cut. Kick,
    /// close, the heartbeat sweeper and shutdown end a stuck connection within this bound.
    /// (On TLS, progress is counted as the TLS layer accepts bytes; its final flush of at
    /// most one buffer of records must complete within the deadline.)
    pub write_timeout: Duration,
    /// Largest packet body accepted before the handshake completes (default 4 KiB): a peer
    /// that has not shaken hands gets no more buffer than this, whatever its packet header
    /// announces. A Handshake over it is refused and the connection closed.
    pub max_handshake_size: usize,
    /// What happens when a send queue is full.
    pub on_full_queue: FullQueuePolicy,
    /// Time allowed for graceful shutdown after the kick (default 5 s).
    pub shutdown_timeout: Duration,
    /// Allowed `Origin` values for WebSocket upgrades from browsers; `None` allows any. An
    /// upgrade without an `Origin` header (not a browser) is always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// Handshake validator.
    pub validator: Option<HandshakeValidator>,
    /// Per-IP connection cap and connection rate at accept (off by default; see
    /// [`PerIpLimits`]).
    pub per_ip: PerIpLimits,
    /// Session resume (off by default; see [`Resume`](crate::Resume)): a session whose
    /// connection drops waits this long for its client, with what is sent to it meanwhile.
    pub resume: Option<crate::Resume>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            send_queue: 1024,
            send_queue_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(5),
            max_handshake_size: 4 * 1024,
            on_full_queue: FullQueuePolicy::Disconnect,
            shutdown_timeout: Duration::from_secs(5),
            allowed_origins: None,
            validator: None,
            per_ip: PerIpLimits::default(),
            resume: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("heartbeat", &self.heartbeat)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field("send_queue", &self.send_queue)
            .field("send_queue_bytes", &self.send_queue_bytes)
            .field("write_timeout", &self.write_timeout)
            .field("max_handshake_size", &self.max_handshake_size)
            .field("on_full_queue", &self.on_full_queue)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("allowed_origins", &self.allowed_origins)
            .field("validator", &self.validator.is_some())
            .field("per_ip", &self.per_ip)
            .field("resume", &self.resume)
            .finish()
    }
}
