//! Hardening of nano-core seen from real sockets on 127.0.0.1 (issue 9): route compression is
//! negotiated, never imposed (the chat example's pushes reach string-route-only and
//! pomelo-form clients with string routes, dictionary users with codes), and errors from
//! elsewhere reach clients as a generic NANO-500 while user codes pass through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano::prelude::*;
use nano::protocol::{
    DataPacketWriter, Dictionary, Message, MessageType, Packet, PacketCodec, PacketType,
};
use nano::{Client, ClientError, Server, Transport};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[path = "../examples/chat/room.rs"]
mod room;

/// Failure bound for every wait.
const T: Duration = Duration::from_secs(10);

/// The chat example's application (component, push routes, pipeline), on TCP port 0.
async fn chat_server() -> Server<Json> {
    let stats = Arc::new(room::Stats::default());
    nano::app()
        .component(room::Room::new(stats.clone(), Duration::from_secs(60)))
        .push_routes(["onMembers", "onNewUser", "onMessage", "onLeave"])
        .pipeline(|p| room::Room::count_traffic(&stats, p))
        .tcp("127.0.0.1:0")
        .start()
        .await
        .expect("server starts")
}

/// How a raw client writes routes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Routes {
    /// Always the string (a client that ignores the dictionary).
    Strings,
    /// nano's `dict` codes.
    NanoDict,
    /// pomelo 2.x's `routeToCode` codes.
    PomeloDict,
}

/// A pomelo-protocol client on a raw TCP socket, to see the bytes the server sends.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    routes: Routes,
    /// `sys` of the handshake response.
    sys: Value,
    next_id: u64,
}

