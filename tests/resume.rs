//! Session resume over real sockets on 127.0.0.1: a client whose connection is cut (by a proxy
//! that drops both of its sockets) comes back to the same session with every push sent
//! meanwhile, in order, once; past the grace period, on overflow, or with a forged, stale or
//! used token it gets a new session, and the old one's closed-callbacks run once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nano::client::ConnectionEvent;
use nano::prelude::*;
use nano::protocol::{Packet, PacketType};
use nano::{Client, Resume, Server, Transport};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

mod common;
use common::cut::Cutter;
use common::{http_request, Raw, Via, BOTH, T};

/// A chat room: joining binds the name and tells the others; leaving (the session closing)
/// tells them too.
struct Room {
    group: Group,
}

#[component]
impl Room {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|room, s: &Session| {
            if let Some(uid) = s.uid() {
                let _ = room.group.broadcast("onLeave", &uid);
            }
        });
    }

    pub fn join(&mut self, s: &Session, name: String) -> Result<()> {
        s.bind(name.clone())?;
        self.group.broadcast("onJoin", &name)?;
        self.group.add(s)
    }

    pub fn say(&mut self, _s: &Session, n: u32) -> Result<()> {
        self.group.broadcast("onMessage", &n)
    }

    pub fn whoami(&mut self, s: &Session) -> Result<String> {
        Ok(s.uid().unwrap_or_default())
    }

    pub fn leave(&mut self, s: &Session) -> Result<()> {
        s.kick_with_reason(Some("bye"));
        Ok(())
    }
}

/// Holds a request until the test releases it (on its own scheduler).
struct Hold {
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

#[component]
impl Hold {
    pub async fn slow(&mut self, _s: &Session) -> Result<String> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok("late".into())
    }
}

/// A server resuming sessions, and what the test watches on it.
struct Fixture {
    server: Server<Json>,
    suspended: mpsc::UnboundedReceiver<u64>,
    resumed: mpsc::UnboundedReceiver<u64>,
    closed_rx: mpsc::UnboundedReceiver<u64>,
    closed: Arc<AtomicUsize>,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

async fn fixture(resume: Resume) -> Fixture {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = nano::app()
        .component(Room {
            group: Group::new("room"),
        })
        .component_on(
            Hold {
                started: started_tx,
                release: release.clone(),
            },
            "hold",
        )
        .resume(resume)
        .admin("127.0.0.1:0")
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    let (tx, suspended) = mpsc::unbounded_channel();
    server.engine().on_session_suspended(move |s| {
        let _ = tx.send(s.id());
    });
    let (tx, resumed) = mpsc::unbounded_channel();
    server.engine().on_session_resumed(move |s| {
        let _ = tx.send(s.id());
    });
    let (tx, closed_rx) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    server.engine().on_session_closed(move |s| {
        count.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(s.id());
    });
    Fixture {
        server,
        suspended,
        resumed,
        closed_rx,
        closed,
        started,
        release,
    }
}

impl Fixture {
    fn addr(&self, via: Via) -> SocketAddr {
        match via {
            Via::Tcp => self.server.addr(Transport::Tcp).unwrap(),
            Via::Ws => self.server.addr(Transport::WebSocket).unwrap(),
        }
    }
}

async fn connect(via: Via, addr: SocketAddr) -> Client {
    let b = Client::builder().request_timeout(Duration::from_secs(20));
    match via {
        Via::Tcp => b.connect_tcp(addr).await.unwrap(),
        Via::Ws => b.connect_ws(&format!("ws://{addr}/nano")).await.unwrap(),
    }
}

async fn recv<V>(rx: &mut mpsc::UnboundedReceiver<V>, what: &str) -> V {
    timeout(T, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} within the bound"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

/// The next `n` pushes of a stream, decoded.
async fn pushes(client: &Client, stream: &mut nano::client::PushStream, n: usize) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n {
        let p = timeout(T, stream.recv())
            .await
            .unwrap_or_else(|_| panic!("push {} of {n} within the bound (got {got:?})", got.len()))
            .expect("push stream open");
        got.push(client.decode(&p).unwrap());
    }
    got
}

async fn say(client: &Client, range: std::ops::Range<u32>) {
    for n in range {
        client.request::<_, ()>("Room.Say", &n).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_its_session_with_every_push_in_order_once() {
    for via in BOTH {
        cut_and_resume(via).await;
    }
}

async fn cut_and_resume(via: Via) {
    let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
    let cutter = Cutter::start(f.addr(via)).await;
    let bob = connect(via, f.addr(via)).await;
    let mut bob_sees = bob.on_any();
    bob.request::<_, ()>("Room.Join", "bob").await.unwrap();

    let alice = connect(via, cutter.addr()).await;
    assert!(alice.is_resumable(), "{via:?}: the server offers resume");
    let mut events = alice.connection_events();
    let mut messages = alice.on("onMessage");
    alice.request::<_, ()>("Room.Join", "alice").await.unwrap();
    say(&bob, 0..10).await;

    // A request in flight at the cut, and a burst of pushes racing it.
    let slow = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.request::<_, String>("Hold.Slow", &()).await })
    };
    recv(&mut f.started, "the slow request started").await;
    let burst = {
        let bob = bob.clone();
        tokio::spawn(async move { say(&bob, 10..40).await })
    };
    cutter.refuse(true);
    cutter.cut();
    let id = recv(&mut f.suspended, "the session suspended").await;
    assert!(
        matches!(
            recv(&mut events, "alice lost").await,
            ConnectionEvent::Lost(_)
        ),
        "{via:?}"
    );
    burst.await.unwrap();
    // Meanwhile: more pushes, and the answer of the request in flight.
    say(&bob, 40..60).await;
    f.release.notify_one();
    cutter.refuse(false);

