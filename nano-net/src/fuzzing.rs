//! Hooks for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).
//!
//! Thin wrappers that call the internal parsers with their existing signatures, so the fuzz
//! targets exercise exactly the code the server runs:
//!
//! | wrapper | wraps |
//! |---|---|
//! | [`parse_handshake`] | `agent::parse_handshake` (server: the client's handshake JSON) |
//! | [`HandshakeCtx::handshake_response`] | `ServerCtx::handshake_response` (the server's answer) |
//! | [`client_handshake`] | `HandshakeInfo::parse` (client: the server's handshake answer) |
//! | [`HttpSide::accept`] | `http::accept` (request head parse, upgrade checks, plain HTTP) |
//! | [`FrameReader`] | `ws::frame::FrameReader` (client frames: parse, checks, unmasking) |
//! | [`WsSource`] | `ws::WsSource` (the frame reader behind the agent's `read_into`) |
//!
//! `ws/frame.rs` is private to the `ws` module, so it is compiled a second time here (the
//! same file, through `#[path]`) rather than opened up: the `ws` module is left untouched.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use nano_core::{Engine, Json};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::client::{ClientError, HandshakeInfo};
use crate::config::ServerConfig;
use crate::ctx::ServerCtx;
use crate::http::{self, Accepted};
use crate::transport::PacketSource;
use crate::HttpHandler;

#[path = "ws/frame.rs"]
#[allow(dead_code, unreachable_pub, clippy::duplicate_mod)]
mod frame;

/// The peer address handed to the handshake functions.
const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3250);

/// The server's parse of a client handshake body: `(sys, user)` on success.
pub fn parse_handshake(
    body: &[u8],
) -> Result<(serde_json::Value, serde_json::Value), serde_json::Error> {
    crate::agent::parse_handshake(body, REMOTE).map(|r| (r.sys, r.user))
}

/// A server context, for [`handshake_response`](Self::handshake_response).
pub struct HandshakeCtx(ServerCtx<Json>);

impl HandshakeCtx {
    /// A context for `engine` with `config` (its heartbeat and validator matter here).
    pub fn new(engine: Engine<Json>, config: ServerConfig) -> Self {
        HandshakeCtx(ServerCtx::new(engine, config))
    }

    /// The handshake response (code, body) the server sends for a client handshake body.
    pub fn handshake_response(&self, body: &[u8]) -> (u16, Bytes) {
        self.0.handshake_response(body, REMOTE)
    }
}

/// The Rust client's parse of the server's handshake answer.
pub fn client_handshake(body: &[u8]) -> Result<HandshakeInfo, ClientError> {
    HandshakeInfo::parse(body)
}

/// The settings of a WebSocket listener's HTTP side.
pub struct HttpSide(http::HttpSide);

impl HttpSide {
    /// Upgrades on `ws_path` (checking `Origin` against `allowed_origins` when set), serves
    /// plain HTTP through `handlers`.
    pub fn new(
        ws_path: &str,
        allowed_origins: Option<Vec<String>>,
        handlers: Vec<HttpHandler>,
        max_ws_payload: usize,
    ) -> Self {
        HttpSide(http::HttpSide {
            ws_path: ws_path.to_owned(),
            allowed_origins,
            handlers,
            max_ws_payload,
        })
    }

    /// Runs the HTTP side over `stream`: `Some((stream, leftover))` when it upgraded (the bytes
    /// read past the head), `None` when it answered plain HTTP or refused.
    pub async fn accept<S>(&self, stream: S) -> io::Result<Option<(S, BytesMut)>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Ok(match http::accept(stream, &self.0).await? {
            Accepted::WebSocket(s, leftover) => Some((s, leftover)),
            Accepted::Done => None,
        })
    }
}

/// A protocol violation found by [`FrameReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(frame::FrameError);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A control frame the server must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A ping with its unmasked payload.
    Ping(Vec<u8>),
    /// A close with its code, if it had one.
    Close(Option<u16>),
}

/// The sans-IO WebSocket frame reader of one connection.
pub struct FrameReader(frame::FrameReader);

impl FrameReader {
    /// A reader accepting frames and messages of at most `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        FrameReader(frame::FrameReader::new(max_payload))
    }

    /// Whether the stream may end here.
    pub fn at_boundary(&self) -> bool {
        self.0.at_boundary()
    }

    /// One pass over `raw`: the unmasked payload split off its front, and the ping or close
    /// the pass ended with.
    pub fn parse(&mut self, raw: &mut BytesMut) -> Result<(BytesMut, Option<Answer>), FrameError> {
        let pass = self.0.parse(raw).map_err(FrameError)?;
        let answer = pass.answer.map(|a| match a {
            frame::Answer::Ping { payload, len } => {
                Answer::Ping(payload[..usize::from(len)].to_vec())
            }
            frame::Answer::Close(code) => Answer::Close(code),
        });
        Ok((pass.data, answer))
    }
}

/// The WebSocket packet source of an upgraded stream, as the agent reads it.
pub struct WsSource<T: AsyncRead + AsyncWrite + Send + 'static>(
    crate::ws::WsSource<ReadHalf<T>, WriteHalf<T>>,
);

impl<T: AsyncRead + AsyncWrite + Send + 'static> WsSource<T> {
    /// The source over `stream`, starting with the `leftover` bytes of the upgrade.
    pub fn new(stream: T, leftover: BytesMut, max_payload: usize) -> Self {
        let (read, write) = tokio::io::split(stream);
        WsSource(crate::ws::pair(read, write, leftover, max_payload).0)
    }

    /// Appends the next unmasked payload bytes to `buf`; `Ok(0)` when the peer closed.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.0.read_into(buf).await
    }
}
