//! End to end over real sockets on 127.0.0.1, TCP and WebSocket, with the Rust client and with
//! raw sockets for what a well-behaved client never sends.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use nano::prelude::*;
use nano::protocol::{Message, MessageType, Packet, PacketType};
use nano::{Client, ClientError, Server, TlsConfig, Transport};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

mod common;

use common::{request_packet, Raw, Via, BOTH, T};

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

    pub fn leave_now(&mut self, s: &Session) -> Result<()> {
        s.kick();
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

async fn raw(server: &Server<Json>, via: Via) -> Raw {
    match via {
        Via::Tcp => Raw::tcp(server.addr(Transport::Tcp).unwrap()).await,
        Via::Ws => {
            Raw::ws(&format!(
                "ws://{}/nano",
                server.addr(Transport::WebSocket).unwrap()
            ))
            .await
        }
    }
}

#[tokio::test]
async fn a_hundred_pipelined_requests_in_one_write_are_all_answered_in_order() {
    let server = server().await;
    for via in BOTH {
        let mut raw = raw(&server, via).await;
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
            let p = raw.next().await.unwrap();
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
        let mut raw = raw(&server, via).await;
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
            let p = raw.next().await.unwrap();
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
            let mut raw = raw(&server, via).await;
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
        let mut raw = raw(&server, via).await;
        raw.handshake().await;
        // Only the header: the server must not wait for 16 MiB before refusing.
        raw.send(&[0x04, 0x10, 0x00, 0x00]).await; // 1 MiB announced
        raw.until_closed().await;
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

#[tokio::test]
async fn handshake_timeout_and_data_before_ack_close_the_connection() {
    let hs_timeout = Duration::from_millis(300);
    let server = server_with(|a| a.handshake_timeout(hs_timeout)).await;
    for via in BOTH {
        // Nothing at all: closed after the handshake timeout, not before, not much after.
        let mut silent = raw(&server, via).await;
        let started = std::time::Instant::now();
        assert!(silent.until_closed().await.is_empty(), "{via:?}");
        let waited = started.elapsed();
        assert!(
            waited >= hs_timeout - Duration::from_millis(50),
            "{via:?}: closed after {waited:?}, before the handshake timeout"
        );
        assert!(waited < Duration::from_secs(5), "{via:?}: {waited:?}");

        // Handshake answered, then a Data packet before the HandshakeAck.
        let mut eager = raw(&server, via).await;
        let hs = eager.handshake_only().await;
        assert_eq!(hs["code"], 200, "{via:?}");
        eager
            .send(&request_packet(1, "Lobby.Echo", b"1", None))
            .await;
        let seen = eager.until_closed().await;
        assert!(
            seen.iter().all(|p| p.kind != PacketType::Data),
            "{via:?}: data before the ack is not served: {seen:?}"
        );
    }
}

/// A raw client that never heartbeats: the server sends a heartbeat each interval, then, after
/// two of them, a Kick packet no earlier than two intervals after the client's last packet
/// (and not much later), then closes.
async fn kicked_for_silence(server: &Server<Json>, via: Via, interval: Duration) {
    let mut raw = raw(server, via).await;
    raw.handshake().await;
    let last_sent = std::time::Instant::now(); // the HandshakeAck
    let mut heartbeats = 0;
    let kick = loop {
        let p = raw.next().await.expect("a Kick before the close");
        match p.kind {
            PacketType::Heartbeat => heartbeats += 1,
            PacketType::Kick => break p,
            other => panic!("{via:?}: unexpected {other:?}"),
        }
    };
    let silent_for = last_sent.elapsed();
    assert!(
        silent_for >= 2 * interval - Duration::from_millis(150),
        "{via:?}: kicked after {silent_for:?} of silence, before two intervals of {interval:?}"
    );
    assert!(
        silent_for < 3 * interval + Duration::from_secs(2),
        "{via:?}: kicked only after {silent_for:?}"
    );
    // One heartbeat per interval while silent: the kick comes after two of them.
    assert!(
        heartbeats >= 2,
        "{via:?}: kicked after {heartbeats} heartbeat(s), {silent_for:?} of silence"
    );
    let body: Value = serde_json::from_slice(&kick.body).unwrap();
    assert_eq!(body["reason"], "heartbeat timeout", "{via:?}");
    assert!(
        raw.until_closed().await.is_empty(),
        "{via:?}: closed after the kick"
    );
}

/// A raw client that answers every heartbeat stays through `n` of them (more than two
/// intervals) and is still served.
async fn kept_while_heartbeating(server: &Server<Json>, via: Via, n: usize) {
    let mut raw = raw(server, via).await;
    raw.handshake().await;
    let heartbeat = Packet::heartbeat().encode().unwrap();
    for _ in 0..n {
        let p = raw.next().await.expect("still connected");
        assert_eq!(p.kind, PacketType::Heartbeat, "{via:?}: {p:?}");
        raw.send(&heartbeat).await;
    }
    raw.send(&request_packet(1, "Lobby.Echo", b"2", None)).await;
    let p = raw.next_non_heartbeat().await.expect("answered");
    let m = Message::decode(p.body, None).unwrap();
    assert_eq!((m.id, &m.payload[..]), (1, &b"2"[..]), "{via:?}");
}

#[tokio::test]
async fn a_silent_client_is_kicked_after_two_heartbeats() {
    let interval = Duration::from_secs(1);
    let server = server_with(|a| a.heartbeat(Some(interval))).await;
    let hs = raw(&server, Via::Tcp).await.handshake().await;
    assert_eq!(hs["sys"]["heartbeat"], 1, "the interval is announced");
    tokio::join!(
        kicked_for_silence(&server, Via::Tcp, interval),
        kicked_for_silence(&server, Via::Ws, interval),
        kept_while_heartbeating(&server, Via::Tcp, 3),
        kept_while_heartbeating(&server, Via::Ws, 3),
    );
}

/// Opens a raw TCP connection and sends a Handshake: the connection when it is answered,
/// `None` when the server closes it without a packet (within the bound).
async fn admitted(server: &Server<Json>) -> Option<Raw> {
    let mut raw = raw(server, Via::Tcp).await;
    let hs = Packet::new(PacketType::Handshake, r#"{"sys":{"type":"raw"}}"#);
    raw.send(&hs.encode().unwrap()).await;
    let p = raw.next().await?;
    assert_eq!(p.kind, PacketType::Handshake, "{p:?}");
    Some(raw)
}

#[tokio::test]
async fn the_connection_limit_is_enforced() {
    let server = server_with(|a| a.max_connections(2)).await;
    let a = connect(&server, Via::Tcp).await;
    let b = connect(&server, Via::Ws).await;
    for _ in 0..3 {
        // Closed by the server at once (`admitted` fails the test if it hangs).
        let started = std::time::Instant::now();
        assert!(
            admitted(&server).await.is_none(),
            "a third connection is refused"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "refused only after {took:?}");
    }
    assert_eq!(server.connections(), 2);
    a.close().await;
    drop(a);
    // The slot is freed once a's task ends; every refused attempt is closed by the server
    // (an event), so this loop is paced by the server, bounded by T.
    let mut c = timeout(T, async {
        loop {
            if let Some(c) = admitted(&server).await {
                break c;
            }
        }
    })
    .await
    .expect("the slot left by a is given to a new connection");
    c.send(
        &Packet::new(PacketType::HandshakeAck, Bytes::new())
            .encode()
            .unwrap(),
    )
    .await;
    c.send(&request_packet(1, "Lobby.Echo", b"4", None)).await;
    let p = c
        .next_non_heartbeat()
        .await
        .expect("the newcomer is served");
    let m = Message::decode(p.body, None).unwrap();
    assert_eq!((m.id, &m.payload[..]), (1, &b"4"[..]));
    let v: Value = b.request("Lobby.Echo", &json!(5)).await.unwrap();
    assert_eq!(v, json!(5));
}

/// A kick without a reason still carries a JSON object (`{}`): go-nano's JS client parses the
/// Kick body as JSON without a guard and throws on an empty one.
#[tokio::test]
async fn a_kick_without_a_reason_sends_an_empty_json_object() {
    let server = server().await;
    for via in [Via::Tcp, Via::Ws] {
        let mut raw = raw(&server, via).await;
        raw.handshake().await;
        raw.send(&request_packet(1, "Lobby.LeaveNow", b"{}", None))
            .await;
        let kick = loop {
            let p = raw.next().await.expect("a Kick before the close");
            match p.kind {
                PacketType::Kick => break p,
                PacketType::Heartbeat | PacketType::Data => {}
                other => panic!("{via:?}: unexpected {other:?}"),
            }
        };
        assert_eq!(&kick.body[..], b"{}", "{via:?}");
        assert!(
            raw.until_closed().await.is_empty(),
            "{via:?}: closed after the kick"
        );
    }
}
