//! End to end over real sockets on 127.0.0.1, TCP and WebSocket, with the Rust client and with
//! raw sockets for what a well-behaved client never sends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nano::prelude::*;
use nano::protocol::{DataPacketWriter, Message, MessageType, Packet, PacketCodec, PacketType};
use nano::{Client, ClientError, ClientEvent, Server, TlsConfig, Transport};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const T: Duration = Duration::from_secs(10);

struct Lobby {
    group: Group,
}

#[component]
impl Lobby {
    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }

    pub fn push_me(&mut self, s: &Session, v: Value) -> Result<()> {
        s.push("onPush", &v)
    }

    pub fn join(&mut self, s: &Session) -> Result<usize> {
        self.group.add(s)?;
        Ok(self.group.count())
    }

    pub fn shout(&mut self, _s: &Session, v: Value) -> Result<()> {
        self.group.broadcast("onShout", &v)
    }

    pub fn fail(&mut self, _s: &Session) -> Result<()> {
        Err(Error::new("GAME-1", "nope"))
    }

    pub fn boom(&mut self, _s: &Session) -> Result<()> {
        panic!("boom")
    }

    /// Pushes `n` pushes of 16 KiB.
    pub fn flood(&mut self, s: &Session, n: usize) -> Result<()> {
        let blob = "x".repeat(16 * 1024);
        for _ in 0..n {
            if s.push("onFlood", &blob).is_err() {
                break;
            }
        }
        Ok(())
    }
}

fn lobby() -> Lobby {
    Lobby {
        group: Group::new("lobby"),
    }
}

async fn server_with(f: impl FnOnce(nano::App) -> nano::App) -> Server<Json> {
    let app = nano::app()
        .component(lobby())
        .push_routes(["onPush", "onShout"])
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano");
    f(app).start().await.expect("server starts")
}

async fn server() -> Server<Json> {
    server_with(|a| a).await
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tcp,
    Ws,
}

const BOTH: [Via; 2] = [Via::Tcp, Via::Ws];

async fn connect(server: &Server<Json>, via: Via) -> Client {
    match via {
        Via::Tcp => Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
            .await
            .expect("tcp connect"),
        Via::Ws => Client::connect_ws(&format!(
            "ws://{}/nano",
            server.addr(Transport::WebSocket).unwrap()
        ))
        .await
        .expect("ws connect"),
    }
}

#[tokio::test]
async fn handshake_request_notify_and_push() {
    let server = server().await;
    for via in BOTH {
        let c = connect(&server, via).await;
        let hs = c.handshake();
        assert_eq!(hs.code, 200);
        assert_eq!(hs.serializer.as_deref(), Some("json"));
        assert_eq!(hs.heartbeat, Some(Duration::from_secs(30)));
        let dict = hs.dict.as_ref().expect("dict offered");
        assert_eq!(
            dict.code("Lobby.Echo"),
            server.engine().dictionary().code("Lobby.Echo")
        );
        let v: Value = c
            .request("Lobby.Echo", &json!({"a": [1, 2]}))
            .await
            .unwrap();
        assert_eq!(v, json!({"a": [1, 2]}), "{via:?}");
        let mut pushes = c.on("onPush");
        c.notify("Lobby.PushMe", &json!("ping")).await.unwrap();
        let p = timeout(T, pushes.recv()).await.unwrap().unwrap();
        assert_eq!(&p[..], b"\"ping\"", "{via:?}");
    }
}

#[tokio::test]
async fn error_responses_for_every_failure() {
    let server = server().await;
    for via in BOTH {
        let c = connect(&server, via).await;
        let code = |r: Result<Value, ClientError>| match r {
            Err(ClientError::Server(e)) => e.code().to_owned(),
            other => panic!("expected an error response, got {other:?}"),
        };
        assert_eq!(code(c.request("Lobby.Nope", &json!({})).await), "NANO-404");
        assert_eq!(
            code(
                c.request_raw("Lobby.Echo", b"{oops")
                    .await
                    .map(|_| Value::Null)
            ),
            "NANO-400"
        );
        assert_eq!(code(c.request("Lobby.Fail", &json!({})).await), "GAME-1");
        assert_eq!(code(c.request("Lobby.Boom", &json!({})).await), "NANO-500");
        let v: Value = c.request("Lobby.Echo", &json!(1)).await.unwrap();
        assert_eq!(v, json!(1), "{via:?}: still served after the panic");
    }
}

