//! Issue 9, items 3 and 5: user code on the connection task (interceptors, payload decoders, the
//! handshake validator) runs under panic protection, and per-session message rate limits.
//!
//! Over real sockets on 127.0.0.1 with the Rust client, and in memory with the testing harness
//! where exact answer counts are asserted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nano::engine::EngineBuilder;
use nano::prelude::*;
use nano::testing::{Harness, TestClient};
use nano::{Client, ClientError, ClientEvent, OverLimit, RateLimit, Server, Transport};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Failure bound of every wait.
const T: Duration = Duration::from_secs(10);

/// A payload type whose `Deserialize` panics on the string `"boom"`.
struct Bomb(Value);

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if v == json!("boom") {
            panic!("Bomb::deserialize panicked");
        }
        Ok(Bomb(v))
    }
}

/// Routes the tests trip on, and a journal of closed sessions (session id → callback runs).
struct Guard {
    count: usize,
    closed: Arc<Mutex<HashMap<u64, usize>>>,
    closed_tx: mpsc::UnboundedSender<u64>,
}

#[component]
impl Guard {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|this, s: &Session| {
            *this
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(s.id())
                .or_default() += 1;
            let _ = this.closed_tx.send(s.id());
        });
    }

    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }

    /// The session's id (to find its closed-callback runs).
    pub fn id(&mut self, s: &Session) -> Result<u64> {
        Ok(s.id())
    }

    /// Counts calls; the inbound interceptor of these tests panics on this route.
    pub fn trip(&mut self, _s: &Session) -> Result<()> {
        self.count += 1;
        Ok(())
    }

    /// Counts calls; its payload type's decoder panics on `"boom"`.
    pub fn bomb(&mut self, _s: &Session, b: Bomb) -> Result<Value> {
        self.count += 1;
        Ok(b.0)
    }

    /// Counts calls (a notify target for the rate-limit tests).
    pub fn count(&mut self, _s: &Session) -> Result<()> {
        self.count += 1;
        Ok(())
    }

    /// How many `trip`, `bomb` and `count` calls ran.
    pub fn counted(&mut self, _s: &Session) -> Result<usize> {
        Ok(self.count)
    }

    /// An error response whose message the outbound interceptor panics on.
    pub fn fail(&mut self, _s: &Session) -> Result<()> {
        Err(Error::new("GAME-1", "trip-out"))
    }

    /// Pushes `v` on `onTrip` (the outbound interceptor panics on that push route).
    pub fn push_trip(&mut self, s: &Session, v: Value) -> Result<()> {
        s.push("onTrip", &v)
    }

    /// Pushes `v` on `onOk`.
    pub fn push_ok(&mut self, s: &Session, v: Value) -> Result<()> {
        s.push("onOk", &v)
    }
}

/// What a test looks at after the sessions are gone.
struct Journal {
    closed: Arc<Mutex<HashMap<u64, usize>>>,
    closed_rx: mpsc::UnboundedReceiver<u64>,
}

impl Journal {
    /// Waits for the closed callback of session `id` (bounded).
    async fn wait_closed(&mut self, id: u64) {
        timeout(T, async {
            while let Some(seen) = self.closed_rx.recv().await {
                if seen == id {
                    return;
                }
            }
            panic!("journal channel closed");
        })
        .await
        .expect("the session-closed callback ran");
    }

