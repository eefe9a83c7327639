//! The connection lifecycle against hostile and faulty peers, over real sockets on 127.0.0.1:
//! a peer that stops reading is let go within the write deadline (TCP and WebSocket), with one
//! log line; kick, close, the heartbeat sweeper and shutdown end a stuck connection within
//! that bound; a slow peer that keeps reading stays; nothing is held before the handshake;
//! a dropped server lets its connections and ports go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nano::prelude::*;
use nano::{Client, Server, Transport};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use support::{Peer, Via, BOTH};

/// Failure bound for waits.
const T: Duration = Duration::from_secs(20);

/// Remembers the sessions that sent a request, for the handlers that end them.
#[derive(Default)]
struct TestHandler {
    seen: Arc<Mutex<Vec<Session>>>,
}

#[component]
impl TestHandler {
    pub fn echo(&mut self, s: &Session, v: Value) -> Result<Value> {
        let mut seen = self.seen.lock().unwrap();
        if !seen.iter().any(|x| x.same(s)) {
            seen.push(s.clone());
        }
        Ok(v)
    }

    /// Kicks every other session seen; returns how many.
    pub fn kick_others(&mut self, s: &Session) -> Result<usize> {
        self.end_others(s, Session::kick)
    }

    /// Closes every other session seen; returns how many.
    pub fn close_others(&mut self, s: &Session) -> Result<usize> {
        self.end_others(s, Session::close)
    }

    /// Pushes `n` pushes of 16 KiB.
    pub fn blobs(&mut self, s: &Session, n: usize) -> Result<()> {
        let blob = "x".repeat(16 * 1024);
        for _ in 0..n {
            s.push("onBlob", &blob)?;
        }
        Ok(())
    }
}

impl TestHandler {
    fn end_others(&mut self, s: &Session, end: fn(&Session)) -> Result<usize> {
        let others: Vec<Session> = self
            .seen
            .lock()
            .unwrap()
            .drain(..)
            .filter(|x| !x.same(s))
            .collect();
        for o in &others {
            end(o);
        }
        Ok(others.len())
    }
}

async fn server_with(f: impl FnOnce(nano::App) -> nano::App) -> Server<Json> {
    support::init_log_capture();
    let app = nano::app()
        .component(TestHandler::default())
        .route_compression(false)
        .heartbeat(None)
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano");
    f(app).start().await.expect("server starts")
}

/// A 4 KB Echo request.
fn echo_4k(id: u64) -> Vec<u8> {
    let payload = format!("\"{}\"", "e".repeat(4096));
    support::request(id, "TestHandler.Echo", payload.as_bytes())
}

/// A peer that shook hands, then pipelines 4 KB Echo requests and never reads: its address,
/// and its writer task, which ends (with the time of its last completed write) once the
/// server has closed the connection.
struct Stuck {
    local: std::net::SocketAddr,
    /// Returns the peer, the time of its last completed write and the time its write failed.
    writer: tokio::task::JoinHandle<(Peer, Instant, Instant)>,
    /// Writes completed so far.
    writes: Arc<AtomicUsize>,
}

async fn stuck_peer(server: &Server<Json>, via: Via) -> Stuck {
    let mut peer = Peer::connect(server, via, true).await;
    peer.handshake().await;
    // Answered: the session is registered (and remembered by the handler).
    peer.send(&echo_4k(1)).await.unwrap();
    assert!(timeout(T, peer.packet()).await.unwrap().is_some());
    let local = peer.local_addr();
    let writes = Arc::new(AtomicUsize::new(0));
    let counter = writes.clone();
    let writer = tokio::spawn(async move {
        let mut last = Instant::now();
        let mut failed = None;
        for id in 2..100_000u64 {
            match timeout(T, peer.send(&echo_4k(id))).await {
                Ok(Ok(())) => {
                    last = Instant::now();
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) => {
                    // The server closed the connection.
                    failed = Some(Instant::now());
                    break;
                }
                Err(_) => panic!("a write blocked for {T:?}: the server neither reads nor closes"),
            }
        }
        (
            peer,
            last,
            failed.expect("400 MB written to a server that does not read"),
        )
    });
    Stuck {
        local,
        writer,
        writes,
    }
}

