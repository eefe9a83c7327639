//! The outbound side of a session, as seen by nano-core.
//!
//! nano-core never touches sockets: a [`Session`](crate::Session) hands encoded packets to a
//! [`Link`], which a transport (nano-net's per-connection agent, the in-memory test harness, or
//! later a cluster gate) implements.

use std::net::SocketAddr;

use bytes::Bytes;

/// Why a packet could not be queued on a [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing.
    #[error("session closed")]
    Closed,
    /// The peer does not read fast enough and its bounded queue is full. The transport decides
    /// what happens to the connection (by default it is disconnected).
    #[error("send queue full")]
    Full,
}

/// Where a session's outbound packets go.
///
/// Implementations must not block: `send` queues a complete, encoded packet (header included)
/// or fails at once.
pub trait Link: Send + Sync + 'static {
    /// Queues one encoded packet.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] after close, [`SendError::Full`] when the bounded queue is full.
    fn send(&self, packet: Bytes) -> Result<(), SendError>;

    /// Sends a Kick packet (with `reason` as pomelo's JSON body when given), flushes what is
    /// queued, then closes.
    fn kick(&self, reason: Option<&str>);

    /// Flushes what is queued, then closes the connection.
    fn close(&self);

    /// The peer's address, when the transport has one.
    fn remote_addr(&self) -> Option<SocketAddr>;

    /// For links that reach many sessions through one peer (a cluster backend's links to a
    /// gate): the peer's identity. A group broadcast sends one packet per distinct key, with
    /// [`Link::send_many`], instead of one per member. `None` (the default): one send per
    /// session.
    fn fanout_key(&self) -> Option<usize> {
        None
    }

    /// Queues one encoded packet for several sessions that share this link's
    /// [`fanout_key`](Link::fanout_key) (their ids in `sessions`); only called when that key
    /// is `Some`.
    ///
    /// # Errors
    ///
    /// As [`Link::send`].
    fn send_many(&self, packet: Bytes, sessions: Vec<u64>) -> Result<(), SendError> {
        let _ = sessions;
        self.send(packet)
    }

    /// A uid was bound to the session ([`Session::bind`](crate::Session::bind)). A cluster
    /// backend's link tells the session's gate; transports ignore it (the default).
    fn bound(&self, uid: &str) {
        let _ = uid;
    }
}