#[tokio::test]
async fn broadcast_reaches_a_hundred_clients() {
    let server = server().await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let via = if i % 2 == 0 { Via::Tcp } else { Via::Ws };
        let c = connect(&server, via).await;
        let _: usize = c.request("Lobby.Join", &()).await.unwrap();
        let rx = c.on("onShout");
        clients.push((c, rx));
    }
    clients[0]
        .0
        .notify("Lobby.Shout", &json!({"hi": 1}))
        .await
        .unwrap();
    for (_, rx) in clients.iter_mut() {
        let p = timeout(T, rx.recv()).await.unwrap().unwrap();
        assert_eq!(&p[..], br#"{"hi":1}"#);
    }
}

// ---------------------------------------------------------------------------------------------
// Raw connections.

enum Raw {
    Tcp(TcpStream, BytesMut),
    Ws(
        Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
        BytesMut,
    ),
}

impl Raw {
    async fn open(server: &Server<Json>, via: Via) -> Raw {
        match via {
            Via::Tcp => Raw::Tcp(
                TcpStream::connect(server.addr(Transport::Tcp).unwrap())
                    .await
                    .unwrap(),
                BytesMut::new(),
            ),
            Via::Ws => {
                let url = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
                let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                Raw::Ws(Box::new(ws), BytesMut::new())
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        match self {
            Raw::Tcp(s, _) => s.write_all(bytes).await.unwrap(),
            Raw::Ws(ws, _) => ws
                .send(WsMessage::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .unwrap(),
        }
    }

    /// The next packet, or `None` when the server closed the connection.
    async fn packet(&mut self) -> Option<Packet> {
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

    async fn handshake(&mut self) -> Value {
        let hs = Packet::new(
            PacketType::Handshake,
            json!({"sys": {"type": "raw", "version": "0.0.1"}, "user": {}}).to_string(),
        );
        self.send(&hs.encode().unwrap()).await;
        let p = timeout(T, self.packet()).await.unwrap().unwrap();
        assert_eq!(p.kind, PacketType::Handshake);
        self.send(
            &Packet::new(PacketType::HandshakeAck, Bytes::new())
                .encode()
                .unwrap(),
        )
        .await;
        serde_json::from_slice(&p.body).unwrap()
    }

    /// Reads until the server closes; returns the packets seen before.
    async fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = timeout(T, self.packet()).await.expect("server closes") {
            seen.push(p);
        }
        seen
    }
}

fn request_packet(
    id: u64,
    route: &str,
    payload: &[u8],
    dict: Option<&nano::protocol::Dictionary>,
) -> Bytes {
    let mut w = DataPacketWriter::request(id, route, dict).unwrap();
    w.payload_mut().extend_from_slice(payload);
    w.finish(64 * 1024).unwrap()
}

#[tokio::test]
async fn a_hundred_pipelined_requests_in_one_write_are_all_answered_in_order() {
    let server = server().await;
    for via in BOTH {
        let mut raw = Raw::open(&server, via).await;
        raw.handshake().await;
        let mut batch = Vec::new();
        for id in 1..=100u64 {
            batch.extend_from_slice(&request_packet(
                id,
                "Lobby.Echo",
                id.to_string().as_bytes(),
                None,
            ));
        }
        raw.send(&batch).await;
        for id in 1..=100u64 {
            let p = timeout(T, raw.packet()).await.unwrap().unwrap();
            assert_eq!(p.kind, PacketType::Data);
            let m = Message::decode(p.body, None).unwrap();
            assert_eq!(m.kind, MessageType::Response);
            assert_eq!(m.id, id, "{via:?}");
            assert_eq!(&m.payload[..], id.to_string().as_bytes());
        }
    }
}

#[tokio::test]
async fn compressed_routes_both_ways() {
    let server = server().await;
    for via in BOTH {
        let mut raw = Raw::open(&server, via).await;
        let hs = raw.handshake().await;
        let dict = nano::protocol::Dictionary::from_json(&hs["sys"]["dict"]).unwrap();
        let code = dict.code("Lobby.PushMe").unwrap();
        // A request whose route is the 2-byte code.
        let req = request_packet(1, "Lobby.PushMe", b"7", Some(&dict));
        assert_eq!(req[4] & 0x01, 0x01, "the request went out compressed");
        assert_eq!(u16::from_be_bytes([req[6], req[7]]), code);
        raw.send(&req).await;
        let mut saw_push = false;
        for _ in 0..2 {
            let p = timeout(T, raw.packet()).await.unwrap().unwrap();
            let flag = p.body[0];
            let m = Message::decode(p.body, Some(&dict)).unwrap();
            if m.kind == MessageType::Push {
                assert_eq!(flag & 0x01, 0x01, "{via:?}: the push came back compressed");
                assert_eq!(m.route.as_deref(), Some("onPush"));
                assert_eq!(&m.payload[..], b"7");
                saw_push = true;
            } else {
                assert_eq!(m.kind, MessageType::Response);
            }
        }
        assert!(saw_push);
    }
}

fn vectors() -> Value {
    serde_json::from_str(include_str!("../nano-core/tests/data/vectors.json")).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn every_invalid_vector_closes_only_its_own_connection() {
    let server = server().await;
    let v = vectors();
    for via in BOTH {
        let bystander = connect(&server, via).await;
        for case in v["invalid"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let mut raw = Raw::open(&server, via).await;
            raw.handshake().await;
            raw.send(&hex(case["hex"].as_str().unwrap())).await;
            let seen = raw.until_closed().await;
            assert!(
                seen.iter().all(|p| p.kind != PacketType::Data),
                "{via:?} {name}: no data answered a malformed packet"
            );
            let ok: Value = bystander.request("Lobby.Echo", &json!(name)).await.unwrap();
            assert_eq!(
                ok,
                json!(name),
                "{via:?}: others are still served after {name}"
            );
        }
    }
}

#[tokio::test]
async fn oversized_header_is_refused_before_the_body() {
    let server = server().await;
    for via in BOTH {
        let mut raw = Raw::open(&server, via).await;
        raw.handshake().await;
        // Only the header: the server must not wait for 16 MiB before refusing.
        raw.send(&[0x04, 0x10, 0x00, 0x00]).await; // 1 MiB announced
        raw.until_closed().await;
    }
}

#[tokio::test]
async fn handshake_timeout_and_data_before_ack_close_the_connection() {
    let server = server_with(|a| a.handshake_timeout(Duration::from_millis(300))).await;
    for via in BOTH {
        let mut raw = Raw::open(&server, via).await;
        let started = std::time::Instant::now();
        raw.until_closed().await;
        assert!(started.elapsed() < Duration::from_secs(5), "{via:?}");

        let mut raw = Raw::open(&server, via).await;
        raw.send(&request_packet(1, "Lobby.Echo", b"1", None)).await;
        let seen = raw.until_closed().await;
        assert!(
            seen.is_empty(),
            "{via:?}: data before the handshake is refused"
        );
    }
}

#[tokio::test]
async fn a_silent_client_is_kicked_after_two_heartbeats() {
    let server = server_with(|a| a.heartbeat(Some(Duration::from_secs(1)))).await;
    for via in BOTH {
        let builder = Client::<Json>::builder().heartbeat(false);
        let c = match via {
            Via::Tcp => {
                builder
                    .connect_tcp(server.addr(Transport::Tcp).unwrap())
                    .await
            }
            Via::Ws => {
                builder
                    .connect_ws(&format!(
                        "ws://{}/nano",
                        server.addr(Transport::WebSocket).unwrap()
                    ))
                    .await
            }
        }
        .unwrap();
        let ev = timeout(Duration::from_secs(8), c.closed()).await.unwrap();
        assert!(matches!(ev, ClientEvent::Kicked { .. }), "{via:?}: {ev:?}");
        assert!(c.heartbeats_received() >= 1, "the server sent heartbeats");
    }
    // A client that heartbeats stays.
    let c = connect(&server, Via::Tcp).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!c.is_closed());
    let v: Value = c.request("Lobby.Echo", &json!(2)).await.unwrap();
    assert_eq!(v, json!(2));
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let server = server_with(|a| a.send_queue(16)).await;
    for via in BOTH {
        let mut raw = Raw::open(&server, via).await;
        raw.handshake().await;
        // Once this is answered the session is registered.
        raw.send(&request_packet(9, "Lobby.Echo", b"0", None)).await;
        timeout(T, raw.packet()).await.unwrap().unwrap();
        let before = server.sessions();
        // 4000 pushes of 16 KiB = 64 MiB: far more than socket buffers and the queue hold.
        raw.send(&request_packet(1, "Lobby.Flood", b"4000", None))
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.sessions() >= before {
            assert!(
                std::time::Instant::now() < deadline,
                "{via:?}: not disconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(raw);
    }
}

#[tokio::test]
async fn tls_on_tcp_and_websocket() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = nano::app()
        .component(lobby())
        .tcp_tls("127.0.0.1:0", tls.clone())
        .websocket_tls("127.0.0.1:0", "/nano", tls)
        .start()
        .await
        .unwrap();
    let der = cert.cert.der().to_vec();
    let c = Client::<Json>::builder()
        .tls_root_cert_der(der.clone())
        .connect_tcp(server.addr(Transport::TcpTls).unwrap())
        .await
        .unwrap();
    let v: Value = c.request("Lobby.Echo", &json!("tls")).await.unwrap();
    assert_eq!(v, json!("tls"));
    let c = Client::<Json>::builder()
        .tls_root_cert_der(der)
        .connect_ws(&format!(
            "wss://localhost:{}/nano",
            server.addr(Transport::WebSocketTls).unwrap().port()
        ))
        .await
        .unwrap();
    let v: Value = c.request("Lobby.Echo", &json!("wss")).await.unwrap();
    assert_eq!(v, json!("wss"));
}

#[tokio::test]
async fn graceful_shutdown_kicks_every_client() {
    let closed = Arc::new(AtomicUsize::new(0));
    let server = server().await;
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(connect(&server, if i % 2 == 0 { Via::Tcp } else { Via::Ws }).await);
    }
    let _ = closed.load(Ordering::SeqCst);
    timeout(T, server.shutdown())
        .await
        .expect("bounded shutdown");
    for c in &clients {
        let ev = timeout(T, c.closed()).await.unwrap();
        assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
    }
}

#[tokio::test]
async fn plain_http_and_origin_check_on_the_websocket_port() {
    let server = server_with(|a| {
        a.allowed_origins(["http://good.example"])
            .http_handler(|req| {
                (req.path == "/hello").then(|| nano::HttpResponse::ok("text/plain", "hi there"))
            })
    })
    .await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("hi there"));

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/nano").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "bad origin refused"
    );
    let mut req = format!("ws://{addr}/nano").into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://good.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn a_handshake_validator_can_refuse() {
    let server = server_with(|a| {
        a.handshake_validator(|hs| {
            if hs.user["token"] == "secret" {
                Ok(())
            } else {
                Err(nano::HandshakeRefusal {
                    code: 501,
                    reason: "bad token".into(),
                })
            }
        })
    })
    .await;
    let addr = server.addr(Transport::Tcp).unwrap();
    let refused = Client::<Json>::builder()
        .handshake_user(json!({"token": "wrong"}))
        .connect_tcp(addr)
        .await;
    assert!(
        matches!(refused, Err(ClientError::Handshake { code: 501, .. })),
        "{refused:?}"
    );
    let ws = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
    let refused = Client::<Json>::builder()
        .handshake_user(json!({"token": "wrong"}))
        .connect_ws(&ws)
        .await;
    assert!(matches!(
        refused,
        Err(ClientError::Handshake { code: 501, .. })
    ));
    let ok = Client::<Json>::builder()
        .handshake_user(json!({"token": "secret"}))
        .connect_tcp(addr)
        .await
        .unwrap();
    let v: Value = ok.request("Lobby.Echo", &json!(3)).await.unwrap();
    assert_eq!(v, json!(3));
}

#[tokio::test]
async fn the_connection_limit_is_enforced() {
    let server = server_with(|a| a.max_connections(2)).await;
    let a = connect(&server, Via::Tcp).await;
    let b = connect(&server, Via::Ws).await;
    let third = Client::<Json>::builder()
        .request_timeout(Duration::from_secs(3))
        .connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await;
    assert!(third.is_err(), "a third connection is refused");
    a.close().await;
    drop(a);
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Ok(c) = Client::<Json>::builder()
            .request_timeout(Duration::from_secs(3))
            .connect_tcp(server.addr(Transport::Tcp).unwrap())
            .await
        {
            let v: Value = c.request("Lobby.Echo", &json!(4)).await.unwrap();
            assert_eq!(v, json!(4));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v: Value = b.request("Lobby.Echo", &json!(5)).await.unwrap();
    assert_eq!(v, json!(5));
}

#[tokio::test]
async fn a_websocket_protocol_error_gets_a_close_frame() {
    let server = server().await;
    let url = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hs = Packet::new(
        PacketType::Handshake,
        json!({"sys": {"type": "raw"}}).to_string(),
    );
    ws.send(WsMessage::Binary(hs.encode().unwrap()))
        .await
        .unwrap();
    ws.send(WsMessage::Binary(
        Packet::new(PacketType::HandshakeAck, Bytes::new())
            .encode()
            .unwrap(),
    ))
    .await
    .unwrap();
    ws.send(WsMessage::Binary(Bytes::from_static(&[0x09, 0, 0, 1, 0])))
        .await
        .unwrap();
    let mut close = None;
    while let Some(Ok(m)) = timeout(T, ws.next()).await.unwrap() {
        if let WsMessage::Close(frame) = m {
            close = frame;
            break;
        }
    }
    let frame = close.expect("a close frame with a reason");
    assert_eq!(
        frame.code,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Protocol
    );
    assert!(!frame.reason.is_empty());
}
