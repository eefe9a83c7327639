//! The listener edge over real sockets on 127.0.0.1: the PROXY protocol (v1, v2) on TCP, TLS
//! and WebSocket listeners, the per-IP connection cap and rate, the HTTP upgrade head read
//! byte by byte, and a panicking HTTP handler.
//!
//! A session's address is read back from the server itself: `Who.Addr` answers
//! `Session::remote_addr`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nano::prelude::*;
use nano::protocol::{DataPacketWriter, Message, Packet, PacketCodec, PacketType};
use nano::{Client, Listener, Server, TlsConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Failure bound of every wait.
const T: Duration = Duration::from_secs(10);
/// Longer than `T`: a connection closed within `T` was closed at once, not by this timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

struct Who;

#[component]
impl Who {
    /// The address the session sees.
    pub fn addr(&mut self, s: &Session) -> Result<String> {
        Ok(s.remote_addr().map(|a| a.to_string()).unwrap_or_default())
    }
}

// Listener indexes in `edge_server`'s `local_addrs()`.
const PROXY_TCP: usize = 0;
const PROXY_WS: usize = 1;
const PLAIN_TCP: usize = 2;
const PROXY_TLS: usize = 3;
const PLAIN_WS: usize = 4;

struct Tls {
    config: TlsConfig,
    der: Vec<u8>,
}

fn tls() -> Tls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Tls {
        config: TlsConfig::from_pem(
            cert.cert.pem().as_bytes(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap(),
        der: cert.cert.der().to_vec(),
    }
}

async fn edge_server(tls: &Tls, f: impl FnOnce(nano::App) -> nano::App) -> Server<Json> {
    let app = nano::app()
        .component(Who)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .listen(Listener::tcp("127.0.0.1:0").proxy_protocol())
        .listen(Listener::websocket("127.0.0.1:0", "/nano").proxy_protocol())
        .tcp("127.0.0.1:0")
        .listen(
            Listener::tcp("127.0.0.1:0")
                .tls(tls.config.clone())
                .proxy_protocol(),
        )
        .websocket("127.0.0.1:0", "/nano");
    f(app).start().await.expect("server starts")
}

fn at(server: &Server<Json>, i: usize) -> SocketAddr {
    server.local_addrs()[i].1
}

// ---- PROXY headers, built here from the spec (not with the parser the server uses) ----

fn v1(src: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if src.is_ipv4() { "127.0.0.1" } else { "::1" };
    format!("PROXY {family} {} {dst} {} 3250\r\n", src.ip(), src.port()).into_bytes()
}

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn v2_raw(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// A v2 PROXY (TCP over IPv4/IPv6) header for `src`, with a TLV after the addresses.
fn v2(src: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match src {
        SocketAddr::V4(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        SocketAddr::V6(a) => {
            body.extend_from_slice(&a.ip().octets());
            body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&3250u16.to_be_bytes());
    body.extend_from_slice(&[0x02, 0x00, 0x04, b'g', b'a', b'm', b'e']); // PP2_TYPE_AUTHORITY
    v2_raw(0x1, family, &body)
}

fn v2_local() -> Vec<u8> {
    v2_raw(0x0, 0x00, &[])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A stand-in load balancer: forwards each connection to `target`, writing `header` first.
/// Reports the address each forwarded connection has toward the server (the "real peer"
/// the server sees).
async fn balancer(
    target: SocketAddr,
    header: Vec<u8>,
) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let header = header.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = upstream.set_nodelay(true);
                let _ = tx.send(upstream.local_addr().unwrap());
                if upstream.write_all(&header).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, rx)
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tcp,
    Ws,
    Tls,
}

async fn client(via: Via, addr: SocketAddr, tls: &Tls) -> Result<Client, nano::ClientError> {
    let b = Client::<Json>::builder().request_timeout(T);
    match via {
        Via::Tcp => b.connect_tcp(addr).await,
        Via::Ws => b.connect_ws(&format!("ws://{addr}/nano")).await,
        Via::Tls => b.tls_root_cert_der(tls.der.clone()).connect_tcp(addr).await,
    }
}

async fn seen_addr(c: &Client) -> SocketAddr {
    let s: String = c.request("Who.Addr", &json!({})).await.unwrap();
    s.parse().unwrap()
}

#[tokio::test]
async fn proxy_headers_give_the_session_the_clients_address_on_tcp_tls_and_websocket() {
    let tls = tls();
    let server = edge_server(&tls, |a| a).await;
    let cases: Vec<(&str, Vec<u8>, Option<SocketAddr>)> = vec![
        (
            "v1 TCP4",
            v1(sa("203.0.113.7:40001")),
            Some(sa("203.0.113.7:40001")),
        ),
        (
            "v1 TCP6",
            v1(sa("[2001:db8::7]:40002")),
            Some(sa("[2001:db8::7]:40002")),
        ),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), None),
        (
            "v2 TCP4",
            v2(sa("198.51.100.9:40003")),
            Some(sa("198.51.100.9:40003")),
        ),
        (
            "v2 TCP6",
            v2(sa("[2001:db8::9]:40004")),
            Some(sa("[2001:db8::9]:40004")),
        ),
        ("v2 LOCAL", v2_local(), None),
    ];
    for (via, listener) in [
        (Via::Tcp, PROXY_TCP),
        (Via::Ws, PROXY_WS),
        (Via::Tls, PROXY_TLS),
    ] {
        for (name, header, expected) in &cases {
            let (lb, mut peers) = balancer(at(&server, listener), header.clone()).await;
            let c = client(via, lb, &tls)
                .await
                .unwrap_or_else(|e| panic!("{via:?} {name}: {e}"));
            let peer = timeout(T, peers.recv()).await.unwrap().unwrap();
            // UNKNOWN and LOCAL: the real peer, i.e. the balancer's side of the connection.
            assert_eq!(
                seen_addr(&c).await,
                expected.unwrap_or(peer),
                "{via:?} {name}"
            );
        }
    }
}

/// The nano handshake and one `Who.Addr` request over a raw stream; `first` goes out in the
/// same write as the handshake.
async fn raw_nano(s: &mut TcpStream, first: &[u8]) -> SocketAddr {
    let hs = Packet::new(
        PacketType::Handshake,
        json!({"sys": {"type": "raw", "version": "0.0.1"}}).to_string(),
    )
    .encode()
    .unwrap();
    s.write_all(&[first, &hs[..]].concat()).await.unwrap();
    let mut buf = BytesMut::new();
    let p = raw_packet(s, &mut buf).await;
    assert_eq!(p.kind, PacketType::Handshake);
    let ack = Packet::new(PacketType::HandshakeAck, Bytes::new())
        .encode()
        .unwrap();
    let mut w = DataPacketWriter::request(1, "Who.Addr", None).unwrap();
    w.payload_mut().extend_from_slice(b"{}");
    let req = w.finish(64 * 1024).unwrap();
    s.write_all(&[&ack[..], &req[..]].concat()).await.unwrap();
    loop {
        let p = raw_packet(s, &mut buf).await;
        if p.kind == PacketType::Data {
            let m = Message::decode(p.body, None).unwrap();
            let v: String = serde_json::from_slice(&m.payload).unwrap();
            return v.parse().unwrap();
        }
    }
}

async fn raw_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    let mut codec = PacketCodec::new(64 * 1024);
    loop {
        if let Some(p) = codec.decode(buf).unwrap() {
            return p;
        }
        let n = timeout(T, s.read_buf(buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed by the server");
    }
}

/// The same over WebSocket on an upgraded stream.
async fn ws_nano(s: TcpStream) -> SocketAddr {
    let mut ws = WebSocketStream::from_raw_socket(s, Role::Client, None).await;
    let hs = Packet::new(PacketType::Handshake, json!({"sys": {}}).to_string())
        .encode()
        .unwrap();
    ws.send(WsMessage::Binary(hs)).await.unwrap();
    let mut buf = BytesMut::new();
    let mut codec = PacketCodec::new(64 * 1024);
    let mut next = |buf: &mut BytesMut| codec.decode(buf).unwrap();
    let mut sent_request = false;
    loop {
        while let Some(p) = next(&mut buf) {
            match p.kind {
                PacketType::Handshake => {
                    let ack = Packet::new(PacketType::HandshakeAck, Bytes::new())
                        .encode()
                        .unwrap();
                    let mut w = DataPacketWriter::request(1, "Who.Addr", None).unwrap();
                    w.payload_mut().extend_from_slice(b"{}");
                    let req = w.finish(64 * 1024).unwrap();
                    ws.send(WsMessage::Binary(ack)).await.unwrap();
                    ws.send(WsMessage::Binary(req)).await.unwrap();
                    sent_request = true;
                }
                PacketType::Data if sent_request => {
                    let m = Message::decode(p.body, None).unwrap();
                    let v: String = serde_json::from_slice(&m.payload).unwrap();
                    return v.parse().unwrap();
                }
                _ => {}
            }
        }
        match timeout(T, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(d))) => buf.extend_from_slice(&d),
            Some(Ok(_)) => {}
            other => panic!("websocket ended: {other:?}"),
        }
    }
}

fn upgrade_request(addr: SocketAddr) -> Vec<u8> {
    format!(
        "GET /nano HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads the HTTP response head (byte by byte, so nothing after it is taken).
async fn response_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = timeout(T, s.read_u8())
            .await
            .unwrap()
            .expect("response head");
        head.push(b);
        assert!(head.len() < 4096);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn header_and_handshake_in_one_write_and_header_split_over_several() {
    let tls = tls();
    let server = edge_server(&tls, |a| a).await;
    let src = sa("203.0.113.50:5000");

    // TCP: header and nano handshake in one write.
    for header in [v1(src), v2(src)] {
        let mut s = TcpStream::connect(at(&server, PROXY_TCP)).await.unwrap();
        assert_eq!(raw_nano(&mut s, &header).await, src);
    }
    // TCP: the header in three writes, the handshake in a fourth.
    for header in [v1(src), v2(src)] {
        let mut s = TcpStream::connect(at(&server, PROXY_TCP)).await.unwrap();
        s.set_nodelay(true).unwrap();
        for piece in [&header[..3], &header[3..17], &header[17..]] {
            s.write_all(piece).await.unwrap();
            s.flush().await.unwrap();
        }
        assert_eq!(raw_nano(&mut s, &[]).await, src);
    }
    // WebSocket: header and HTTP upgrade in one write.
    for header in [v1(src), v2(src)] {
        let mut s = TcpStream::connect(at(&server, PROXY_WS)).await.unwrap();
        let lb = at(&server, PROXY_WS);
        s.write_all(&[&header[..], &upgrade_request(lb)[..]].concat())
            .await
            .unwrap();
        let head = response_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(ws_nano(s).await, src);
    }
}

#[tokio::test]
async fn a_proxy_header_and_an_http_head_trickled_byte_by_byte_still_upgrade() {
    let tls = tls();
    let server = edge_server(&tls, |a| a).await;
    let src = sa("[2001:db8::42]:4242");
    for (listener, header) in [
        (PLAIN_WS, Vec::new()),
        (PROXY_WS, v2(src)),
        (PROXY_WS, v1(src)),
    ] {
        let addr = at(&server, listener);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let local = s.local_addr().unwrap();
        for b in [header, upgrade_request(addr)].concat() {
            s.write_all(&[b]).await.unwrap();
        }
        let head = response_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let expected = if listener == PLAIN_WS { local } else { src };
        assert_eq!(ws_nano(s).await, expected);
    }
}

/// The server closed the connection without answering: EOF, or a reset when it closed with
/// our bytes unread.
async fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match timeout(T, s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: the server answered {:?}", &buf[..n]),
        Err(_) => panic!("{what}: still open after {T:?}"),
    }
}

#[tokio::test]
async fn bad_or_missing_headers_close_only_their_connection() {
    let tls = tls();
    let server = edge_server(&tls, |a| a).await;
    let handshake = Packet::new(PacketType::Handshake, json!({"sys": {}}).to_string())
        .encode()
        .unwrap()
        .to_vec();
    let mut oversized = v2(sa("198.51.100.1:1"))[..16].to_vec();
    oversized[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let mut bad_sig = v2(sa("198.51.100.1:1"));
    bad_sig[7] = b'X';
    let bad: Vec<(&str, usize, Vec<u8>)> = vec![
        (
            "malformed v1",
            PROXY_TCP,
            b"PROXY TCP4 203.0.113.1 nonsense 1 2\r\n".to_vec(),
        ),
        (
            "v1 without line end",
            PROXY_TCP,
            [b"PROXY TCP4 ".as_slice(), &[b'9'; 120]].concat(),
        ),
        ("bad v2 signature", PROXY_TCP, bad_sig.clone()),
        ("oversized v2 length", PROXY_TCP, oversized.clone()),
        ("no header (nano handshake)", PROXY_TCP, handshake.clone()),
        (
            "no header (TLS)",
            PROXY_TLS,
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
        ),
        ("bad v2 signature", PROXY_WS, bad_sig),
        ("oversized v2 length", PROXY_WS, oversized),
        (
            "no header (HTTP upgrade)",
            PROXY_WS,
            upgrade_request(at(&server, PROXY_WS)),
        ),
    ];
    for (what, listener, bytes) in bad {
        let mut s = TcpStream::connect(at(&server, listener)).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        assert_closed(&mut s, what).await;
        // The server still serves others, on that listener and the rest.
        let src = sa("203.0.113.9:9");
        let (lb, _) = balancer(at(&server, listener), v1(src)).await;
        let via = match listener {
            PROXY_TCP => Via::Tcp,
            PROXY_WS => Via::Ws,
            _ => Via::Tls,
        };
        let c = client(via, lb, &tls).await.unwrap();
        assert_eq!(seen_addr(&c).await, src, "after {what}");
    }
}

#[tokio::test]
async fn listeners_without_proxy_protocol_are_unaffected() {
    let tls = tls();
    let server = edge_server(&tls, |a| a).await;
    let mut s = TcpStream::connect(at(&server, PLAIN_TCP)).await.unwrap();
    let local = s.local_addr().unwrap();
    assert_eq!(raw_nano(&mut s, &[]).await, local);
    let c = client(Via::Ws, at(&server, PLAIN_WS), &tls).await.unwrap();
    assert_eq!(seen_addr(&c).await.ip(), local.ip());
    // A PROXY header there is not taken off: it is bytes of the nano protocol, and invalid.
    let mut s = TcpStream::connect(at(&server, PLAIN_TCP)).await.unwrap();
    s.write_all(&v1(sa("203.0.113.1:1"))).await.unwrap();
    let mut buf = BytesMut::new();
    let closed = timeout(T, async {
        loop {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an invalid packet type ends the connection");
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_per_ip_cap_closes_the_extra_connection_at_once_and_frees_on_leave() {
    let server = nano::app()
        .component(Who)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .max_connections_per_ip(2)
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = at(&server, 0);
    let a = Client::<Json>::connect_tcp(addr).await.unwrap();
    let b = Client::<Json>::connect_tcp(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(&[1, 0, 0, 2, b'{', b'}']).await.unwrap();
    assert_closed(&mut third, "the third connection").await;
    assert_eq!(server.per_ip_refusals().over_cap, 1);
    assert!(Client::<Json>::connect_tcp(addr).await.is_err());
    assert_eq!(server.per_ip_refusals().over_cap, 2);

    a.close().await;
    drop(a);
    eventually("the first connection's place is freed", || {
        server.connections() == 1
    })
    .await;
    let c = Client::<Json>::connect_tcp(addr)
        .await
        .expect("a place was freed");
    assert_eq!(seen_addr(&c).await.ip(), addr.ip());
    assert_eq!(seen_addr(&b).await.ip(), addr.ip());
    assert_eq!(server.per_ip_refusals().over_cap, 2);
}

#[tokio::test]
async fn the_per_ip_rate_refuses_connections_over_the_burst() {
    let server = nano::app()
        .component(Who)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .connection_rate_per_ip(0.001, 3) // a burst of 3, then one per ~17 minutes
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = at(&server, 0);
    for _ in 0..3 {
        let c = Client::<Json>::connect_tcp(addr)
            .await
            .expect("within the burst");
        c.close().await; // the rate counts new connections, not open ones
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth.write_all(&[1, 0, 0, 2, b'{', b'}']).await.unwrap();
    assert_closed(&mut fourth, "the fourth connection").await;
    let r = server.per_ip_refusals();
    assert_eq!((r.over_rate, r.over_cap, r.table_full), (1, 0, 0));
}

#[tokio::test]
async fn behind_the_proxy_protocol_the_per_ip_limits_apply_to_the_named_client() {
    let server = nano::app()
        .component(Who)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .max_connections_per_ip(1)
        .listen(Listener::tcp("127.0.0.1:0").proxy_protocol())
        .start()
        .await
        .unwrap();
    let addr = at(&server, 0);
    let (lb1, _) = balancer(addr, v2(sa("203.0.113.1:1000"))).await;
    let (lb2, _) = balancer(addr, v1(sa("203.0.113.2:2000"))).await;
    // Both come from 127.0.0.1, but name two clients: both are served.
    let one = Client::<Json>::connect_tcp(lb1).await.unwrap();
    let two = Client::<Json>::connect_tcp(lb2).await.unwrap();
    assert_eq!(seen_addr(&one).await, sa("203.0.113.1:1000"));
    assert_eq!(seen_addr(&two).await, sa("203.0.113.2:2000"));
    // A second connection for the first client is over its cap.
    let again = Client::<Json>::builder()
        .request_timeout(T)
        .connect_tcp(lb1)
        .await;
    assert!(again.is_err(), "the same client twice");
    assert_eq!(server.per_ip_refusals().over_cap, 1);
}

#[tokio::test]
async fn a_panicking_http_handler_answers_500_and_the_server_goes_on() {
    let server = nano::app()
        .component(Who)
        .http_handler(|req| {
            if req.path == "/boom" {
                panic!("handler bug");
            }
            None
        })
        .http_handler(|req| {
            (req.path == "/ok").then(|| nano::HttpResponse::ok("text/plain", "fine"))
        })
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    let addr = at(&server, 0);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&get("/boom")).await.unwrap();
    let mut answer = String::new();
    timeout(T, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    // The next handler was not reached for /boom; it still answers its own path.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&get("/ok")).await.unwrap();
    let mut answer = String::new();
    timeout(T, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("fine"),
        "{answer}"
    );
    let c = Client::<Json>::connect_ws(&format!("ws://{addr}/nano"))
        .await
        .unwrap();
    assert_eq!(seen_addr(&c).await.ip(), addr.ip());
    eventually("only the WebSocket connection is left", || {
        server.connections() == 1
    })
    .await;
}

#[tokio::test]
async fn an_http_head_over_the_size_cap_gets_431() {
    let server = nano::app()
        .component(Who)
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    let mut s = TcpStream::connect(at(&server, 0)).await.unwrap();
    // Exactly the cap (16 KiB) and no blank line: the server reads all of it, so it closes
    // cleanly after its answer (no reset over unread bytes).
    let mut head = b"GET /nano HTTP/1.1\r\nX-Filler: ".to_vec();
    head.resize(16 * 1024 - 2, b'a');
    head.extend_from_slice(b"\r\n");
    s.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    timeout(T, s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
