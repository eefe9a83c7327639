//! Tests of `nano_net::client` against small fake servers (tokio + `nano_core::protocol`)
//! listening on 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use nano_core::protocol::{
    encode_packet, Dictionary, Message, MessageType, Packet, PacketCodec, PacketType,
};
use nano_net::client::{Client, ClientError, ClientEvent};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every test finishes well within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `fut`, failing the test if it takes longer than [`TEST_TIMEOUT`].
async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test timed out")
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The bytes of a whole packet.
fn packet(kind: PacketType, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(kind, body, &mut out).unwrap();
    out.to_vec()
}

/// The bytes of a data packet holding `msg`.
fn data(msg: &Message, dict: Option<&Dictionary>) -> Vec<u8> {
    let mut out = BytesMut::new();
    msg.encode_packet(dict, &mut out).unwrap();
    out.to_vec()
}

/// The server side of one connection over a byte stream.
struct FakeConn<T> {
    io: T,
    buf: BytesMut,
    codec: PacketCodec,
}

impl<T: AsyncRead + AsyncWrite + Unpin> FakeConn<T> {
    fn new(io: T) -> Self {
        FakeConn {
            io,
            buf: BytesMut::new(),
            codec: PacketCodec::default(),
        }
    }

    /// The next packet, `None` at end of stream.
    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            self.buf.reserve(4096);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next data message, skipping heartbeats.
    async fn read_message(&mut self, dict: Option<&Dictionary>) -> Message {
        loop {
            let p = self.read_packet().await.expect("connection ended");
            match p.kind {
                PacketType::Heartbeat => continue,
                PacketType::Data => return Message::decode(p.body, dict).unwrap(),
                other => panic!("unexpected {other:?} packet"),
            }
        }
    }

    /// Exactly `n` raw bytes.
    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.buf.reserve(4096);
            assert_ne!(self.io.read_buf(&mut self.buf).await.unwrap(), 0, "eof");
        }
        self.buf.split_to(n).to_vec()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Reads the client's handshake, answers `answer`, reads the ack (when the answer is
    /// 200). Returns the client's handshake JSON.
    async fn handshake(&mut self, answer: &Value) -> Value {
        let hs = self.read_packet().await.expect("no handshake");
        assert_eq!(hs.kind, PacketType::Handshake);
        let client_hs: Value = serde_json::from_slice(&hs.body).unwrap();
        self.send(&packet(
            PacketType::Handshake,
            answer.to_string().as_bytes(),
        ))
        .await;
        if answer["code"] == 200 {
            let ack = self.read_packet().await.expect("no handshake ack");
            assert_eq!(ack.kind, PacketType::HandshakeAck);
            assert!(ack.body.is_empty());
        }
        client_hs
    }

    /// Waits for the client to close the connection (EOF), skipping what it sends.
    async fn wait_eof(&mut self) {
        while self.read_packet().await.is_some() {}
    }
}

/// Listens on 127.0.0.1 and runs `server` on the first connection accepted, in a task.
async fn serve_one<F, Fut>(server: F) -> (SocketAddr, tokio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let (listener, addr) = listen().await;
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server(tcp).await
    });
    (addr, task)
}

/// Performs the server side of the handshake with `answer` on an accepted connection.
async fn handshaken(tcp: TcpStream, answer: &Value) -> (FakeConn<TcpStream>, Value) {
    let mut conn = FakeConn::new(tcp);
    let client_hs = conn.handshake(answer).await;
    (conn, client_hs)
}

fn ok_answer() -> Value {
    json!({"code": 200, "sys": {"heartbeat": 0}})
}

