//! What the end-to-end test files share: the failure bound, raw connections (TCP and WebSocket)
//! for what a well-behaved client never sends, and bounded HTTP exchanges.
//!
//! Every wait here is bounded by [`T`] and fails the test when the bound passes.

#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nano::protocol::{DataPacketWriter, Dictionary, Packet, PacketCodec, PacketType};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The failure bound of every wait: long enough for a loaded CI machine, short enough that a
/// hang fails instead of stalling the run.
pub const T: Duration = Duration::from_secs(10);

/// The transport a raw connection uses.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Tcp,
    Ws,
}

/// Both transports.
pub const BOTH: [Via; 2] = [Via::Tcp, Via::Ws];

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A raw nano connection: packets written and read by hand.
pub enum Raw {
    Tcp(TcpStream, BytesMut),
    Ws(Box<WsStream>, BytesMut),
}

impl Raw {
    /// A TCP connection to `addr`.
    pub async fn tcp(addr: SocketAddr) -> Raw {
        let s = timeout(T, TcpStream::connect(addr))
            .await
            .expect("tcp connect in time")
            .expect("tcp connect");
        Raw::Tcp(s, BytesMut::new())
    }

    /// A WebSocket connection to `url`.
    pub async fn ws(url: &str) -> Raw {
        let (ws, _) = timeout(T, tokio_tungstenite::connect_async(url))
            .await
            .expect("ws connect in time")
            .expect("ws connect");
        Raw::Ws(Box::new(ws), BytesMut::new())
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Raw::Tcp(s, _) => s.write_all(bytes).await.unwrap(),
            Raw::Ws(ws, _) => ws
                .send(WsMessage::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .unwrap(),
        }
    }

    /// The next packet, or `None` when the server closed the connection (unbounded: callers
    /// wrap it in a timeout, or use [`Raw::next`]).
    pub async fn packet(&mut self) -> Option<Packet> {
        let mut codec = PacketCodec::new(nano::protocol::MAX_BODY_LEN);
        loop {
            let buf = match self {
                Raw::Tcp(_, b) | Raw::Ws(_, b) => b,
            };
            if let Some(p) = codec.decode(buf).unwrap() {
                return Some(p);
            }
            match self {
                Raw::Tcp(s, b) => {
                    if s.read_buf(b).await.unwrap_or(0) == 0 {
                        return None;
                    }
                }
                Raw::Ws(ws, b) => match ws.next().await {
                    Some(Ok(WsMessage::Binary(d))) => b.extend_from_slice(&d),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// The next packet within [`T`] (fails the test otherwise); `None` when closed.
    pub async fn next(&mut self) -> Option<Packet> {
        timeout(T, self.packet())
            .await
            .expect("a packet or the close within the bound")
    }

    /// The next packet that is not a heartbeat, within [`T`].
    pub async fn next_non_heartbeat(&mut self) -> Option<Packet> {
        loop {
            match self.next().await {
                Some(p) if p.kind == PacketType::Heartbeat => continue,
                other => return other,
            }
        }
    }

    /// Sends the Handshake and returns the server's answer (does not ack).
    pub async fn handshake_only(&mut self) -> Value {
        let hs = Packet::new(
            PacketType::Handshake,
            json!({"sys": {"type": "raw", "version": "0.0.1"}, "user": {}}).to_string(),
        );
        self.send(&hs.encode().unwrap()).await;
        let p = self.next().await.expect("a handshake response");
        assert_eq!(p.kind, PacketType::Handshake);
        serde_json::from_slice(&p.body).unwrap()
    }

    /// The whole handshake: Handshake, its answer, HandshakeAck.
    pub async fn handshake(&mut self) -> Value {
        let v = self.handshake_only().await;
        self.send(
            &Packet::new(PacketType::HandshakeAck, Bytes::new())
                .encode()
                .unwrap(),
        )
        .await;
        v
    }

    /// Reads until the server closes (within [`T`]); returns the packets seen before.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.next().await {
            seen.push(p);
        }
        seen
    }
}

/// An encoded request packet.
pub fn request_packet(id: u64, route: &str, payload: &[u8], dict: Option<&Dictionary>) -> Bytes {
    let mut w = DataPacketWriter::request(id, route, dict).unwrap();
    w.payload_mut().extend_from_slice(payload);
    w.finish(64 * 1024).unwrap()
}

/// Reads until EOF (or a reset), within [`T`]; what was read.
pub async fn read_to_end<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    timeout(T, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection within the bound");
    out
}

/// Sends `request` (a raw HTTP request) to `addr` and returns the whole response (the server
/// closes after it), within [`T`].
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(request).await.unwrap();
    String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned()
}

/// The status code of an HTTP response text (`HTTP/1.1 404 Not Found` → 404).
pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// The body of an HTTP response text.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// One plain HTTP/1.1 request to `addr`: the status, the headers (lowercase names) and the
/// body.
#[allow(dead_code)] // not every test binary reads HTTP
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let text = http_exchange(addr, req.as_bytes()).await;
    let head = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(h, _)| h);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status(&text), headers, body(&text).to_owned())
}

pub mod cut;
#[cfg(unix)]
pub mod process;