impl Raw {
    async fn connect(server: &Server<Json>, routes: Routes) -> Raw {
        let addr = server.addr(Transport::Tcp).expect("tcp listener");
        let stream = timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            routes,
            sys: Value::Null,
            next_id: 1,
        };
        let hs = Packet::new(
            PacketType::Handshake,
            json!({"sys": {"type": "raw", "version": "0.0.1"}, "user": {}}).to_string(),
        );
        raw.send(&hs.encode().unwrap()).await;
        let p = raw.packet().await.expect("handshake response");
        assert_eq!(p.kind, PacketType::Handshake);
        let body: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body["code"], 200);
        raw.sys = body["sys"].clone();
        raw.send(
            &Packet::new(PacketType::HandshakeAck, Bytes::new())
                .encode()
                .unwrap(),
        )
        .await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(T, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// The next packet (heartbeats skipped), `None` when the server closed.
    async fn packet(&mut self) -> Option<Packet> {
        let mut codec = PacketCodec::new(nano::protocol::MAX_BODY_LEN);
        loop {
            if let Some(p) = codec.decode(&mut self.buf).expect("well-formed packets") {
                if p.kind == PacketType::Heartbeat {
                    continue;
                }
                return Some(p);
            }
            let n = timeout(T, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a packet in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// The dictionary this client writes codes from (`None` for string routes).
    fn dict(&self) -> Option<Dictionary> {
        let table = match self.routes {
            Routes::Strings => return None,
            Routes::NanoDict => &self.sys["dict"],
            Routes::PomeloDict => &self.sys["routeToCode"],
        };
        Some(Dictionary::from_json(table).expect("a route table"))
    }

    /// Sends a request (`Some(id)`) or a notify (`None`) to `route`.
    async fn message(&mut self, route: &str, payload: &Value) -> u64 {
        let dict = self.dict();
        let id = self.next_id;
        self.next_id += 1;
        let mut w = if route == "room.join" {
            DataPacketWriter::request(id, route, dict.as_ref()).unwrap()
        } else {
            DataPacketWriter::notify(route, dict.as_ref()).unwrap()
        };
        w.payload_mut()
            .extend_from_slice(payload.to_string().as_bytes());
        let packet = w.finish(64 * 1024).unwrap();
        let compressed = packet[4] & 0x01 == 0x01;
        assert_eq!(
            compressed,
            self.routes != Routes::Strings,
            "{:?}",
            self.routes
        );
        self.send(&packet).await;
        id
    }

    /// The next push: (route as sent, whether it was compressed, payload).
    async fn push(&mut self) -> (String, bool, Value) {
        loop {
            let p = self.packet().await.expect("a push before close");
            assert_eq!(p.kind, PacketType::Data);
            let compressed = p.body[0] & 0x01 == 0x01;
            // Decode with nano's `dict`: a code must be one of its codes.
            let dict = Dictionary::from_json(&self.sys["dict"]).unwrap();
            let m = Message::decode(p.body, Some(&dict)).expect("decodable");
            if m.kind != MessageType::Push {
                continue;
            }
            let route = m.route.expect("a push has a route").to_string();
            return (
                route,
                compressed,
                serde_json::from_slice(&m.payload).unwrap(),
            );
        }
    }

    /// Joins the room and reads the answer and the `onMembers` push.
    async fn join(&mut self) -> (bool, Value) {
        let id = self.message("room.join", &json!({})).await;
        let mut members = None;
        let mut answered = false;
        while members.is_none() || !answered {
            let p = self.packet().await.expect("join answered");
            let compressed = p.body[0] & 0x01 == 0x01;
            let dict = Dictionary::from_json(&self.sys["dict"]).unwrap();
            let m = Message::decode(p.body, Some(&dict)).unwrap();
            match m.kind {
                MessageType::Response => {
                    assert_eq!(m.id, id);
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    assert_eq!(v, json!({"code": 0, "result": "success"}));
                    answered = true;
                }
                MessageType::Push => {
                    assert_eq!(m.route.as_deref(), Some("onMembers"));
                    members = Some((compressed, serde_json::from_slice(&m.payload).unwrap()));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        members.unwrap()
    }
}

#[tokio::test]
async fn the_handshake_offers_the_dictionary_in_nano_and_pomelo_forms_that_agree() {
    let server = chat_server().await;
    let raw = Raw::connect(&server, Routes::Strings).await;
    let sys = &raw.sys;
    let dict = sys["dict"].as_object().expect("nano's dict");
    assert!(dict.contains_key("room.join") && dict.contains_key("onMessage"));
    assert_eq!(sys["useDict"], true);
    let route_to_code = sys["routeToCode"].as_object().expect("routeToCode");
    let code_to_route = sys["codeToRoute"].as_object().expect("codeToRoute");
    // The same routes in both forms; codeToRoute inverts routeToCode; every pomelo code is
    // nano's code for the same route with the pomelo bit set.
    assert_eq!(
        route_to_code.keys().collect::<Vec<_>>(),
        dict.keys().collect::<Vec<_>>()
    );
    assert_eq!(code_to_route.len(), route_to_code.len());
    for (route, code) in route_to_code {
        let code = code.as_u64().unwrap();
        assert_eq!(code_to_route[&code.to_string()], route.as_str());
        assert_eq!(
            code,
            dict[route].as_u64().unwrap() | u64::from(Dictionary::POMELO_CODE_BIT)
        );
    }
    // dictVersion is stable: another server with the same routes announces the same one.
    let version = sys["dictVersion"].as_str().expect("dictVersion");
    assert!(!version.is_empty());
    let again = Raw::connect(&chat_server().await, Routes::Strings).await;
    assert_eq!(again.sys["dictVersion"], version);
    // ... and a different set of routes gets a different one.
    let other = nano::app()
        .component(room::Room::new(
            Arc::new(room::Stats::default()),
            Duration::from_secs(60),
        ))
        .push_routes(["onTyping"])
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let other = Raw::connect(&other, Routes::Strings).await;
    assert_ne!(other.sys["dictVersion"], version);
}

#[tokio::test]
async fn string_route_clients_read_every_chat_push_with_string_routes_while_dict_users_get_codes() {
    let server = chat_server().await;
    let mut a = Raw::connect(&server, Routes::Strings).await;
    let (compressed, members) = a.join().await;
    assert!(!compressed, "onMembers with a string route");
    assert_eq!(members, json!({"members": []}));

    let mut d = Raw::connect(&server, Routes::NanoDict).await;
    let (compressed, members) = d.join().await;
    assert!(
        compressed,
        "a client that sent a dict code gets compressed routes"
    );
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    // a is told of the new user with a string route (the same broadcast d's peers get).
    let (route, compressed, v) = a.push().await;
    assert_eq!((route.as_str(), compressed), ("onNewUser", false));
    assert!(v["content"].as_str().unwrap().starts_with("New user: "));

    let mut p = Raw::connect(&server, Routes::PomeloDict).await;
    let (compressed, _) = p.join().await;
    assert!(
        !compressed,
        "a pomelo-form client compresses its requests but gets string routes"
    );
    for c in [&mut a, &mut d] {
        let (route, compressed, _) = c.push().await;
        assert_eq!(route, "onNewUser");
        assert_eq!(compressed, c.routes == Routes::NanoDict, "{:?}", c.routes);
    }

    // One broadcast, two encodings: codes for d, strings for a and p.
    let hello = json!({"name": "ann", "content": "hello"});
    a.message("room.message", &hello).await;
    for c in [&mut a, &mut d, &mut p] {
        let (route, compressed, v) = c.push().await;
        assert_eq!(route, "onMessage");
        assert_eq!(v, hello);
        assert_eq!(compressed, c.routes == Routes::NanoDict, "{:?}", c.routes);
    }
    // The pomelo-form client's notify (a pomelo code) reached the handler too.
    let bye = json!({"name": "py", "content": "bye"});
    p.message("room.message", &bye).await;
    for c in [&mut a, &mut d, &mut p] {
        let (route, compressed, v) = c.push().await;
        assert_eq!((route.as_str(), v), ("onMessage", bye.clone()));
        assert_eq!(compressed, c.routes == Routes::NanoDict);
    }
    // d leaves: the session-closed callback's onLeave reaches a with a string route.
    drop(d);
    let (route, compressed, _) = a.push().await;
    assert_eq!((route.as_str(), compressed), ("onLeave", false));
    let (route, compressed, _) = p.push().await;
    assert_eq!((route.as_str(), compressed), ("onLeave", false));
}

// ---------------------------------------------------------------------------------------------
// Errors.

struct Vault;

#[component]
impl Vault {
    /// Fails with an I/O error whose text names a secret path.
    pub fn read(&mut self, _s: &Session) -> Result<String> {
        let text = std::fs::read_to_string("/nonexistent/secret-dir/db-password.txt")?;
        Ok(text)
    }

    /// Fails with a parse error from any other library, through `or_internal`.
    pub fn parse(&mut self, _s: &Session, v: String) -> Result<u8> {
        let n: u64 = v.parse()?;
        u8::try_from(n).or_internal()
    }

    /// A user-coded error.
    pub fn full(&mut self, _s: &Session) -> Result<()> {
        Err(Error::new("GAME-001", "room is full").with_metadata("room", "lobby"))
    }
}

#[tokio::test]
async fn errors_from_elsewhere_reach_clients_as_a_generic_nano_500_and_user_codes_pass_through() {
    let server = nano::app()
        .component(Vault)
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let client: Client = timeout(T, Client::connect_tcp(server.addr(Transport::Tcp).unwrap()))
        .await
        .unwrap()
        .unwrap();
    let server_error = |r: std::result::Result<Value, ClientError>| match r {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected an error response, got {other:?}"),
    };
    let e = server_error(
        timeout(T, client.request::<_, Value>("Vault.Read", &json!({})))
            .await
            .unwrap(),
    );
    assert_eq!(e.code(), "NANO-500");
    assert_eq!(e.message(), "internal error");
    assert!(!format!("{e:?}").contains("secret"), "{e:?}");
    assert!(e.metadata().is_empty());

    for input in ["\"abc\"", "\"300\""] {
        let e = server_error(
            timeout(T, client.request_raw("Vault.Parse", input.as_bytes()))
                .await
                .unwrap()
                .map(|p| serde_json::from_slice::<Value>(&p).unwrap()),
        );
        assert_eq!((e.code(), e.message()), ("NANO-500", "internal error"));
    }
    let ok: u8 = timeout(T, client.request("Vault.Parse", &"42"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok, 42);

    let e = server_error(
        timeout(T, client.request::<_, Value>("Vault.Full", &json!({})))
            .await
            .unwrap(),
    );
    assert_eq!((e.code(), e.message()), ("GAME-001", "room is full"));
    assert_eq!(
        e.metadata(),
        &BTreeMap::from([("room".to_string(), "lobby".to_string())])
    );
}

#[test]
fn nano_errors_are_std_errors_so_question_mark_works_into_anyhow() {
    fn handler_like() -> nano::Result<()> {
        Err(Error::new("GAME-002", "no such item"))
    }
    fn app() -> anyhow::Result<()> {
        handler_like()?;
        Ok(())
    }
    let e = app().unwrap_err();
    let nano_error = e.downcast_ref::<Error>().expect("a nano::Error inside");
    assert_eq!(nano_error.code(), "GAME-002");
    assert_eq!(e.to_string(), "GAME-002: no such item");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::internal("x"));
    assert_eq!(boxed.to_string(), "NANO-500: x");

    // Conversions from other errors carry no detail.
    let io = std::io::Error::other("/home/game/.secrets");
    let e: Error = io.into();
    assert_eq!((e.code(), e.message()), ("NANO-500", "internal error"));
    let json: Error = serde_json::from_str::<Value>("{").unwrap_err().into();
    assert_eq!(json.message(), "internal error");
}
