//! The lean load client's connection: raw tokio TCP, or WebSocket framed by hand, with the
//! nano packet codec of `nano_core::protocol`. One request in flight per connection (closed
//! loop), so reads and writes are never concurrent and the stream is not split.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano::protocol::{
    encode_packet, DataPacketWriter, Dictionary, Message, MessageType, Packet, PacketCodec,
    PacketType, DEFAULT_MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::wire::{self, Control, OP_BINARY, OP_PONG};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Raw TCP.
    Tcp(SocketAddr),
    /// WebSocket at `ws://addr/path`.
    Ws { addr: SocketAddr, path: String },
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Tcp(a) | Target::Ws { addr: a, .. } => *a,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Tcp(a) => format!("tcp://{a}"),
            Target::Ws { addr, path } => format!("ws://{addr}{path}"),
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One client connection that completed the nano handshake.
pub struct Conn {
    stream: TcpStream,
    ws: bool,
    mask: [u8; 4],
    /// WebSocket: bytes as read (frames); unused on TCP.
    raw: BytesMut,
    /// The packet byte stream.
    pkt: BytesMut,
    codec: PacketCodec,
    out: BytesMut,
    ctl: Control,
    /// The route dictionary offered by the server, if any.
    pub dict: Option<Dictionary>,
    /// The heartbeat interval announced by the server.
    pub heartbeat: Option<Duration>,
    /// Heartbeat packets received from the server.
    pub heartbeats_received: u64,
    next_id: u64,
}