    fn runs(&self, id: u64) -> usize {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

fn guard() -> (Guard, Journal) {
    let closed = Arc::new(Mutex::new(HashMap::new()));
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    (
        Guard {
            count: 0,
            closed: closed.clone(),
            closed_tx,
        },
        Journal { closed, closed_rx },
    )
}

/// The interceptors of these tests: inbound panics on `Guard.Trip`; outbound panics on a
/// response whose payload mentions `trip-out` and on pushes of `onTrip`.
fn panicking_pipeline(p: &mut nano::Pipeline<Json>) {
    p.inbound.push_back(|_s, m| {
        if m.route == Some("Guard.Trip") {
            panic!("inbound interceptor panicked");
        }
        Ok(())
    });
    p.outbound.push_back(|_s, m| {
        let mentions = m.payload.windows(8).any(|w| w == b"trip-out");
        if m.route == Some("onTrip") || mentions {
            panic!("outbound interceptor panicked");
        }
        Ok(())
    });
}

async fn server_with(f: impl FnOnce(nano::App) -> nano::App) -> (Server<Json>, Journal) {
    let (g, journal) = guard();
    let app = nano::app()
        .component(g)
        .push_routes(["onTrip", "onOk"])
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano");
    (f(app).start().await.expect("server starts"), journal)
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tcp,
    Ws,
}

const BOTH: [Via; 2] = [Via::Tcp, Via::Ws];

async fn connect(server: &Server<Json>, via: Via) -> Client {
    let c = match via {
        Via::Tcp => Client::connect_tcp(server.addr(Transport::Tcp).unwrap()).await,
        Via::Ws => {
            let ws = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
            Client::connect_ws(&ws).await
        }
    };
    c.unwrap_or_else(|e| panic!("{via:?} connect: {e}"))
}

fn server_code(r: std::result::Result<Value, ClientError>) -> String {
    match r {
        Err(ClientError::Server(e)) => e.code().to_owned(),
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// Waits until `cond` holds (polled; `T` bounds the wait).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Disconnects `client`, then checks that the server let go of session `id`: no session left
/// registered and the closed callback ran exactly once.
async fn disconnect_and_check(
    server: Server<Json>,
    mut journal: Journal,
    clients: Vec<(Client, u64)>,
) {
    for (c, id) in clients {
        c.close().await;
        journal.wait_closed(id).await;
    }
    eventually("no session registered", || server.sessions() == 0).await;
    let ids: Vec<u64> = journal.closed.lock().unwrap().keys().copied().collect();
    // Shutdown drains the schedulers: any second callback run would be journaled by now.
    server.shutdown().await;
    for id in ids {
        assert_eq!(
            journal.runs(id),
            1,
            "session {id}: closed callbacks ran once"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Item 3: panics in user code on the connection task.

#[tokio::test]
async fn a_panicking_inbound_interceptor_fails_one_message_and_the_connection_keeps_serving() {
    let (server, journal) = server_with(|a| a.pipeline(panicking_pipeline)).await;
    let mut clients = Vec::new();
    for via in BOTH {
        let c = connect(&server, via).await;
        let id: u64 = c.request("Guard.Id", &json!(null)).await.unwrap();
        assert_eq!(
            server_code(c.request("Guard.Trip", &json!(null)).await),
            "NANO-500"
        );
        // A notify the interceptor panics on is dropped.
        c.notify("Guard.Trip", &json!(null)).await.unwrap();
        let v: Value = c
            .request("Guard.Echo", &json!({"after": "panic"}))
            .await
            .unwrap();
        assert_eq!(
            v,
            json!({"after": "panic"}),
            "{via:?}: the next request is served"
        );
        let n: usize = c.request("Guard.Counted", &json!(null)).await.unwrap();
        assert_eq!(n, 0, "{via:?}: neither message reached the handler");
        clients.push((c, id));
    }
    assert_eq!(server.sessions(), 2);
    disconnect_and_check(server, journal, clients).await;
}

#[tokio::test]
async fn a_payload_whose_deserialize_panics_gets_nano_500_and_the_connection_survives() {
    let (server, journal) = server_with(|a| a).await;
    let mut clients = Vec::new();
    for via in BOTH {
        let c = connect(&server, via).await;
        let id: u64 = c.request("Guard.Id", &json!(null)).await.unwrap();
        assert_eq!(
            server_code(c.request("Guard.Bomb", &json!("boom")).await),
            "NANO-500"
        );
        c.notify("Guard.Bomb", &json!("boom")).await.unwrap();
        let v: Value = c.request("Guard.Bomb", &json!("fine")).await.unwrap();
        assert_eq!(v, json!("fine"), "{via:?}: the same route still decodes");
        clients.push((c, id));
    }
    let c = &clients[0].0;
    let n: usize = c.request("Guard.Counted", &json!(null)).await.unwrap();
    assert_eq!(n, 2, "only the two decodable requests reached the handler");
    disconnect_and_check(server, journal, clients).await;
}

#[tokio::test]
async fn a_panicking_outbound_interceptor_still_answers_once_and_drops_the_push() {
    let (server, journal) = server_with(|a| a.pipeline(panicking_pipeline)).await;
    let mut clients = Vec::new();
    for via in BOTH {
        let c = connect(&server, via).await;
        let id: u64 = c.request("Guard.Id", &json!(null)).await.unwrap();
        let mut trips = c.on("onTrip");
        let mut oks = c.on("onOk");
        // On a response: an error response instead.
        assert_eq!(
            server_code(c.request("Guard.Echo", &json!("trip-out")).await),
            "NANO-500"
        );
        // On an error response: the error response as the handler made it.
        match c.request::<_, Value>("Guard.Fail", &json!(null)).await {
            Err(ClientError::Server(e)) => {
                assert_eq!((e.code(), e.message()), ("GAME-1", "trip-out"));
            }
            other => panic!("{via:?}: expected GAME-1, got {other:?}"),
        }
        // On a push: the push is dropped (the pushing handler sees the refusal).
        assert_eq!(
            server_code(c.request("Guard.PushTrip", &json!(1)).await),
            "NANO-500"
        );
        c.request::<_, Value>("Guard.PushOk", &json!(2))
            .await
            .unwrap();
        let got = timeout(T, oks.recv()).await.unwrap().unwrap();
        assert_eq!(c.decode::<Value>(&got).unwrap(), json!(2));
        // Pushes and responses arrive in order: the dropped push would have come first.
        assert!(
            trips.try_recv().is_err(),
            "{via:?}: the refused push was not sent"
        );
        clients.push((c, id));
    }
    disconnect_and_check(server, journal, clients).await;
}

#[tokio::test]
async fn a_panicking_handshake_validator_refuses_that_handshake_and_the_server_goes_on() {
    let (server, journal) = server_with(|a| {
        a.handshake_validator(|hs| {
            if hs.user["token"] == "panic" {
                panic!("validator panicked");
            }
            Ok(())
        })
    })
    .await;
    let tcp = server.addr(Transport::Tcp).unwrap();
    let ws = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
    for _ in 0..2 {
        let refused = Client::<Json>::builder()
            .handshake_user(json!({"token": "panic"}))
            .connect_tcp(tcp)
            .await;
        assert!(
            matches!(refused, Err(ClientError::Handshake { code: 500, .. })),
            "{refused:?}"
        );
        let refused = Client::<Json>::builder()
            .handshake_user(json!({"token": "panic"}))
            .connect_ws(&ws)
            .await;
        assert!(
            matches!(refused, Err(ClientError::Handshake { code: 500, .. })),
            "{refused:?}"
        );
    }
    let ok = Client::<Json>::builder()
        .handshake_user(json!({"token": "fine"}))
        .connect_tcp(tcp)
        .await
        .unwrap();
    let id: u64 = ok.request("Guard.Id", &json!(null)).await.unwrap();
    assert_eq!(server.sessions(), 1, "refused handshakes open no session");
    disconnect_and_check(server, journal, vec![(ok, id)]).await;
}

// In memory, where every packet the server sends is recorded: exactly one answer each.

async fn harness(
    b: impl FnOnce(EngineBuilder<Json>) -> EngineBuilder<Json>,
) -> (Harness<Json>, Journal) {
    let (g, journal) = guard();
    let mut builder = b(EngineBuilder::new()
        .component(g)
        .push_routes(["onTrip", "onOk"]));
    panicking_pipeline(builder.pipeline_mut());
    (Harness::start(builder).await.unwrap(), journal)
}

/// The answers to request `id` received so far.
fn answers(c: &TestClient<Json>, id: u64) -> usize {
    c.responses().iter().filter(|r| r.id == id).count()
}

#[tokio::test]
async fn every_request_a_panic_touches_gets_exactly_one_answer() {
    let (h, mut journal) = harness(|b| b).await;
    let c = h.connect();
    let cases: [(&str, Value, Option<&str>); 5] = [
        ("Guard.Trip", json!(null), Some("NANO-500")),
        ("Guard.Bomb", json!("boom"), Some("NANO-500")),
        ("Guard.Echo", json!("trip-out"), Some("NANO-500")),
        ("Guard.Fail", json!(null), Some("GAME-1")),
        ("Guard.PushTrip", json!(1), Some("NANO-500")),
    ];
    for (n, (route, payload, code)) in cases.iter().enumerate() {
        let r = c.request::<_, Value>(route, payload).await;
        assert_eq!(r.err().as_ref().map(Error::code), *code, "{route}");
        // Request ids count from 1; a later answer on the same scheduler comes after any
        // duplicate of this one.
        let v: Value = c.request("Guard.Echo", &json!(n)).await.unwrap();
        assert_eq!(v, json!(n));
        let id = 2 * n as u64 + 1;
        assert_eq!(answers(&c, id), 1, "{route}: one answer");
        assert_eq!(answers(&c, id + 1), 1);
    }
    assert!(c.pushes().is_empty(), "the refused push was not sent");
    assert!(!c.session().is_closed());
    let id = c.session().id();
    c.disconnect();
    journal.wait_closed(id).await;
    h.shutdown().await;
    assert_eq!(journal.runs(id), 1);
}

// ---------------------------------------------------------------------------------------------
// Item 5: per-session message rate limits.

/// A rate so slow no token comes back during a test: exactly `burst` messages are admitted.
fn burst_only(burst: u32) -> RateLimit {
    RateLimit::new(0.001, burst)
}

#[tokio::test]
async fn over_the_limit_a_request_gets_nano_429_and_a_notify_is_dropped() {
    let (h, _journal) = harness(|b| b.rate_limit(burst_only(4))).await;
    let c = h.connect();
    for _ in 0..5 {
        c.notify("Guard.Count", &json!(null)).await.unwrap();
    }
    // The first four notifies took the four tokens; the fifth was dropped, and the request
    // finds the bucket empty.
    let e = c
        .request::<_, usize>("Guard.Counted", &json!(null))
        .await
        .unwrap_err();
    assert_eq!(e.code(), nano_core::CODE_TOO_MANY_REQUESTS);
    assert_eq!(e.code(), "NANO-429");
    assert_eq!(answers(&c, 1), 1, "exactly one answer");
    assert!(!c.session().is_closed(), "Reject keeps the session");
    assert_eq!(c.kicked(), None);
    // Another session has a bucket of its own, and sees what got through.
    let other = h.connect();
    let n: usize = other.request("Guard.Counted", &json!(null)).await.unwrap();
    assert_eq!(n, 4, "four of the five notifies ran");
}

#[tokio::test]
async fn the_kick_option_kicks_the_session_with_reason_rate_limit() {
    let (h, mut journal) =
        harness(|b| b.rate_limit(burst_only(2).on_exceed(OverLimit::Kick))).await;
    let c = h.connect();
    for n in 0..2 {
        let v: Value = c.request("Guard.Echo", &json!(n)).await.unwrap();
        assert_eq!(v, json!(n));
    }
    let e = c
        .request::<_, Value>("Guard.Echo", &json!(3))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        "NANO-429",
        "the request over the limit is answered"
    );
    assert_eq!(c.kicked(), Some(Some("rate limit".to_owned())));
    assert!(c.session().is_closed());
    journal.wait_closed(c.session().id()).await;
    let other = h.connect();
    let v: Value = other.request("Guard.Echo", &json!("still")).await.unwrap();
    assert_eq!(v, json!("still"));
}

#[tokio::test]
async fn without_a_limit_nothing_is_refused() {
    let (h, _journal) = harness(|b| b).await;
    let c = h.connect();
    for _ in 0..2000 {
        c.notify("Guard.Count", &json!(null)).await.unwrap();
    }
    let n: usize = c.request("Guard.Counted", &json!(null)).await.unwrap();
    assert_eq!(n, 2000);
}

#[tokio::test]
async fn with_paused_time_the_bucket_refills_at_its_rate() {
    let (h, _journal) = harness(|b| b.rate_limit(RateLimit::new(10.0, 2))).await;
    tokio::time::pause();
    let c = h.connect();
    for _ in 0..2 {
        c.request::<_, Value>("Guard.Echo", &json!(1))
            .await
            .unwrap();
    }
    let e = c
        .request::<_, Value>("Guard.Echo", &json!(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-429");
    tokio::time::advance(Duration::from_millis(100)).await;
    c.request::<_, Value>("Guard.Echo", &json!(1))
        .await
        .unwrap();
    let e = c
        .request::<_, Value>("Guard.Echo", &json!(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-429");
}

/// Floods `Guard.Echo` in pipelined batches of 200 until a request is refused; returns the
/// error codes seen (every request is answered: the client would report a timeout otherwise).
async fn flood_until_refused(c: &Client) -> Vec<String> {
    let mut codes = Vec::new();
    for _ in 0..50 {
        let batch: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                async move { c.request::<_, Value>("Guard.Echo", &json!(i)).await }
            })
            .collect();
        for r in futures_util::future::join_all(batch).await {
            match r {
                Ok(_) => {}
                Err(ClientError::Server(e)) => codes.push(e.code().to_owned()),
                Err(ClientError::Closed) => codes.push("closed".into()),
                Err(e) => panic!("flood request failed: {e}"),
            }
        }
        if !codes.is_empty() {
            break;
        }
    }
    codes
}

/// While `flood` runs, a second session sends 40 requests one after another (under its own
/// burst of 50); every one is answered with its value.
async fn second_session_is_served_during(
    server: &Server<Json>,
    flood: impl Future<Output = Vec<String>>,
) -> Vec<String> {
    let calm = connect(server, Via::Ws).await;
    let calm_side = async {
        for n in 0..40 {
            let v: Value = calm
                .request("Guard.Echo", &json!({ "calm": n }))
                .await
                .unwrap_or_else(|e| panic!("calm request {n}: {e}"));
            assert_eq!(v, json!({ "calm": n }));
        }
    };
    let (codes, ()) = tokio::join!(flood, calm_side);
    calm.request::<_, Value>("Guard.Echo", &json!("after"))
        .await
        .expect("the calm session is still served");
    codes
}

#[tokio::test]
async fn a_flooder_gets_nano_429_while_another_session_keeps_being_answered() {
    let (server, _journal) = server_with(|a| a.rate_limit(RateLimit::new(20.0, 50))).await;
    let flooder = connect(&server, Via::Tcp).await;
    let codes = second_session_is_served_during(&server, flood_until_refused(&flooder)).await;
    assert!(!codes.is_empty(), "the flooder was limited");
    assert!(codes.iter().all(|c| c == "NANO-429"), "{codes:?}");
    assert!(!flooder.is_closed(), "Reject keeps the flooder connected");
    // Its bucket refills: after a pause the flooder is served again (bounded retry).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match flooder
            .request::<_, Value>("Guard.Echo", &json!("again"))
            .await
        {
            Ok(v) => break assert_eq!(v, json!("again")),
            Err(ClientError::Server(e)) if e.code() == "NANO-429" => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the bucket never refilled"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn a_flooder_is_kicked_with_the_kick_option_while_another_session_keeps_being_answered() {
    let (server, mut journal) =
        server_with(|a| a.rate_limit(RateLimit::new(20.0, 50).on_exceed(OverLimit::Kick))).await;
    let flooder = connect(&server, Via::Tcp).await;
    let id: u64 = flooder.request("Guard.Id", &json!(null)).await.unwrap();
    let codes = second_session_is_served_during(&server, flood_until_refused(&flooder)).await;
    assert!(codes.iter().any(|c| c == "NANO-429"), "{codes:?}");
    match timeout(T, flooder.closed())
        .await
        .expect("the flooder is disconnected")
    {
        ClientEvent::Kicked { reason } => assert_eq!(reason.as_deref(), Some("rate limit")),
        other => panic!("expected a kick, got {other:?}"),
    }
    journal.wait_closed(id).await;
    eventually("only the calm session is left", || server.sessions() <= 1).await;
}
