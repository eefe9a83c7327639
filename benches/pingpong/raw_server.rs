//! The physical-limit baseline: a hand-written tokio server that speaks just enough of the nano
//! protocol for the pingpong load — handshake, packet framing (raw TCP, or inside WebSocket
//! binary frames), decode `Ping`, encode `Pong` — with no framework: one task per connection,
//! every complete packet of a read answered into one buffer, **one write per read**.
//!
//! It offers the same kind of handshake as nano (heartbeat, route dictionary, serializer), so
//! the client sends and receives compressed routes in both cases. It does not send heartbeats
//! of its own (it only reads the client's), has no sessions, no scheduler, no queues.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::handler::{Ping, Pong};
use crate::wire::{self, Control, OP_BINARY, OP_CLOSE, OP_PONG};

/// Route codes offered in the handshake dictionary.
const CODE_ECHO: u16 = 1;
const CODE_PING: u16 = 2;
const CODE_PONG: u16 = 3;

const MAX_BODY: usize = 64 * 1024;

/// Binds both listeners and serves them on the current runtime.
pub async fn start(tcp: &str, ws: &str, heartbeat: u64) -> io::Result<(SocketAddr, SocketAddr)> {
    let handshake = handshake_packet(heartbeat);
    let tcp = TcpListener::bind(tcp).await?;
    let ws = TcpListener::bind(ws).await?;
    let addrs = (tcp.local_addr()?, ws.local_addr()?);
    for (listener, is_ws) in [(tcp, false), (ws, true)] {
        let handshake = handshake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let handshake = handshake.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, is_ws, &handshake).await;
                });
            }
        });
    }
    Ok(addrs)
}

fn handshake_packet(heartbeat: u64) -> bytes::Bytes {
    let body = serde_json::json!({
        "code": 200,
        "sys": {
            "heartbeat": heartbeat,
            "dict": { wire::ROUTE_ECHO: CODE_ECHO, wire::ROUTE_PING: CODE_PING, wire::ROUTE_PONG: CODE_PONG },
            "serializer": "protobuf",
        },
    })
    .to_string();
    let mut p = BytesMut::with_capacity(4 + body.len());
    put_head(&mut p, 1, body.len());
    p.extend_from_slice(body.as_bytes());
    p.freeze()
}

fn put_head(dst: &mut BytesMut, kind: u8, len: usize) {
    dst.put_u8(kind);
    dst.put_u8((len >> 16) as u8);
    dst.put_u8((len >> 8) as u8);
    dst.put_u8(len as u8);
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

async fn serve(mut stream: TcpStream, ws: bool, handshake: &[u8]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut inb = BytesMut::with_capacity(1024);
    if ws {
        upgrade(&mut stream, &mut inb).await?;
    }
    let mut pkt = BytesMut::new(); // WebSocket: the unframed packet stream
    let mut reply = BytesMut::new(); // the packets of this read's answers
    let mut out = BytesMut::new(); // WebSocket: `reply` in a frame
    let mut ctl = Control::default();
    let mut acked = false;
    loop {
        if inb.capacity() - inb.len() < 256 {
            inb.reserve(1024);
        }
        if stream.read_buf(&mut inb).await? == 0 {
            return Ok(());
        }
        let src = if ws {
            wire::take_frames(&mut inb, &mut pkt, 2 * MAX_BODY, &mut ctl).map_err(|e| bad(&e))?;
            &mut pkt
        } else {
            &mut inb
        };
        while src.len() >= 4 {
            let kind = src[0];
            let len = usize::from(src[1]) << 16 | usize::from(src[2]) << 8 | usize::from(src[3]);
            if len > MAX_BODY {
                return Err(bad("packet too large"));
            }
            if src.len() < 4 + len {
                src.reserve(4 + len - src.len());
                break;
            }
            src.advance(4);
            let body = src.split_to(len);
            match kind {
                1 => reply.extend_from_slice(handshake),
                2 => acked = true,
                3 => {}
                4 if acked => answer(&body, &mut reply)?,
                _ => return Err(bad("unexpected packet")),
            }
        }
        if ws {
            for ping in ctl.pings.drain(..) {
                wire::put_frame(&mut out, OP_PONG, &ping, None);
            }
            if !reply.is_empty() {
                wire::put_frame(&mut out, OP_BINARY, &reply, None);
                reply.clear();
            }
            if ctl.close {
                wire::put_frame(&mut out, OP_CLOSE, &[], None);
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            if ctl.close {
                return Ok(());
            }
        } else if !reply.is_empty() {
            stream.write_all(&reply).await?;
            reply.clear();
        }
    }
}

/// Answers one data message: a `TestHandler.Echo` request with a response, a
/// `TestHandler.Ping` notify with a `pong` push.
fn answer(body: &[u8], reply: &mut BytesMut) -> io::Result<()> {
    let (&flag, mut rest) = body.split_first().ok_or_else(|| bad("empty message"))?;
    let kind = (flag >> 1) & 0x07;
    let mut id = 0u64;
    if kind == 0 {
        let mut shift = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or_else(|| bad("truncated id"))?;
            rest = r;
            id |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(bad("id too long"));
            }
        }
    }
    let code = if flag & 0x01 != 0 {
        if rest.len() < 2 {
            return Err(bad("truncated route code"));
        }
        let c = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        c
    } else {
        let (&n, r) = rest.split_first().ok_or_else(|| bad("truncated route"))?;
        let n = usize::from(n);
        if r.len() < n {
            return Err(bad("truncated route"));
        }
        let c = match &r[..n] {
            b"TestHandler.Echo" => CODE_ECHO,
            b"TestHandler.Ping" => CODE_PING,
            _ => 0,
        };
        rest = &r[n..];
        c
    };
    let ping = Ping::decode(rest).map_err(|_| bad("undecodable ping"))?;
    let pong = Pong {
        content: ping.content.repeat(3),
        sequence: ping.sequence.wrapping_add(1),
    };
    let start = reply.len();
    reply.put_slice(&[4, 0, 0, 0]);
    match (kind, code) {
        (0, CODE_ECHO) => {
            reply.put_u8(2 << 1); // response
            let mut v = id;
            while v >= 0x80 {
                reply.put_u8((v as u8) | 0x80);
                v >>= 7;
            }
            reply.put_u8(v as u8);
        }
        (1, CODE_PING) => {
            reply.put_u8(3 << 1 | 0x01); // push, compressed route
            reply.put_u16(CODE_PONG);
        }
        _ => return Err(bad("unknown route")),
    }
    pong.encode(reply).map_err(|_| bad("encode"))?;
    let len = reply.len() - start - 4;
    reply[start + 1] = (len >> 16) as u8;
    reply[start + 2] = (len >> 8) as u8;
    reply[start + 3] = len as u8;
    Ok(())
}

/// The WebSocket upgrade: reads the request head, answers 101.
async fn upgrade(stream: &mut TcpStream, inb: &mut BytesMut) -> io::Result<()> {
    let head_len = loop {
        if let Some(n) = wire::http_head_len(inb) {
            break n;
        }
        if inb.len() > 16 * 1024 {
            return Err(bad("request head too large"));
        }
        if stream.read_buf(inb).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = inb.split_to(head_len);
    let head = String::from_utf8_lossy(&head);
    let key = wire::http_header(&head, "sec-websocket-key").ok_or_else(|| bad("no key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(resp.as_bytes()).await
}