    assert_eq!(
        recv(&mut events, "alice back").await,
        ConnectionEvent::Resumed,
        "{via:?}"
    );
    assert_eq!(recv(&mut f.resumed, "the session resumed").await, id);
    assert_eq!(
        timeout(T, slow).await.unwrap().unwrap().unwrap(),
        "late",
        "{via:?}: the request in flight is answered"
    );
    say(&bob, 60..65).await;
    let got = pushes(&alice, &mut messages, 65).await;
    assert_eq!(got, (0..65).collect::<Vec<_>>(), "{via:?}: in order, once");

    // The same session: still bound, still in the room.
    let me: String = alice.request("Room.Whoami", &()).await.unwrap();
    assert_eq!(me, "alice", "{via:?}");
    assert!(
        messages.try_recv().is_err(),
        "{via:?}: nothing more than the 65"
    );
    alice.request::<_, ()>("Room.Say", &99u32).await.unwrap();
    assert_eq!(pushes(&alice, &mut messages, 1).await, [99]);

    // Bob saw alice join once, and never leave.
    let _: String = bob.request("Room.Whoami", &()).await.unwrap();
    let mut joins = 0;
    while let Ok((route, payload)) = bob_sees.try_recv() {
        let who: Value = serde_json::from_slice(&payload).unwrap();
        match route.as_str() {
            "onJoin" if who == "alice" => joins += 1,
            "onLeave" => panic!("{via:?}: bob saw {who} leave"),
            _ => {}
        }
    }
    assert_eq!(joins, 1, "{via:?}");
    assert_eq!(
        f.closed.load(Ordering::SeqCst),
        0,
        "{via:?}: nothing closed"
    );
    assert_eq!(f.server.sessions(), 2, "{via:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_the_session_closes_once_and_the_client_gets_a_new_one() {
    let mut f = fixture(Resume::new(Duration::from_millis(300))).await;
    let cutter = Cutter::start(f.addr(Via::Tcp)).await;
    let bob = connect(Via::Tcp, f.addr(Via::Tcp)).await;
    let mut leaves = bob.on("onLeave");
    bob.request::<_, ()>("Room.Join", "bob").await.unwrap();
    let alice = connect(Via::Tcp, cutter.addr()).await;
    let mut events = alice.connection_events();
    alice.request::<_, ()>("Room.Join", "alice").await.unwrap();
    let slow = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.request::<_, String>("Hold.Slow", &()).await })
    };
    recv(&mut f.started, "the slow request started").await;

    cutter.refuse(true);
    cutter.cut();
    let id = recv(&mut f.suspended, "suspended").await;
    assert_eq!(recv(&mut f.closed_rx, "closed after the grace").await, id);
    let left: String = bob
        .decode(&timeout(T, leaves.recv()).await.unwrap().unwrap())
        .unwrap();
    assert_eq!(left, "alice");
    cutter.refuse(false);

    // Past the grace period, the client comes back to a new session.
    loop {
        match recv(&mut events, "alice's next event").await {
            ConnectionEvent::Lost(_) => continue,
            ConnectionEvent::NewSession => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        timeout(T, slow).await.unwrap().unwrap().is_err(),
        "the pending request failed with the old session"
    );
    let me: String = alice.request("Room.Whoami", &()).await.unwrap();
    assert_eq!(me, "", "a new session, not bound");
    f.release.notify_one();
    let _: String = bob.request("Room.Whoami", &()).await.unwrap();
    assert_eq!(
        f.closed.load(Ordering::SeqCst),
        1,
        "closed-callbacks ran once"
    );
    assert!(leaves.try_recv().is_err(), "one leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_session_whose_buffer_overflows_is_closed() {
    let mut f = fixture(Resume::new(Duration::from_secs(30)).buffer(4, 1 << 20)).await;
    let cutter = Cutter::start(f.addr(Via::Ws)).await;
    let bob = connect(Via::Ws, f.addr(Via::Ws)).await;
    let mut leaves = bob.on("onLeave");
    bob.request::<_, ()>("Room.Join", "bob").await.unwrap();
    let alice = connect(Via::Ws, cutter.addr()).await;
    let mut events = alice.connection_events();
    alice.request::<_, ()>("Room.Join", "alice").await.unwrap();

    cutter.refuse(true);
    cutter.cut();
    let id = recv(&mut f.suspended, "suspended").await;
    say(&bob, 0..4).await;
    assert!(
        f.closed_rx.try_recv().is_err(),
        "four pushes fit the buffer"
    );
    say(&bob, 4..5).await;
    assert_eq!(recv(&mut f.closed_rx, "closed on overflow").await, id);
    let left: String = bob
        .decode(&timeout(T, leaves.recv()).await.unwrap().unwrap())
        .unwrap();
    assert_eq!(left, "alice");
    cutter.refuse(false);
    loop {
        match recv(&mut events, "alice's next event").await {
            ConnectionEvent::Lost(_) => continue,
            ConnectionEvent::NewSession => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(f.closed.load(Ordering::SeqCst), 1);
}

/// Sends a Handshake whose `sys.resume` is `resume` (none when `Null`); returns the answer's
/// `sys.resume` after acking it.
async fn shake(raw: &mut Raw, resume: Value) -> Value {
    let mut sys = json!({"type": "raw", "version": "0.0.1"});
    if !resume.is_null() {
        sys["resume"] = resume;
    }
    let hs = Packet::new(
        PacketType::Handshake,
        json!({"sys": sys, "user": {}}).to_string(),
    );
    raw.send(&hs.encode().unwrap()).await;
    let p = raw.next().await.expect("a handshake answer");
    assert_eq!(p.kind, PacketType::Handshake);
    let v: Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(v["code"], 200, "{v}");
    raw.send(
        &Packet::new(PacketType::HandshakeAck, Bytes::new())
            .encode()
            .unwrap(),
    )
    .await;
    v["sys"]["resume"].clone()
}

/// Drops a raw connection the way a network does: a reset, not a goodbye.
fn vanish(raw: Raw) {
    if let Raw::Tcp(s, _) = &raw {
        #[allow(deprecated)] // a zero linger: the drop resets at once, nothing blocks
        s.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(raw);
}

fn token(answer: &Value) -> String {
    let t = answer["token"].as_str().expect("a token").to_owned();
    assert_eq!(t.len(), 32, "128 bits in hex: {t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_used_tokens_get_a_fresh_session() {
    let mut f = fixture(Resume::new(Duration::from_millis(300))).await;
    let tcp = f.addr(Via::Tcp);

    // Forged: a well-formed token nobody was given; malformed ones too.
    let mut raw = Raw::tcp(tcp).await;
    let first = shake(&mut raw, Value::Null).await;
    assert_eq!(first["resumed"], false);
    assert_eq!(first["grace"], 0.3);
    let mine = token(&first);
    let mut others = Vec::new(); // kept open: a closed one would be suspended
    for forged in [
        json!({"token": "0123456789abcdef0123456789abcdef", "received": 0}),
        json!({"token": "not hex", "received": 0}),
        json!({"token": mine, "received": 1}), // more than was sent
        json!({"token": 7}),
    ] {
        let mut other = Raw::tcp(tcp).await;
        let a = shake(&mut other, forged.clone()).await;
        assert_eq!(a["resumed"], false, "{forged}");
        assert_ne!(token(&a), mine);
        others.push(other);
    }

    // Used: resumed once with it, then presented again.
    vanish(raw);
    let id = recv(&mut f.suspended, "suspended").await;
    let mut back = Raw::tcp(tcp).await;
    let a = shake(&mut back, json!({"token": mine, "received": 0})).await;
    assert_eq!(a["resumed"], true, "{a}");
    assert_eq!(a["last_request"], 0);
    assert_eq!(recv(&mut f.resumed, "resumed").await, id);
    let renewed = token(&a);
    assert_ne!(renewed, mine, "a new token on every handshake");
    let mut again = Raw::tcp(tcp).await;
    let a = shake(&mut again, json!({"token": mine, "received": 0})).await;
    assert_eq!(a["resumed"], false, "a token resumes once");
    others.push(again);

    // Stale: its session's grace period is over.
    vanish(back);
    assert_eq!(recv(&mut f.suspended, "suspended again").await, id);
    assert_eq!(recv(&mut f.closed_rx, "closed after the grace").await, id);
    let mut late = Raw::tcp(tcp).await;
    let a = shake(&mut late, json!({"token": renewed, "received": 0})).await;
    assert_eq!(a["resumed"], false, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_before_its_old_connection_was_seen_to_drop_takes_the_session_over() {
    let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
    let tcp = f.addr(Via::Tcp);
    let mut old = Raw::tcp(tcp).await;
    let mine = token(&shake(&mut old, Value::Null).await);
    // The old connection stays open (the server has not seen it die); a new one presents the
    // token.
    let mut new = Raw::tcp(tcp).await;
    let a = shake(&mut new, json!({"token": mine, "received": 0})).await;
    assert_eq!(a["resumed"], true, "{a}");
    // The old connection is closed by the server; the session lives on the new one.
    let left = old.until_closed().await;
    assert!(
        left.iter().all(|p| p.kind != PacketType::Kick),
        "no Kick (the client would not come back): {left:?}"
    );
    // One round trip on the new connection: its session is registered by then.
    new.send(&common::request_packet(1, "Room.Whoami", b"{}", None))
        .await;
    let answer = new.next_non_heartbeat().await.expect("an answer");
    assert_eq!(answer.kind, PacketType::Data);
    assert_eq!(f.server.sessions(), 1);
    assert!(f.closed_rx.try_recv().is_err(), "nothing closed");
    assert!(f.suspended.try_recv().is_err(), "never suspended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_kicks_is_not_suspended() {
    let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
    let tcp = f.addr(Via::Tcp);
    let client = connect(Via::Tcp, tcp).await;
    client.request::<_, ()>("Room.Join", "carol").await.unwrap();
    let mut events = client.connection_events();
    client.notify("Room.Leave", &()).await.unwrap();
    let id = recv(&mut f.closed_rx, "closed").await;
    assert!(id > 0);
    assert!(matches!(
        timeout(T, client.closed()).await.unwrap(),
        nano::ClientEvent::Kicked { .. }
    ));
    assert!(f.suspended.try_recv().is_err());
    assert!(events.try_recv().is_err(), "no reconnect after a kick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_suspended_sessions_and_the_metrics_count_resumes() {
    let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
    let admin = f.server.admin_addr().unwrap();
    let cutter = Cutter::start(f.addr(Via::Tcp)).await;
    let bob = connect(Via::Tcp, f.addr(Via::Tcp)).await;
    bob.request::<_, ()>("Room.Join", "bob").await.unwrap();
    let alice = connect(Via::Tcp, cutter.addr()).await;
    let mut events = alice.connection_events();
    alice.request::<_, ()>("Room.Join", "alice").await.unwrap();

    cutter.refuse(true);
    cutter.cut();
    let id = recv(&mut f.suspended, "suspended").await;
    assert!(matches!(
        recv(&mut events, "lost").await,
        ConnectionEvent::Lost(_)
    ));
    say(&bob, 0..3).await;
    let (status, _, body) = http_request(admin, "GET", "/debug/nano/node.json").await;
    assert_eq!(status, 200);
    let node: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(node["node"]["options"]["resume_grace_s"], 30.0);
    assert_eq!(node["stats"]["suspended_sessions"], 1, "{}", node["stats"]);
    let s = &node["suspended"][0];
    assert_eq!(
        (s["id"].as_u64(), s["uid"].as_str()),
        (Some(id), Some("alice"))
    );
    assert_eq!(s["held"], 3, "the three pushes sent meanwhile");
    assert!(
        node["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != id),
        "not among the connected"
    );
    let (_, _, metrics) = http_request(admin, "GET", "/metrics").await;
    assert!(metrics.contains("nano_suspended_sessions 1"), "{metrics}");

    cutter.refuse(false);
    assert_eq!(recv(&mut events, "back").await, ConnectionEvent::Resumed);
    let (_, _, metrics) = http_request(admin, "GET", "/metrics").await;
    assert!(metrics.contains("nano_suspended_sessions 0"), "{metrics}");
    assert!(
        metrics.contains("nano_resumes_total{outcome=\"resumed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_suspended_by_the_heartbeat_not_kicked() {
    let server = nano::app()
        .component(Room {
            group: Group::new("room"),
        })
        .heartbeat(Some(Duration::from_secs(1)))
        .resume(Duration::from_secs(30))
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let (tx, mut suspended) = mpsc::unbounded_channel();
    server.engine().on_session_suspended(move |s| {
        let _ = tx.send(s.id());
    });
    let tcp = server.addr(Transport::Tcp).unwrap();
    let mut silent = Raw::tcp(tcp).await;
    let mine = token(&shake(&mut silent, Value::Null).await);
    // It never answers the heartbeats: after two silent sweeps the server closes the
    // connection, without a Kick (which would tell the client not to come back).
    let seen = silent.until_closed().await;
    assert!(
        seen.iter().all(|p| p.kind == PacketType::Heartbeat),
        "{seen:?}"
    );
    recv(&mut suspended, "suspended").await;
    let mut back = Raw::tcp(tcp).await;
    let a = shake(&mut back, json!({"token": mine, "received": 0})).await;
    assert_eq!(a["resumed"], true, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_ends_without_a_close_frame_is_a_drop() {
    let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
    let cutter = Cutter::start_closing(f.addr(Via::Ws)).await;
    let alice = connect(Via::Ws, cutter.addr()).await;
    let mut events = alice.connection_events();
    alice.request::<_, ()>("Room.Join", "alice").await.unwrap();
    cutter.refuse(true);
    cutter.cut();
    recv(
        &mut f.suspended,
        "suspended after a FIN without a close frame",
    )
    .await;
    assert!(matches!(
        recv(&mut events, "lost").await,
        ConnectionEvent::Lost(_)
    ));
    cutter.refuse(false);
    assert_eq!(recv(&mut events, "back").await, ConnectionEvent::Resumed);
    let me: String = alice.request("Room.Whoami", &()).await.unwrap();
    assert_eq!(me, "alice");
    assert!(f.closed_rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_says_goodbye_leaves_at_once() {
    // A WebSocket close frame, or over TCP the FIN, the only goodbye a TCP client has
    // (pypomelo, pomelo's TCP clients): the session ends at once and the room hears it leave.
    for via in BOTH {
        let mut f = fixture(Resume::new(Duration::from_secs(30))).await;
        let bob = connect(via, f.addr(via)).await;
        let mut leaves = bob.on("onLeave");
        bob.request::<_, ()>("Room.Join", "bob").await.unwrap();
        let alice = connect(via, f.addr(via)).await;
        alice.request::<_, ()>("Room.Join", "alice").await.unwrap();
        alice.close().await;
        recv(&mut f.closed_rx, "closed at once").await;
        let left: String = bob
            .decode(&timeout(T, leaves.recv()).await.unwrap().unwrap())
            .unwrap();
        assert_eq!(left, "alice", "{via:?}");
        assert!(f.suspended.try_recv().is_err(), "{via:?}: never suspended");
    }
}