impl Conn {
    /// Connects (from `src` when given, a 127.0.0.0/8 address), upgrades to WebSocket if
    /// needed, and performs the nano handshake.
    pub async fn open(target: &Target, src: Option<IpAddr>, salt: u32) -> io::Result<Conn> {
        let addr = target.addr();
        let stream = match src {
            Some(ip) => {
                let sock = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        stream.set_nodelay(true)?;
        let s = salt.to_le_bytes();
        let mut conn = Conn {
            stream,
            ws: false,
            mask: [0x37 ^ s[0], 0xfa ^ s[1], 0x21 ^ s[2], 0x3d ^ s[3] | 1],
            raw: BytesMut::with_capacity(512),
            pkt: BytesMut::with_capacity(512),
            codec: PacketCodec::new(DEFAULT_MAX_PACKET_SIZE),
            out: BytesMut::with_capacity(256),
            ctl: Control::default(),
            dict: None,
            heartbeat: None,
            heartbeats_received: 0,
            next_id: 1,
        };
        if let Target::Ws { path, .. } = target {
            conn.upgrade(addr, path).await?;
        }
        conn.handshake().await?;
        Ok(conn)
    }

    async fn upgrade(&mut self, addr: SocketAddr, path: &str) -> io::Result<()> {
        const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.stream.write_all(req.as_bytes()).await?;
        let head_len = loop {
            if let Some(n) = wire::http_head_len(&self.raw) {
                break n;
            }
            if self.raw.len() > 16 * 1024 {
                return Err(bad("HTTP response head too large"));
            }
            if self.stream.read_buf(&mut self.raw).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = self.raw.split_to(head_len);
        let head = String::from_utf8_lossy(&head);
        let status_ok = head.starts_with("HTTP/1.1 101") || head.starts_with("HTTP/1.0 101");
        if !status_ok {
            let first = head.lines().next().unwrap_or("");
            return Err(bad(format!("websocket upgrade refused: {first}")));
        }
        let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(KEY.as_bytes());
        if wire::http_header(&head, "sec-websocket-accept") != Some(expected.as_str()) {
            return Err(bad("bad Sec-WebSocket-Accept"));
        }
        self.ws = true;
        Ok(())
    }

    async fn handshake(&mut self) -> io::Result<()> {
        let mut p = BytesMut::new();
        encode_packet(PacketType::Handshake, wire::CLIENT_HANDSHAKE, &mut p)
            .map_err(|e| bad(e.to_string()))?;
        self.send(&p).await?;
        let body = loop {
            let packet = self.recv_packet().await?;
            match packet.kind {
                PacketType::Handshake => break packet.body,
                PacketType::Heartbeat => {}
                other => return Err(bad(format!("{other:?} before the handshake answer"))),
            }
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("handshake json: {e}")))?;
        let code = v.get("code").and_then(|c| c.as_u64()).unwrap_or(0);
        if code != 200 {
            return Err(bad(format!("handshake refused with code {code}")));
        }
        let sys = v.get("sys").cloned().unwrap_or_default();
        self.heartbeat = sys
            .get("heartbeat")
            .and_then(|h| h.as_u64())
            .filter(|&h| h > 0)
            .map(Duration::from_secs);
        if let Some(d) = sys
            .get("dict")
            .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        {
            self.dict = Some(Dictionary::from_json(d).map_err(|e| bad(e.to_string()))?);
        }
        let mut ack = BytesMut::new();
        encode_packet(PacketType::HandshakeAck, &[], &mut ack).map_err(|e| bad(e.to_string()))?;
        self.send(&ack).await
    }

    /// Writes whole packets (one binary frame on WebSocket), one write call.
    pub async fn send(&mut self, packets: &[u8]) -> io::Result<()> {
        if self.ws {
            self.out.clear();
            wire::put_frame(&mut self.out, OP_BINARY, packets, Some(self.mask));
            self.stream.write_all(&self.out).await
        } else {
            self.stream.write_all(packets).await
        }
    }

    /// Sends a heartbeat packet.
    pub async fn send_heartbeat(&mut self) -> io::Result<()> {
        self.send(&[PacketType::Heartbeat as u8, 0, 0, 0]).await
    }

    /// A request packet with a fresh id (returned) and a protobuf payload.
    pub fn request_packet(&mut self, route: &str, payload: &impl prost::Message) -> (u64, Bytes) {
        let id = self.next_id;
        self.next_id += 1;
        let mut w = DataPacketWriter::request(id, route, self.dict.as_ref())
            .expect("short route")
            .with_capacity_hint(payload.encoded_len());
        payload.encode(w.payload_mut()).expect("reserved");
        (id, w.finish(DEFAULT_MAX_PACKET_SIZE).expect("small packet"))
    }

    /// A notify packet with a protobuf payload.
    pub fn notify_packet(&self, route: &str, payload: &impl prost::Message) -> Bytes {
        let mut w = DataPacketWriter::notify(route, self.dict.as_ref())
            .expect("short route")
            .with_capacity_hint(payload.encoded_len());
        payload.encode(w.payload_mut()).expect("reserved");
        w.finish(DEFAULT_MAX_PACKET_SIZE).expect("small packet")
    }

    /// A request packet with a JSON payload.
    pub fn json_request_packet(
        &mut self,
        route: &str,
        payload: &serde_json::Value,
    ) -> (u64, Bytes) {
        let id = self.next_id;
        self.next_id += 1;
        let mut w = DataPacketWriter::request(id, route, self.dict.as_ref()).expect("short route");
        serde_json::to_writer(bytes::BufMut::writer(w.payload_mut()), payload).expect("json");
        (id, w.finish(DEFAULT_MAX_PACKET_SIZE).expect("small packet"))
    }

    /// The next packet of any kind.
    pub async fn recv_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = self
                .codec
                .decode(&mut self.pkt)
                .map_err(|e| bad(e.to_string()))?
            {
                return Ok(p);
            }
            if self.ws {
                let before = self.pkt.len();
                wire::take_frames(&mut self.raw, &mut self.pkt, 1 << 24, &mut self.ctl)
                    .map_err(bad)?;
                if !self.ctl.pings.is_empty() {
                    for ping in std::mem::take(&mut self.ctl.pings) {
                        self.out.clear();
                        wire::put_frame(&mut self.out, OP_PONG, &ping, Some(self.mask));
                        self.stream.write_all(&self.out).await?;
                    }
                }
                if self.ctl.close {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "websocket close frame",
                    ));
                }
                if self.pkt.len() != before {
                    continue;
                }
                if self.stream.read_buf(&mut self.raw).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            } else if self.stream.read_buf(&mut self.pkt).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The next data message; heartbeats are counted and skipped, a kick is an error.
    pub async fn recv_message(&mut self) -> io::Result<Message> {
        loop {
            let p = self.recv_packet().await?;
            match p.kind {
                PacketType::Heartbeat => self.heartbeats_received += 1,
                PacketType::Data => {
                    return Message::decode(p.body, self.dict.as_ref())
                        .map_err(|e| bad(e.to_string()))
                }
                PacketType::Kick => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("kicked: {}", String::from_utf8_lossy(&p.body)),
                    ))
                }
                other => return Err(bad(format!("unexpected {other:?} packet"))),
            }
        }
    }

    /// Whether `msg` is the push `route` (by name or dictionary code).
    pub fn is_push(&self, msg: &Message, route: &str) -> bool {
        msg.kind == MessageType::Push && msg.route.as_deref() == Some(route)
    }
}
