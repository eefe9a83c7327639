//! [`ClientError`]: everything that can go wrong for a [`Client`](super::Client) call.

use std::io;

/// Error of a [`Client`](super::Client) operation (connecting, a request, a notify…).
///
/// # Examples
///
/// ```
/// use nano_net::client::ClientError;
///
/// let err = ClientError::Server(nano_core::Error::not_found("no handler for Room.Nope"));
/// assert_eq!(err.to_string(), "server error: NANO-404: no handler for Room.Nope");
/// assert!(err.server_error().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be opened, or failed while connecting.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The TLS configuration or the TLS handshake failed.
    #[error("tls error: {0}")]
    Tls(String),
    /// The WebSocket URL or the WebSocket (HTTP upgrade) handshake failed.
    #[error("websocket error: {0}")]
    WebSocket(String),
    /// The server refused the nano handshake: its answer had a `code` other than 200
    /// (500 failure, 501 client version not supported, …). `body` is the whole answer.
    #[error("handshake refused with code {code}: {body}")]
    Handshake {
        /// The `code` field of the server's handshake answer.
        code: u16,
        /// The server's whole handshake answer.
        body: serde_json::Value,
    },
    /// The server broke the protocol (bad handshake answer, undecodable packet, …).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the request timeout (or the connect timeout while connecting).
    #[error("timed out")]
    Timeout,
    /// The connection is closed (or closed while the request was waiting for its answer).
    #[error("connection closed")]
    Closed,
    /// The server answered the request with an error response (flag `0x20`): its code,
    /// message and metadata.
    #[error("server error: {0}")]
    Server(nano_core::Error),
    /// The request or notify could not be encoded (serializer failure, route longer than
    /// 255 bytes, packet larger than the limit).
    #[error("encode error: {0}")]
    Encode(nano_core::Error),
    /// The answer could not be decoded into the requested type.
    #[error("decode error: {0}")]
    Decode(nano_core::Error),
}

impl ClientError {
    /// The server's error object when this is [`ClientError::Server`].
    #[must_use]
    pub fn server_error(&self) -> Option<&nano_core::Error> {
        match self {
            ClientError::Server(e) => Some(e),
            _ => None,
        }
    }
}