/// Waits until the server closed the peer's connection: its writer failed, and a read sees
/// the end of the stream (or a reset) after whatever the server had sent. Returns the time of
/// the last completed write and the time the write failed.
async fn closed_by_server(
    writer: tokio::task::JoinHandle<(Peer, Instant, Instant)>,
) -> (Instant, Instant) {
    let (mut peer, last_write, failed) = timeout(T, writer)
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(
        timeout(T, peer.until_eof()).await.is_ok(),
        "the socket is closed"
    );
    (last_write, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_peers_that_pipeline_and_never_read_are_disconnected_within_the_write_deadline() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
    // No heartbeat: nothing but the write deadline may end these connections. The queue is
    // far from full when the writes block (flushed at half, 64 in flight), so the full-queue
    // policy does not end them either.
    let server = server_with(|a| a.write_timeout(WRITE_TIMEOUT).send_queue(256)).await;
    for via in BOTH {
        let mut peers = Vec::new();
        for _ in 0..20 {
            peers.push(stuck_peer(&server, via).await);
        }
        let started = Instant::now();
        for Stuck { local, writer, .. } in peers {
            let (last_write, closed) = closed_by_server(writer).await;
            // The server stopped reading shortly after its writes blocked: from our last
            // accepted write, one deadline (plus its check step) and slack.
            assert!(
                closed.duration_since(last_write) < WRITE_TIMEOUT * 2 + Duration::from_secs(3),
                "{via:?}: closed {:?} after the last write",
                closed.duration_since(last_write)
            );
            // One log line for this connection, saying why.
            let lines = support::log_lines(local);
            assert_eq!(lines.len(), 1, "{via:?} {local}: {lines:?}");
            assert_eq!(
                lines[0].reason.as_deref(),
                Some("write timeout"),
                "{lines:?}"
            );
        }
        assert!(started.elapsed() < T, "{via:?}");
        assert_eq!(server.sessions(), 0, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_close_and_the_sweeper_end_a_stuck_connection_within_the_write_deadline() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);
    for how in ["TestHandler.KickOthers", "TestHandler.CloseOthers"] {
        let server = server_with(|a| a.write_timeout(WRITE_TIMEOUT).send_queue(256)).await;
        for via in BOTH {
            let stuck = stuck_peer(&server, via).await;
            // Let the writes block both ways: the writer stops completing writes.
            wait_until_stalled(&stuck).await;
            let writer = stuck.writer;
            let admin = client(&server, via).await;
            let ended: usize = admin.request(how, &json!({})).await.unwrap();
            assert_eq!(ended, 1);
            let asked = Instant::now();
            closed_by_server(writer).await;
            assert!(
                asked.elapsed() < WRITE_TIMEOUT * 2 + Duration::from_secs(2),
                "{how} {via:?}: {:?}",
                asked.elapsed()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_sweeper_kicks_a_stuck_connection_once_and_it_ends() {
    // Silent (its requests are not read any more) and not reading: kicked at the second
    // silent sweep, logged once, closed by the write deadline.
    let server = server_with(|a| {
        a.heartbeat(Some(Duration::from_secs(1)))
            .write_timeout(Duration::from_secs(3))
            .send_queue(256)
    })
    .await;
    for via in BOTH {
        let Stuck { local, writer, .. } = stuck_peer(&server, via).await;
        closed_by_server(writer).await;
        let lines = support::log_lines(local);
        assert_eq!(lines.len(), 1, "{via:?} {local}: {lines:?}");
        assert_eq!(
            lines[0].reason.as_deref(),
            Some("heartbeat timeout"),
            "{lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_stuck_connections_within_the_write_deadline() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
    // Shutdown's own bound is far away: only the write deadline can end it in time.
    let server = server_with(|a| {
        a.write_timeout(WRITE_TIMEOUT)
            .send_queue(256)
            .shutdown_timeout(Duration::from_secs(60))
    })
    .await;
    let mut writers = Vec::new();
    for via in BOTH {
        let stuck = stuck_peer(&server, via).await;
        wait_until_stalled(&stuck).await;
        writers.push(stuck.writer);
    }
    let started = Instant::now();
    timeout(T, server.shutdown()).await.expect("shutdown ends");
    assert!(
        started.elapsed() < WRITE_TIMEOUT * 2 + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for w in writers {
        closed_by_server(w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_that_keeps_reading_is_not_disconnected() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(400);
    const BLOBS: usize = 256; // 4 MiB of pushes, far more than the socket buffers hold
    let server = server_with(|a| {
        a.write_timeout(WRITE_TIMEOUT)
            .send_queue_bytes(8 << 20)
            .push_routes(["onBlob"])
    })
    .await;
    for via in BOTH {
        let mut peer = Peer::connect(&server, via, true).await;
        peer.handshake().await;
        let started = Instant::now();
        peer.send(&support::request(
            1,
            "TestHandler.Blobs",
            BLOBS.to_string().as_bytes(),
        ))
        .await
        .unwrap();
        // Read slowly, in small pieces, never pausing for a whole deadline.
        let mut pushes = 0;
        let mut response = false;
        while pushes < BLOBS || !response {
            let p = timeout(T, peer.packet_slowly(16 * 1024, Duration::from_millis(8)))
                .await
                .expect("packets keep coming")
                .unwrap_or_else(|| {
                    panic!(
                        "{via:?}: disconnected after {pushes} pushes in {:?}: {:?}",
                        started.elapsed(),
                        support::log_lines(peer.local_addr())
                    )
                });
            let m = nano::protocol::Message::decode(p.body, None).unwrap();
            match m.kind {
                nano::protocol::MessageType::Push => pushes += 1,
                nano::protocol::MessageType::Response => response = true,
                other => panic!("{other:?}"),
            }
        }
        // The transfer outlasted several deadlines: progress restarted the clock.
        assert!(
            started.elapsed() > WRITE_TIMEOUT * 3,
            "{via:?}: too fast to prove anything ({:?})",
            started.elapsed()
        );
        peer.send(&echo_4k(2)).await.unwrap();
        assert!(
            timeout(T, peer.packet()).await.unwrap().is_some(),
            "{via:?}"
        );
    }
}

#[tokio::test]
async fn a_header_announcing_64_kib_before_the_handshake_is_refused_at_once() {
    let server = server_with(|a| a.handshake_timeout(Duration::from_secs(60))).await;
    for via in BOTH {
        // A Handshake header announcing 64 KiB, and nothing after it.
        let mut peer = Peer::connect(&server, via, false).await;
        peer.send(&[1, 0x01, 0x00, 0x00]).await.unwrap();
        let started = Instant::now();
        timeout(Duration::from_secs(5), peer.until_eof())
            .await
            .unwrap_or_else(|_| panic!("{via:?}: held open waiting for 64 KiB"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let lines = support::log_lines(peer.local_addr());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].message.contains("handshake failed"),
            "{:?}",
            lines[0]
        );

        // A whole Handshake of 5,000 bytes (over the 4 KiB default) is refused too.
        let mut peer = Peer::connect(&server, via, false).await;
        let body = json!({"sys": {"type": "raw", "pad": "p".repeat(5000)}}).to_string();
        let packet = nano::protocol::Packet::new(nano::protocol::PacketType::Handshake, body)
            .encode()
            .unwrap();
        peer.send(&packet).await.unwrap();
        assert!(
            timeout(Duration::from_secs(5), peer.packet())
                .await
                .expect("closed at once")
                .is_none(),
            "{via:?}: an oversized handshake got an answer"
        );

        // Under the cap, the handshake works.
        let mut peer = Peer::connect(&server, via, false).await;
        peer.handshake().await;
    }
}

#[tokio::test]
async fn a_sub_second_heartbeat_is_announced_as_swept() {
    let server = server_with(|a| a.heartbeat(Some(Duration::from_millis(500)))).await;
    for via in BOTH {
        let mut peer = Peer::connect(&server, via, false).await;
        let hs = peer.handshake().await;
        assert_eq!(hs["sys"]["heartbeat"], 1, "{hs}");
        // A peer that heartbeats at the announced interval stays (sweeping every 500 ms with
        // two silent sweeps allowed would kick it).
        let heartbeat = nano::protocol::Packet::heartbeat().encode().unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peer.send(&heartbeat).await.unwrap();
        }
        peer.send(&echo_4k(1)).await.unwrap();
        loop {
            let p = timeout(T, peer.packet())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{via:?}: kicked"));
            if p.kind == nano::protocol::PacketType::Data {
                break;
            }
            assert_eq!(p.kind, nano::protocol::PacketType::Heartbeat, "{via:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_ends_its_connections_and_closes_its_ports() {
    let server = server_with(|a| a).await;
    let tcp = server.addr(Transport::Tcp).unwrap();
    let ws = server.addr(Transport::WebSocket).unwrap();
    let mut clients = Vec::new();
    for via in BOTH {
        let c = client(&server, via).await;
        let v: Value = c.request("TestHandler.Echo", &json!("hi")).await.unwrap();
        assert_eq!(v, json!("hi"));
        clients.push(c);
    }
    // One more still shaking hands.
    let mut shaking = Peer::connect(&server, Via::Tcp, false).await;
    assert_eq!(server.sessions(), 2);
    drop(server);
    for c in &clients {
        timeout(T, c.closed()).await.expect("the connection ends");
    }
    timeout(T, shaking.until_eof())
        .await
        .expect("the half-open connection ends");
    for addr in [tcp, ws] {
        let deadline = Instant::now() + T;
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => panic!("{e}"),
                Ok(mut s) => {
                    // Accepted by the kernel before the listener closed: it must not be served.
                    let mut b = [0u8; 1];
                    assert!(matches!(
                        timeout(T, s.read(&mut b)).await.expect("not held"),
                        Ok(0) | Err(_)
                    ));
                }
            }
            assert!(Instant::now() < deadline, "{addr} still accepts");
            tokio::task::yield_now().await;
        }
    }
}

async fn client(server: &Server<Json>, via: Via) -> Client {
    match via {
        Via::Tcp => Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
            .await
            .unwrap(),
        Via::Ws => Client::connect_ws(&format!(
            "ws://{}/nano",
            server.addr(Transport::WebSocket).unwrap()
        ))
        .await
        .unwrap(),
    }
}

/// Waits (bounded) until the stuck peer's writes stopped completing: the server stopped
/// reading because its own writes are blocked. A stall shows only as an absence of progress,
/// so this is the one condition observed over time: no write completed for 300 ms.
async fn wait_until_stalled(stuck: &Stuck) {
    let deadline = Instant::now() + T;
    let mut seen = stuck.writes.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        assert!(!stuck.writer.is_finished(), "closed before being ended");
        assert!(Instant::now() < deadline, "the writes never stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = stuck.writes.load(Ordering::Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

mod support {
    //! Raw peers (TCP, and WebSocket framed by hand so they can stop reading) and a capture
    //! of the server's log lines per peer.

    use std::collections::HashMap;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use bytes::{Buf, BytesMut};
    use nano::protocol::{DataPacketWriter, Packet, PacketCodec, PacketType};
    use nano::{Json, Server, Transport};
    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::time::timeout;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    #[derive(Clone, Copy, Debug)]
    pub enum Via {
        Tcp,
        Ws,
    }

    pub const BOTH: [Via; 2] = [Via::Tcp, Via::Ws];

    /// An encoded request packet.
    pub fn request(id: u64, route: &str, payload: &[u8]) -> Vec<u8> {
        let mut w = DataPacketWriter::request(id, route, None).unwrap();
        w.payload_mut().extend_from_slice(payload);
        w.finish(64 * 1024).unwrap().to_vec()
    }

    /// A raw peer.
    pub struct Peer {
        stream: TcpStream,
        ws: bool,
        /// Bytes read and not parsed (WebSocket: raw frames).
        raw: BytesMut,
        /// Packet bytes.
        packets: BytesMut,
        codec: PacketCodec,
    }

    impl Peer {
        /// Connects; `small_buffers` makes its socket buffers small, so that a server writing
        /// to it blocks soon.
        pub async fn connect(server: &Server<Json>, via: Via, small_buffers: bool) -> Peer {
            // The tests tell connections apart by this peer's address in the server's log
            // lines: it must not be an ephemeral port that a connection of another test (on
            // another server, logging late) had just before.
            let transport = match via {
                Via::Tcp => Transport::Tcp,
                Via::Ws => Transport::WebSocket,
            };
            let addr = server.addr(transport).unwrap();
            let socket = own_port_socket();
            if small_buffers {
                socket.set_recv_buffer_size(16 * 1024).unwrap();
                socket.set_send_buffer_size(16 * 1024).unwrap();
            }
            let mut stream = socket.connect(addr).await.unwrap();
            let mut raw = BytesMut::new();
            if let Via::Ws = via {
                let req = format!(
                    "GET /nano HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                );
                stream.write_all(req.as_bytes()).await.unwrap();
                loop {
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..end]).to_string();
                        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                        raw.advance(end + 4);
                        break;
                    }
                    let n = timeout(super::T, stream.read_buf(&mut raw))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(n > 0, "closed during the upgrade");
                }
            }
            Peer {
                stream,
                ws: matches!(via, Via::Ws),
                raw,
                packets: BytesMut::new(),
                codec: PacketCodec::new(nano::protocol::MAX_BODY_LEN),
            }
        }

        pub fn local_addr(&self) -> SocketAddr {
            self.stream.local_addr().unwrap()
        }

        /// Sends packet bytes (in one masked binary frame on WebSocket).
        pub async fn send(&mut self, packet: &[u8]) -> io::Result<()> {
            if !self.ws {
                return self.stream.write_all(packet).await;
            }
            let mut frame = vec![0x82u8];
            let len = packet.len();
            if len < 126 {
                frame.push(0x80 | len as u8);
            } else if len <= 0xffff {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
            let mask = [0x12u8, 0x34, 0x56, 0x78];
            frame.extend_from_slice(&mask);
            frame.extend(packet.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            self.stream.write_all(&frame).await
        }

        /// The next packet; `None` when the server closed the connection.
        pub async fn packet(&mut self) -> Option<Packet> {
            self.packet_slowly(64 * 1024, Duration::ZERO).await
        }

        /// Like [`Peer::packet`], reading at most `chunk` bytes at a time and pausing `pause`
        /// before each read.
        pub async fn packet_slowly(&mut self, chunk: usize, pause: Duration) -> Option<Packet> {
            loop {
                if let Some(p) = self.codec.decode(&mut self.packets).unwrap() {
                    return Some(p);
                }
                if self.ws && self.unframe()? {
                    continue;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let mut buf = vec![0u8; chunk];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        let into = if self.ws {
                            &mut self.raw
                        } else {
                            &mut self.packets
                        };
                        into.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }

        /// Moves the payload of one whole server frame from `raw` to `packets`: `Some(true)`
        /// when it did, `Some(false)` when more bytes are needed, `None` at a close frame.
        fn unframe(&mut self) -> Option<bool> {
            let raw = &self.raw;
            if raw.len() < 2 {
                return Some(false);
            }
            let opcode = raw[0] & 0x0f;
            let (len, head) = match raw[1] & 0x7f {
                126 if raw.len() >= 4 => (usize::from(u16::from_be_bytes([raw[2], raw[3]])), 4),
                127 if raw.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&raw[2..10]);
                    (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
                }
                126 | 127 => return Some(false),
                n => (usize::from(n), 2),
            };
            if raw.len() < head + len {
                return Some(false);
            }
            if opcode == 0x8 {
                return None;
            }
            self.raw.advance(head);
            let payload = self.raw.split_to(len);
            if opcode == 0x2 || opcode == 0x0 {
                self.packets.extend_from_slice(&payload);
            }
            Some(true)
        }

        /// Reads until the end of the stream or a reset.
        pub async fn until_eof(&mut self) {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = self.stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }

        /// Handshake by hand: Handshake, its answer, HandshakeAck. Returns the answer.
        pub async fn handshake(&mut self) -> Value {
            let hs = Packet::new(
                PacketType::Handshake,
                json!({"sys": {"type": "raw", "version": "0.0.1"}, "user": {}}).to_string(),
            );
            self.send(&hs.encode().unwrap()).await.unwrap();
            let p = timeout(super::T, self.packet())
                .await
                .unwrap()
                .expect("handshake answered");
            assert_eq!(p.kind, PacketType::Handshake);
            let ack = Packet::new(PacketType::HandshakeAck, bytes::Bytes::new());
            self.send(&ack.encode().unwrap()).await.unwrap();
            serde_json::from_slice(&p.body).unwrap()
        }
    }

    /// A server log line at info level or louder about one peer.
    #[derive(Debug, Clone)]
    pub struct Line {
        pub message: String,
        pub reason: Option<String>,
    }

    fn lines() -> &'static Mutex<HashMap<String, Vec<Line>>> {
        static LINES: OnceLock<Mutex<HashMap<String, Vec<Line>>>> = OnceLock::new();
        LINES.get_or_init(Default::default)
    }

    /// The lines logged so far about the peer at `addr`.
    /// A socket bound to a port of 127.0.0.1 below the ephemeral range, each used once per
    /// run of this binary (a port still taken is skipped).
    pub fn own_port_socket() -> TcpSocket {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let base = 20_000 + (std::process::id() % 20) as u16 * 500;
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(n < 500, "no free port left in this binary's range");
            let socket = TcpSocket::new_v4().unwrap();
            if socket
                .bind(SocketAddr::from(([127, 0, 0, 1], base + n)))
                .is_ok()
            {
                return socket;
            }
        }
    }

    pub fn log_lines(addr: SocketAddr) -> Vec<Line> {
        lines()
            .lock()
            .unwrap()
            .get(&addr.to_string())
            .cloned()
            .unwrap_or_default()
    }

    struct Capture;

    #[derive(Default)]
    struct Fields {
        message: String,
        remote: Option<String>,
        reason: Option<String>,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "reason" => self.reason = Some(value.to_owned()),
                "remote" => self.remote = Some(value.to_owned()),
                "message" => self.message = value.to_owned(),
                _ => {}
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let text = format!("{value:?}");
            match field.name() {
                "reason" => self.reason = Some(text.trim_matches('"').to_owned()),
                "remote" => self.remote = Some(text),
                "message" => self.message = text,
                _ => {}
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            if *event.metadata().level() > tracing::Level::INFO {
                return;
            }
            let mut f = Fields::default();
            event.record(&mut f);
            if let Some(remote) = f.remote {
                lines()
                    .lock()
                    .unwrap()
                    .entry(remote)
                    .or_default()
                    .push(Line {
                        message: f.message,
                        reason: f.reason,
                    });
            }
        }
    }

    /// Installs the capture as the global subscriber (once per test binary).
    pub fn init_log_capture() {
        static INIT: OnceLock<()> = OnceLock::new();
        INIT.get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(Capture);
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        });
    }
}