/// A fake server on a fresh port that runs `server` on the first connection after a
/// handshake with `answer`; returns its address and join handle.
async fn fake_server<F, Fut>(answer: Value, server: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(FakeConn<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    serve_one(move |tcp| async move {
        let (conn, _) = handshaken(tcp, &answer).await;
        server(conn).await;
    })
    .await
}

#[tokio::test]
async fn handshake_fields_are_sent_and_parsed() {
    bounded(async {
        let answer = json!({
            "code": 200,
            "sys": {
                "heartbeat": 30,
                "dict": {"Room.Join": 1, "onMessage": 2},
                "serializer": "protobuf"
            },
            "user": {"motd": "hi"}
        });
        let (addr, server) =
            serve_one(move |tcp| async move { handshaken(tcp, &answer).await }).await;
        let client: Client = Client::builder()
            .handshake_user(json!({"token": "abc"}))
            .connect_tcp(addr)
            .await
            .unwrap();
        let (_conn, client_hs) = server.await.unwrap();

        assert_eq!(client_hs["sys"]["type"], "rust-tcp");
        assert_eq!(client_hs["sys"]["version"], "0.1.0");
        assert_eq!(client_hs["user"], json!({"token": "abc"}));

        let hs = client.handshake();
        assert_eq!(hs.code, 200);
        assert_eq!(hs.heartbeat, Some(Duration::from_secs(30)));
        assert_eq!(hs.serializer.as_deref(), Some("protobuf"));
        let dict = hs.dict.as_ref().expect("dict");
        assert_eq!(dict.code("Room.Join"), Some(1));
        assert_eq!(dict.route(2).unwrap(), "onMessage");
        assert_eq!(hs.raw["user"]["motd"], "hi");
        assert!(!client.is_closed());
    })
    .await;
}

#[tokio::test]
async fn handshake_without_sys_or_with_empty_dict() {
    bounded(async {
        for answer in [
            json!({"code": 200}),
            json!({"code": 200, "sys": {"heartbeat": 0, "dict": {}}}),
        ] {
            let (addr, _server) =
                fake_server(answer, |mut c| async move { c.wait_eof().await }).await;
            let client: Client = Client::connect_tcp(addr).await.unwrap();
            let hs = client.handshake();
            assert_eq!(hs.heartbeat, None);
            assert!(hs.dict.is_none());
            assert_eq!(hs.serializer, None);
        }
    })
    .await;
}

#[tokio::test]
async fn refused_handshake_is_an_error() {
    bounded(async {
        let answer = json!({"code": 501});
        let (addr, _server) = fake_server(answer, |_conn| async {}).await;
        let err = Client::<nano_core::Json>::connect_tcp(addr)
            .await
            .unwrap_err();
        match err {
            ClientError::Handshake { code, body } => {
                assert_eq!(code, 501);
                assert_eq!(body, json!({"code": 501}));
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_handshake_answers_are_protocol_errors() {
    bounded(async {
        let bodies: [&[u8]; 5] = [
            b"not json",
            b"{\"sys\":{}}",
            b"{\"code\":70000}",
            b"{\"code\":200,\"sys\":{\"dict\":[1]}}",
            b"{\"code\":200,\"sys\":{\"heartbeat\":-1}}",
        ];
        for body in bodies {
            let body = body.to_vec();
            let (addr, _server) = serve_one(move |tcp| async move {
                let mut conn = FakeConn::new(tcp);
                conn.read_packet().await.unwrap();
                conn.send(&packet(PacketType::Handshake, &body)).await;
                conn.wait_eof().await;
            })
            .await;
            let err = Client::<nano_core::Json>::connect_tcp(addr)
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn server_hanging_up_during_handshake() {
    bounded(async {
        let (addr, _server) = serve_one(move |tcp| async move {
            drop(tcp);
        })
        .await;
        let err = Client::<nano_core::Json>::connect_tcp(addr)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Closed | ClientError::Io(_)),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn silent_server_times_out_the_connect() {
    bounded(async {
        let (addr, _server) = serve_one(move |tcp| async move {
            let _hold = tcp;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let err = Client::<nano_core::Json>::builder()
            .request_timeout(Duration::from_millis(200))
            .connect_tcp(addr)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn responses_are_matched_by_id_out_of_order() {
    bounded(async {
        let (addr, server) = fake_server(ok_answer(), |mut conn| async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let msg = conn.read_message(None).await;
                assert_eq!(msg.kind, MessageType::Request);
                let payload: Value = serde_json::from_slice(&msg.payload).unwrap();
                seen.push((msg.id, msg.route.unwrap().to_string(), payload));
            }
            let mut ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2, 3], "ids start at 1");
            // Answer in reverse order of arrival.
            for (id, route, payload) in seen.into_iter().rev() {
                let body = json!({"id": id, "route": route, "n": payload["n"]});
                conn.send(&data(&Message::response(id, body.to_string()), None))
                    .await;
            }
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let calls = (0..3).map(|n| {
            let client = client.clone();
            async move {
                let v: Value = client.request("Room.Echo", &json!({"n": n})).await.unwrap();
                (n, v)
            }
        });
        let results = futures_util::future::join_all(calls).await;
        for (n, v) in results {
            assert_eq!(v["n"], n);
            assert_eq!(v["route"], "Room.Echo");
        }
        client.close().await;
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_requests_from_many_tasks() {
    const N: u64 = 2000;
    bounded(async {
        let (addr, server) = fake_server(ok_answer(), |mut conn| async move {
            let mut out = Vec::new();
            for _ in 0..N {
                let msg = conn.read_message(None).await;
                // Echo the payload; answers go out in ~4 KiB batches.
                out.extend(data(&Message::response(msg.id, msg.payload), None));
                if out.len() > 4096 {
                    conn.send(&out).await;
                    out.clear();
                }
            }
            conn.send(&out).await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(async move {
                    let v: u64 = client.request("Echo.Num", &n).await.unwrap();
                    assert_eq!(v, n);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        client.close().await;
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn request_raw_round_trip() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            let msg = conn.read_message(None).await;
            assert_eq!(&msg.payload[..], b"\x00\x01raw");
            conn.send(&data(&Message::response(msg.id, &b"\xffpong"[..]), None))
                .await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let reply = client
            .request_raw("Raw.Ping", b"\x00\x01raw")
            .await
            .unwrap();
        assert_eq!(&reply[..], b"\xffpong");
    })
    .await;
}

#[tokio::test]
async fn error_response_is_a_server_error() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            let msg = conn.read_message(None).await;
            let err =
                json!({"code": "GAME-001", "msg": "room is full", "metadata": {"room": "lobby"}});
            conn.send(&data(
                &Message::error_response(msg.id, err.to_string()),
                None,
            ))
            .await;
            let msg = conn.read_message(None).await;
            conn.send(&data(&Message::error_response(msg.id, "garbage"), None))
                .await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let err = client
            .request::<_, Value>("Room.Join", &json!({}))
            .await
            .unwrap_err();
        let ClientError::Server(e) = err else {
            panic!("expected a server error, got {err:?}");
        };
        assert_eq!(e.code(), "GAME-001");
        assert_eq!(e.message(), "room is full");
        assert_eq!(e.metadata().get("room").map(String::as_str), Some("lobby"));

        // An undecodable error object is a decode error, not a panic.
        let err = client.request_raw("Room.Join", b"{}").await.unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
        assert!(!client.is_closed());
    })
    .await;
}

#[tokio::test]
async fn undecodable_response_is_a_decode_error() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            let msg = conn.read_message(None).await;
            conn.send(&data(&Message::response(msg.id, "{\"a\":1}"), None))
                .await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let err = client.request::<_, Vec<u32>>("A.B", &()).await.unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn request_timeout_then_late_answer_is_ignored() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            let first = conn.read_message(None).await;
            assert_eq!(first.id, 1);
            let second = conn.read_message(None).await;
            assert_eq!(second.id, 2);
            // The late answer to 1, then the answer to 2.
            conn.send(&data(&Message::response(1, "\"late\""), None))
                .await;
            conn.send(&data(&Message::response(2, "\"second\""), None))
                .await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::builder()
            .request_timeout(Duration::from_millis(200))
            .connect_tcp(addr)
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = client
            .request::<_, Value>("Slow.Op", &())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let v: String = client.request("Fast.Op", &()).await.unwrap();
        assert_eq!(v, "second");
        assert!(!client.is_closed());
    })
    .await;
}

#[tokio::test]
async fn notify_and_request_bytes_on_the_wire() {
    bounded(async {
        let answer = json!({"code": 200, "sys": {"dict": {"Room.Join": 1}}});
        let (addr, server) =
            serve_one(move |tcp| async move { handshaken(tcp, &answer).await.0 }).await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let mut conn = server.await.unwrap();
        let dict = client.handshake().dict.clone().unwrap();

        // Notify, uncompressed route (not in the dictionary).
        client
            .notify("Chat.Say", &json!({"text": "hi"}))
            .await
            .unwrap();
        let expected = b"\x04\x00\x00\x17\x02\x08Chat.Say{\"text\":\"hi\"}";
        let wire = conn.read_exact(expected.len()).await;
        assert_eq!(wire, expected);
        let msg = Message::decode(Bytes::copy_from_slice(&wire[4..]), Some(&dict)).unwrap();
        assert_eq!(msg.kind, MessageType::Notify);
        assert_eq!(msg.route.unwrap(), "Chat.Say");
        assert_eq!(msg.route_code, None);
        assert_eq!(&msg.payload[..], b"{\"text\":\"hi\"}");

        // Raw notify to a route in the dictionary: compressed (flag 0x03, code 0x0001).
        client.notify_raw("Room.Join", b"xyz").await.unwrap();
        let expected = b"\x04\x00\x00\x06\x03\x00\x01xyz";
        assert_eq!(conn.read_exact(expected.len()).await, expected);

        // Request to a route in the dictionary: flag 0x01, id 1, code 0x0001.
        let c = client.clone();
        let pending =
            tokio::spawn(async move { c.request::<_, Value>("Room.Join", &[1, 2]).await });
        let expected = b"\x04\x00\x00\x09\x01\x01\x00\x01[1,2]";
        let wire = conn.read_exact(expected.len()).await;
        assert_eq!(wire, expected);
        let msg = Message::decode(Bytes::copy_from_slice(&wire[4..]), Some(&dict)).unwrap();
        assert_eq!(
            (msg.kind, msg.id, msg.route_code),
            (MessageType::Request, 1, Some(1))
        );
        conn.send(&data(&Message::response(1, "{}"), None)).await;
        assert_eq!(pending.await.unwrap().unwrap(), json!({}));

        // send_raw is verbatim.
        client
            .send_raw(Bytes::from_static(b"\x04\x00\x00\x02\x00\x01"))
            .await
            .unwrap();
        assert_eq!(conn.read_exact(6).await, b"\x04\x00\x00\x02\x00\x01");

        // Routes over 255 bytes cannot be encoded; nothing is sent.
        let long = "x".repeat(300);
        let err = client.notify(&long, &()).await.unwrap_err();
        assert!(matches!(err, ClientError::Encode(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn oversized_outgoing_packet_is_refused() {
    bounded(async {
        let (addr, _server) =
            fake_server(ok_answer(), |mut c| async move { c.wait_eof().await }).await;
        let client: Client = Client::builder()
            .max_packet_size(64)
            .connect_tcp(addr)
            .await
            .unwrap();
        client.notify_raw("A.B", &[0; 59]).await.unwrap();
        let err = client.notify_raw("A.B", &[0; 60]).await.unwrap_err();
        let ClientError::Encode(e) = err else {
            panic!("expected an encode error, got {err:?}");
        };
        assert_eq!(e.code(), "NANO-413");
    })
    .await;
}

#[tokio::test]
async fn pushes_reach_their_subscribers() {
    bounded(async {
        let answer = json!({"code": 200, "sys": {"dict": {"onMessage": 7}}});
        let (addr, server) = fake_server(answer, |mut conn| async move {
            // The client notifies once it has subscribed.
            let ready = conn.read_message(None).await;
            assert_eq!(ready.route.unwrap(), "Ready");
            conn.send(&data(&Message::push("onChat", "{\"text\":\"a\"}"), None))
                .await;
            // A compressed push: flag 0x07 (push, route compressed), code 7.
            conn.send(&packet(PacketType::Data, b"\x07\x00\x07{\"text\":\"b\"}"))
                .await;
            conn.send(&data(&Message::push("onOther", "1"), None)).await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let mut chat1 = client.on("onChat");
        let mut chat2 = client.on("onChat");
        let mut messages = client.on("onMessage");
        let mut all = client.on_any();
        let dropped = client.on("onOther");
        drop(dropped);
        client.notify("Ready", &()).await.unwrap();

        assert_eq!(&chat1.recv().await.unwrap()[..], b"{\"text\":\"a\"}");
        assert_eq!(&chat2.recv().await.unwrap()[..], b"{\"text\":\"a\"}");
        let b = messages.recv().await.unwrap();
        let v: Value = client.decode(&b).unwrap();
        assert_eq!(v["text"], "b");

        let mut seen = Vec::new();
        for _ in 0..3 {
            let (route, payload) = all.recv().await.unwrap();
            seen.push((route, payload.to_vec()));
        }
        assert_eq!(
            seen,
            [
                ("onChat".to_owned(), b"{\"text\":\"a\"}".to_vec()),
                ("onMessage".to_owned(), b"{\"text\":\"b\"}".to_vec()),
                ("onOther".to_owned(), b"1".to_vec()),
            ]
        );
        assert!(chat1.try_recv().is_err());

        // When the connection ends, the streams end.
        client.close().await;
        assert_eq!(chat1.recv().await, None);
        assert_eq!(all.recv().await, None);
        assert_eq!(client.on("onChat").recv().await, None);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn kick_with_reason_fails_pending_requests() {
    bounded(async {
        let (addr, server) = fake_server(ok_answer(), |mut conn| async move {
            let msg = conn.read_message(None).await;
            assert_eq!(msg.kind, MessageType::Request);
            conn.send(&packet(PacketType::Kick, b"{\"reason\":\"bye\"}"))
                .await;
            // The server closes right after the kick.
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let mut pushes = client.on("onChat");
        let c = client.clone();
        let pending = tokio::spawn(async move { c.request::<_, Value>("Room.Join", &()).await });
        assert_eq!(
            client.closed().await,
            ClientEvent::Kicked {
                reason: Some("bye".into())
            }
        );
        let err = pending.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert!(client.is_closed());
        let err = client
            .request::<_, Value>("Room.Join", &())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        let err = client.notify("Room.Say", &()).await.unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert_eq!(pushes.recv().await, None);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn nano_style_empty_kick() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            conn.send(&packet(PacketType::Kick, b"")).await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        assert_eq!(client.closed().await, ClientEvent::Kicked { reason: None });
    })
    .await;
}

#[tokio::test]
async fn server_eof_is_disconnected() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |conn| async move { drop(conn) }).await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        assert_eq!(client.closed().await, ClientEvent::Disconnected);
        // `closed` keeps answering.
        assert_eq!(client.closed().await, ClientEvent::Disconnected);
    })
    .await;
}

#[tokio::test]
async fn malformed_packets_from_the_server_end_the_connection() {
    bounded(async {
        let cases: [&[u8]; 7] = [
            b"\x09\x00\x00\x00",             // unknown packet type
            b"\x04\x00\x00\x00",             // empty data packet
            b"\x04\x00\x00\x02\x00\x01",     // a request with no route length
            b"\x04\x00\x00\x02\x07\x00",     // push with compressed route, one code byte
            b"\x04\x00\x00\x03\x07\x00\x09", // compressed push, no dictionary
            b"\x04\x00\x00\x01\x0e",         // message type 7
            b"\x01\x00\x00\x02{}",           // a second handshake
        ];
        for case in cases {
            let bytes = case.to_vec();
            let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
                let _ = conn.read_message(None).await;
                conn.send(&bytes).await;
                conn.wait_eof().await;
            })
            .await;
            let client: Client = Client::connect_tcp(addr).await.unwrap();
            let err = client.request::<_, Value>("A.B", &()).await.unwrap_err();
            assert!(matches!(err, ClientError::Closed), "{case:?}: {err:?}");
            let event = client.closed().await;
            assert!(
                matches!(event, ClientEvent::Error(_)),
                "{case:?}: {event:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn oversized_incoming_packet_ends_the_connection() {
    bounded(async {
        let (addr, _server) = fake_server(ok_answer(), |mut conn| async move {
            // Announces 16 MiB − 1: refused from the header alone.
            conn.send(b"\x04\xff\xff\xff").await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::builder()
            .max_packet_size(1024)
            .connect_tcp(addr)
            .await
            .unwrap();
        let event = client.closed().await;
        assert!(
            matches!(event, ClientEvent::Error(ref e) if e.contains("limit")),
            "{event:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn close_flushes_and_ends_the_stream() {
    bounded(async {
        let (addr, server) = fake_server(ok_answer(), |mut conn| async move {
            let msg = conn.read_message(None).await;
            assert_eq!(msg.route.unwrap(), "Bye.Now");
            assert!(conn.read_packet().await.is_none(), "expected EOF");
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        client.notify("Bye.Now", &()).await.unwrap();
        client.close().await;
        assert!(client.is_closed());
        assert_eq!(client.closed().await, ClientEvent::Disconnected);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_closes() {
    bounded(async {
        let (addr, server) = fake_server(ok_answer(), |mut conn| async move {
            assert!(conn.read_packet().await.is_none(), "expected EOF");
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let clone = client.clone();
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!clone.is_closed());
        drop(clone);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn heartbeats_both_ways() {
    bounded(async {
        let answer = json!({"code": 200, "sys": {"heartbeat": 1}});
        let (addr, server) = serve_one(move |tcp| async move {
            let (mut conn, _) = handshaken(tcp, &answer).await;
            conn.send(&packet(PacketType::Heartbeat, b"")).await;
            let started = tokio::time::Instant::now();
            let hb = conn.read_packet().await.unwrap();
            assert_eq!(hb.kind, PacketType::Heartbeat);
            assert!(started.elapsed() >= Duration::from_millis(700));
            conn
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        assert_eq!(client.handshake().heartbeat, Some(Duration::from_secs(1)));
        let _conn = server.await.unwrap();
        assert_eq!(client.heartbeats_received(), 1);
        assert!(!client.is_closed());
    })
    .await;
}

#[tokio::test]
async fn heartbeat_off_sends_nothing() {
    bounded(async {
        let answer = json!({"code": 200, "sys": {"heartbeat": 1}});
        let (addr, server) = fake_server(answer, |mut conn| async move {
            let got = tokio::time::timeout(Duration::from_millis(1500), conn.read_packet()).await;
            assert!(got.is_err(), "unexpected packet: {got:?}");
        })
        .await;
        let client: Client = Client::builder()
            .heartbeat(false)
            .connect_tcp(addr)
            .await
            .unwrap();
        server.await.unwrap();
        assert!(!client.is_closed());
    })
    .await;
}

#[tokio::test]
async fn silent_server_is_a_heartbeat_timeout() {
    bounded(async {
        let answer = json!({"code": 200, "sys": {"heartbeat": 0.2}});
        let (addr, _server) = fake_server(answer, |mut conn| async move {
            // Read (heartbeats) but never send anything.
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::connect_tcp(addr).await.unwrap();
        let event = client.closed().await;
        assert!(
            matches!(event, ClientEvent::Error(ref e) if e.contains("heartbeat")),
            "{event:?}"
        );
    })
    .await;
}

/// The server side of a WebSocket connection.
struct FakeWs<T> {
    ws: tokio_tungstenite::WebSocketStream<T>,
    buf: BytesMut,
    codec: PacketCodec,
}

impl<T: AsyncRead + AsyncWrite + Unpin> FakeWs<T> {
    /// Accepts the WebSocket upgrade on `io`.
    async fn accept(io: T) -> Self {
        FakeWs {
            ws: tokio_tungstenite::accept_async(io).await.unwrap(),
            buf: BytesMut::new(),
            codec: PacketCodec::default(),
        }
    }

    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn send_frame(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
    }
}

#[tokio::test]
async fn websocket_frames_with_several_and_split_packets() {
    bounded(async {
        let (addr, server) = serve_one(move |tcp| async move {
            let mut conn = FakeWs::accept(tcp).await;
            let hs = conn.read_packet().await.unwrap();
            assert_eq!(hs.kind, PacketType::Handshake);
            let hs: Value = serde_json::from_slice(&hs.body).unwrap();
            assert_eq!(hs["sys"]["type"], "rust-websocket");
            let answer = json!({"code": 200, "sys": {"dict": {"onChat": 3}}});
            conn.send_frame(packet(PacketType::Handshake, answer.to_string().as_bytes()))
                .await;
            assert_eq!(
                conn.read_packet().await.unwrap().kind,
                PacketType::HandshakeAck
            );

            let p = conn.read_packet().await.unwrap();
            let req = Message::decode(p.body, None).unwrap();
            assert_eq!(req.route.unwrap(), "Room.Join");
            let dict = Dictionary::from_json(&json!({"onChat": 3})).unwrap();

            // Two packets in one frame: the response and a (compressed) push.
            let mut frame = data(&Message::response(req.id, "{\"ok\":true}"), None);
            frame.extend(data(&Message::push("onChat", "\"one\""), Some(&dict)));
            conn.send_frame(frame).await;

            // One packet split across two frames (inside the header, then inside the body).
            let push = data(&Message::push("onChat", "\"two\""), None);
            conn.send_frame(push[..2].to_vec()).await;
            conn.send_frame(push[2..9].to_vec()).await;
            conn.send_frame(push[9..].to_vec()).await;

            // A frame with the end of a heartbeat and a whole kick.
            let mut tail = packet(PacketType::Heartbeat, b"");
            let kick = packet(PacketType::Kick, b"{\"reason\":\"done\"}");
            conn.send_frame(tail[..1].to_vec()).await;
            tail.drain(..1);
            tail.extend(kick);
            conn.send_frame(tail).await;
            let _ = conn.ws.close(None).await;
        })
        .await;
        let url = format!("ws://{addr}/nano");
        let client: Client = Client::connect_ws(&url).await.unwrap();
        let mut chat = client.on("onChat");
        let v: Value = client.request("Room.Join", &()).await.unwrap();
        assert_eq!(v, json!({"ok": true}));
        assert_eq!(&chat.recv().await.unwrap()[..], b"\"one\"");
        assert_eq!(&chat.recv().await.unwrap()[..], b"\"two\"");
        assert_eq!(
            client.closed().await,
            ClientEvent::Kicked {
                reason: Some("done".into())
            }
        );
        assert_eq!(client.heartbeats_received(), 1);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn websocket_close_frame_is_disconnected() {
    bounded(async {
        let (addr, _server) = serve_one(move |tcp| async move {
            let mut conn = FakeWs::accept(tcp).await;
            conn.read_packet().await.unwrap();
            conn.send_frame(packet(PacketType::Handshake, b"{\"code\":200}"))
                .await;
            conn.read_packet().await.unwrap();
            let _ = conn.ws.close(None).await;
            while conn.ws.next().await.is_some() {}
        })
        .await;
        let client: Client = Client::connect_ws(&format!("ws://{addr}/")).await.unwrap();
        assert_eq!(client.closed().await, ClientEvent::Disconnected);
    })
    .await;
}

#[tokio::test]
async fn websocket_bad_urls() {
    bounded(async {
        for url in ["http://127.0.0.1:1/", "ws://", "nonsense"] {
            let err = Client::<nano_core::Json>::connect_ws(url)
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::WebSocket(_)), "{url}: {err:?}");
        }
        let (addr, _server) = serve_one(|tcp| async move { drop(tcp) }).await;
        let err = Client::<nano_core::Json>::connect_ws(&format!("wss://{addr}/"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    })
    .await;
}

/// A self-signed certificate for `localhost` and a TLS acceptor using it.
fn tls_acceptor() -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der.clone()], key)
    .unwrap();
    (
        cert_der.to_vec(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn tls_over_tcp() {
    bounded(async {
        let (cert, acceptor) = tls_acceptor();
        let (addr, server) = serve_one(move |tcp| async move {
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut conn = FakeConn::new(tls);
            conn.handshake(&ok_answer()).await;
            let msg = conn.read_message(None).await;
            conn.send(&data(&Message::response(msg.id, "\"secure\""), None))
                .await;
            conn.wait_eof().await;
        })
        .await;
        let client: Client = Client::builder()
            .tls_root_cert_der(cert.clone())
            .connect_tcp(addr)
            .await
            .unwrap();
        let v: String = client.request("Tls.Ping", &()).await.unwrap();
        assert_eq!(v, "secure");
        client.close().await;
        server.await.unwrap();

        // A name the certificate does not cover is refused.
        let (_, acceptor) = tls_acceptor();
        let (addr, _server) = serve_one(move |tcp| async move {
            let _ = acceptor.accept(tcp).await;
        })
        .await;
        let err = Client::<nano_core::Json>::builder()
            .tls_root_cert_der(cert)
            .server_name("example.com")
            .connect_tcp(addr)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn websocket_over_tls() {
    bounded(async {
        let (cert, acceptor) = tls_acceptor();
        let (addr, server) = serve_one(move |tcp| async move {
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut conn = FakeWs::accept(tls).await;
            assert_eq!(
                conn.read_packet().await.unwrap().kind,
                PacketType::Handshake
            );
            conn.send_frame(packet(PacketType::Handshake, b"{\"code\":200}"))
                .await;
            let ack = conn.read_packet().await.unwrap();
            assert_eq!(ack.kind, PacketType::HandshakeAck);
            let p = conn.read_packet().await.unwrap();
            let msg = Message::decode(p.body, None).unwrap();
            conn.send_frame(data(&Message::response(msg.id, "7"), None))
                .await;
            while conn.read_packet().await.is_some() {}
        })
        .await;
        let client: Client = Client::builder()
            .tls_root_cert_der(cert)
            .connect_ws(&format!("wss://{addr}/nano"))
            .await
            .unwrap();
        let v: u32 = client.request("Wss.Ping", &()).await.unwrap();
        assert_eq!(v, 7);
        client.close().await;
        server.await.unwrap();
    })
    .await;
}
