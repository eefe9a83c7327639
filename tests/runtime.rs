//! The nano-core runtime through `#[component]`, in memory (no sockets): ordering, timers,
//! panics, broadcast, async work, lifecycle, sessions, groups, pipeline, errors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nano::engine::EngineBuilder;
use nano::prelude::*;
use nano::testing::Harness;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Ordering: one handler at a time, in arrival order.

#[derive(Serialize, Deserialize)]
struct Mark {
    client: u32,
    seq: u32,
}

#[derive(Default)]
struct Order {
    log: Vec<(u32, u32)>,
    busy: Arc<AtomicBool>,
    overlaps: usize,
}

#[component]
impl Order {
    pub fn record(&mut self, _s: &Session, m: Mark) -> Result<()> {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlaps += 1;
        }
        self.log.push((m.client, m.seq));
        self.busy.store(false, Ordering::SeqCst);
        Ok(())
    }

    pub fn log(&mut self, _s: &Session) -> Result<Value> {
        Ok(json!({ "log": self.log, "overlaps": self.overlaps }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_from_ten_sessions_run_one_at_a_time_in_arrival_order() {
    let h = Harness::start(EngineBuilder::new().component(Order::default()))
        .await
        .unwrap();
    let clients: Vec<_> = (0..10).map(|_| h.connect()).collect();
    let mut sent = Vec::new();
    for seq in 0..100u32 {
        for (c, client) in clients.iter().enumerate() {
            let c = c as u32;
            client
                .notify("Order.Record", &Mark { client: c, seq })
                .await
                .unwrap();
            sent.push((c, seq));
        }
    }
    let v: Value = clients[0].request("Order.Log", &()).await.unwrap();
    let log: Vec<(u32, u32)> = serde_json::from_value(v["log"].clone()).unwrap();
    assert_eq!(log.len(), 1000);
    assert_eq!(log, sent, "handled in arrival order");
    assert_eq!(v["overlaps"], 0, "never two handlers at once");
}

// ---------------------------------------------------------------------------------------------
// Timers.

#[derive(Default)]
struct Clock {
    fired: Vec<String>,
    ticks: u32,
}

#[component]
impl Clock {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.after(Duration::from_millis(30), |c| c.fired.push("c".into()));
        ctx.after(Duration::from_millis(10), |c| c.fired.push("a".into()));
        ctx.after(Duration::from_millis(20), |c| c.fired.push("b".into()));
        let cancelled = ctx.after(Duration::from_millis(15), |c| c.fired.push("x".into()));
        ctx.cancel(cancelled);
        let ctx2 = ctx.clone();
        let every = Arc::new(Mutex::new(None));
        let id_slot = every.clone();
        let id = ctx.every(Duration::from_millis(100), move |c| {
            c.ticks += 1;
            if c.ticks == 3 {
                if let Some(id) = *id_slot.lock().unwrap() {
                    ctx2.cancel(id);
                }
            }
        });
        *every.lock().unwrap() = Some(id);
    }

    pub fn state(&mut self, _s: &Session) -> Result<Value> {
        Ok(json!({ "fired": self.fired, "ticks": self.ticks }))
    }
}

#[tokio::test(start_paused = true)]
async fn timers_fire_in_order_and_cancel_works() {
    let h = Harness::start(EngineBuilder::new().component(Clock::default()))
        .await
        .unwrap();
    let c = h.connect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v: Value = c.request("Clock.State", &()).await.unwrap();
    assert_eq!(v["fired"], json!(["a", "b", "c"]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let v: Value = c.request("Clock.State", &()).await.unwrap();
    assert_eq!(
        v["ticks"], 3,
        "the periodic timer stopped after it cancelled itself"
    );
    assert_eq!(
        v["fired"],
        json!(["a", "b", "c"]),
        "the cancelled timer never fired"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors and panics.

#[derive(Serialize, Deserialize)]
struct Num {
    n: i64,
}

struct Calc {
    calls: u32,
}

#[component]
impl Calc {
    pub fn double(&mut self, _s: &Session, x: Num) -> Result<Num> {
        self.calls += 1;
        Ok(Num { n: x.n * 2 })
    }

    pub fn boom(&mut self, _s: &Session) -> Result<()> {
        panic!("boom");
    }

    pub async fn boom_later(&mut self, _s: &Session) -> Result<()> {
        tokio::task::yield_now().await;
        panic!("async boom");
    }

    pub fn refuse(&mut self, _s: &Session) -> Result<()> {
        Err(Error::new("GAME-7", "not your turn").with_metadata("turn", "bob"))
    }

    pub fn notify_fails(&mut self, _s: &Session, _v: Value) -> Result<()> {
        Err(Error::new("GAME-8", "ignored"))
    }

    pub fn calls(&self, _s: &Session) -> Result<u32> {
        Ok(self.calls)
    }
}

#[tokio::test]
async fn panicking_handler_gets_an_error_response_and_the_next_message_is_handled() {
    let h = Harness::start(EngineBuilder::new().component(Calc { calls: 0 }))
        .await
        .unwrap();
    let c = h.connect();
    let e = c.request::<_, Value>("Calc.Boom", &()).await.unwrap_err();
    assert_eq!(e.code(), "NANO-500");
    let e = c
        .request::<_, Value>("Calc.BoomLater", &())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-500");
    let r: Num = c.request("Calc.Double", &Num { n: 21 }).await.unwrap();
    assert_eq!(r.n, 42);
    assert_eq!(c.request::<_, u32>("Calc.Calls", &()).await.unwrap(), 1);
}

#[tokio::test]
async fn every_failure_is_answered_with_a_coded_error() {
    let h = Harness::start(EngineBuilder::new().component(Calc { calls: 0 }))
        .await
        .unwrap();
    let c = h.connect();
    let e = c.request::<_, Value>("Calc.Nope", &()).await.unwrap_err();
    assert_eq!(e.code(), "NANO-404");
    assert!(e.message().contains("Calc.Nope"));
    let e = c
        .request_raw("Calc.Double", b"{not json")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-400");
    let e = c.request::<_, Value>("Calc.Refuse", &()).await.unwrap_err();
    assert_eq!(e.code(), "GAME-7");
    assert_eq!(e.message(), "not your turn");
    assert_eq!(e.metadata().get("turn").map(String::as_str), Some("bob"));
    // A notify never gets a response, even when its handler fails.
    c.notify("Calc.NotifyFails", &json!({})).await.unwrap();
    let _: u32 = c.request("Calc.Calls", &()).await.unwrap();
    assert_eq!(
        c.responses().len(),
        4,
        "one response per request, none for the notify"
    );
    let ids: Vec<u64> = c.responses().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

// ---------------------------------------------------------------------------------------------
// Broadcast: serialized once.

static SERIALIZATIONS: AtomicUsize = AtomicUsize::new(0);

struct Counted(&'static str);

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SERIALIZATIONS.fetch_add(1, Ordering::SeqCst);
        s.serialize_str(self.0)
    }
}

#[tokio::test]
async fn broadcast_to_a_thousand_members_serializes_once_and_shares_one_buffer() {
    let h = Harness::<Json>::empty();
    let group: Group = Group::new("all");
    let clients: Vec<_> = (0..1000).map(|_| h.connect()).collect();
    for c in &clients {
        group.add(c.session()).unwrap();
    }
    let before = SERIALIZATIONS.load(Ordering::SeqCst);
    group.broadcast("onNews", &Counted("hello")).unwrap();
    assert_eq!(SERIALIZATIONS.load(Ordering::SeqCst) - before, 1);
    let first = clients[0].packets()[0].clone();
    for c in &clients {
        let p = c.packets();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].as_ptr(),
            first.as_ptr(),
            "the same encoded bytes for everyone"
        );
        assert_eq!(c.pushes()[0].route, "onNews");
        assert_eq!(c.push_as::<String>(0).unwrap(), "hello");
    }
}

#[tokio::test]
async fn groups_track_members_and_survive_full_or_closed_members() {
    let h = Harness::<Json>::empty();
    let g: Group = Group::new("room");
    let a = h.connect();
    let full = h.connect_with_capacity(0);
    let gone = h.connect();
    let b = h.connect();
    a.session().bind("alice").unwrap();
    b.session().bind("bob").unwrap();
    assert_eq!(a.session().bind("").unwrap_err().code(), "NANO-400");
    for c in [&a, &full, &gone, &b] {
        g.add(c.session()).unwrap();
    }
    assert_eq!(
        g.add(a.session()).unwrap_err().code(),
        "NANO-409",
        "duplicate add is a conflict"
    );
    assert_eq!(g.count(), 4);
    assert_eq!(g.members(), vec!["alice".to_string(), "bob".to_string()]);
    assert!(g.contains("bob"));
    assert!(g.member("alice").unwrap().same(a.session()));
    gone.disconnect();
    assert_eq!(g.count(), 3, "a closed session leaves its groups");
    g.broadcast("onMsg", &json!({"x": 1})).unwrap();
    assert_eq!(a.pushes().len(), 1);
    assert_eq!(
        b.pushes().len(),
        1,
        "delivery continued past the full member"
    );
    g.multicast("onMsg", &json!({"x": 2}), |s| {
        s.uid().as_deref() == Some("bob")
    })
    .unwrap();
    assert_eq!(a.pushes().len(), 1);
    assert_eq!(b.pushes().len(), 2);
    assert!(g.leave(b.session()));
    assert!(!g.contains("bob"));
    g.leave_all();
    assert_eq!(g.count(), 0);
    g.close();
    assert_eq!(g.add(a.session()).unwrap_err().code(), "NANO-410");
}

// ---------------------------------------------------------------------------------------------
// Async work, session data, session-closed callbacks.

struct Players {
    ctx: Option<Context<Players>>,
    loaded: Vec<String>,
    closed: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Login {
    name: String,
}

#[component]
impl Players {
    fn init(&mut self, ctx: &Context<Self>) {
        self.ctx = Some(ctx.clone());
        ctx.on_session_closed(|this, s: &Session| this.closed.push(s.id()));
    }

    pub fn login(&mut self, s: &Session, req: Login) -> Result<()> {
        let Some(ctx) = &self.ctx else {
            return Err(Error::internal("not initialised"));
        };
        let s = s.clone();
        ctx.spawn(
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // a slow "database"
                format!("player:{}", req.name)
            },
            move |this, player| {
                this.loaded.push(player.clone());
                let _ = s.push("onLogin", &player);
            },
        );
        Ok(())
    }

    pub async fn profile(&mut self, s: &Session) -> Result<Value> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.set("visits", s.get::<u32>("visits").unwrap_or(0) + 1);
        Ok(
            json!({ "loaded": self.loaded, "closed": self.closed, "visits": s.get::<u32>("visits") }),
        )
    }
}

#[tokio::test]
async fn async_results_come_back_on_the_scheduler_and_closed_callbacks_run() {
    let h = Harness::start(EngineBuilder::new().component(Players {
        ctx: None,
        loaded: vec![],
        closed: vec![],
    }))
    .await
    .unwrap();
    let c = h.connect();
    let other = h.connect();
    c.request::<_, ()>("Players.Login", &Login { name: "ann".into() })
        .await
        .unwrap();
    let pushes = c.wait_pushes(1).await.unwrap();
    assert_eq!(pushes[0].route, "onLogin");
    assert_eq!(c.push_as::<String>(0).unwrap(), "player:ann");
    other.disconnect();
    let v: Value = c.request("Players.Profile", &()).await.unwrap();
    assert_eq!(v["loaded"], json!(["player:ann"]));
    assert_eq!(v["closed"], json!([other.session().id()]));
    assert_eq!(v["visits"], 1);
    let v: Value = c.request("Players.Profile", &()).await.unwrap();
    assert_eq!(v["visits"], 2);
}

// ---------------------------------------------------------------------------------------------
// Lifecycle order.

type Journal = Arc<Mutex<Vec<String>>>;

/// Writes each hook it runs, with its tag, to a journal shared by several instances.
struct Journaled(&'static str, Journal);

impl Journaled {
    fn note(&self, hook: &str) {
        self.1.lock().unwrap().push(format!("{hook} {}", self.0));
    }
}

#[component]
impl Journaled {
    fn init(&mut self, _ctx: &Context<Self>) {
        self.note("init");
    }
    fn after_init(&mut self, _ctx: &Context<Self>) {
        self.note("after_init");
    }
    fn before_shutdown(&mut self, _ctx: &Context<Self>) {
        self.note("before_shutdown");
    }
    fn shutdown(&mut self, _ctx: &Context<Self>) {
        self.note("shutdown");
    }
}

#[tokio::test]
async fn lifecycle_hooks_run_in_nanos_order() {
    let j: Journal = Arc::default();
    let h = Harness::start(
        EngineBuilder::new()
            .component_named(Journaled("A", j.clone()), "Alpha", nano::DEFAULT_SCHEDULER)
            .component_named(Journaled("B", j.clone()), "Beta", "beta"),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), h.shutdown())
        .await
        .expect("shutdown within the bound");
    assert_eq!(
        *j.lock().unwrap(),
        [
            "init A",
            "init B",
            "after_init A",
            "after_init B",
            "before_shutdown B",
            "before_shutdown A",
            "shutdown B",
            "shutdown A"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Parallel schedulers.

/// The flag the releaser sets, and how the waiter tells the test it is running.
struct Waiter(Arc<AtomicBool>, Arc<tokio::sync::Notify>);
struct Releaser(Arc<AtomicBool>);

#[component]
impl Waiter {
    /// Blocks its scheduler until the releaser (on another scheduler) runs.
    pub fn wait(&mut self, _s: &Session) -> Result<bool> {
        self.1.notify_one();
        let start = std::time::Instant::now();
        while !self.0.load(Ordering::SeqCst) {
            if start.elapsed() > Duration::from_secs(5) {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(true)
    }
}

#[component]
impl Releaser {
    pub fn release(&mut self, _s: &Session) -> Result<()> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_on_their_own_schedulers_run_in_parallel() {
    let flag = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(tokio::sync::Notify::new());
    let h = Harness::start(
        EngineBuilder::new()
            .component_on(Waiter(flag.clone(), waiting.clone()), "waiting")
            .component_on(Releaser(flag), "releasing"),
    )
    .await
    .unwrap();
    // Two clients, each on its own task, as two connections are.
    let a = h.connect();
    let b = h.connect();
    let waited = tokio::spawn(async move { a.request::<_, bool>("Waiter.Wait", &()).await });
    // The release is sent only once the waiter holds its scheduler: on a shared scheduler it
    // would queue behind the wait, and the wait would give up (false).
    tokio::time::timeout(Duration::from_secs(10), waiting.notified())
        .await
        .expect("the waiter started");
    let released = tokio::time::timeout(
        Duration::from_secs(10),
        b.request::<_, ()>("Releaser.Release", &()),
    )
    .await
    .expect("the releaser answered while the waiter was busy");
    released.unwrap();
    let waited = waited.await.unwrap();
    assert!(
        waited.unwrap(),
        "the releaser ran while the waiter was busy"
    );
}

// ---------------------------------------------------------------------------------------------
// Pipeline.

struct Echo;

#[component]
impl Echo {
    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }
}

#[tokio::test]
async fn pipeline_sees_traffic_and_can_refuse_requests() {
    let inbound = Arc::new(AtomicUsize::new(0));
    let outbound = Arc::new(AtomicUsize::new(0));
    let mut b = EngineBuilder::new().component(Echo);
    let (i, o) = (inbound.clone(), outbound.clone());
    b.pipeline_mut().inbound.push_back(move |_s, _m| {
        i.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    b.pipeline_mut().inbound.push_front(|_s, m| {
        if m.payload == b"\"forbidden\"" {
            return Err(Error::forbidden("not allowed"));
        }
        Ok(())
    });
    b.pipeline_mut().outbound.push_back(move |_s, m| {
        o.fetch_add(m.payload.len(), Ordering::SeqCst);
        Ok(())
    });
    let h = Harness::start(b).await.unwrap();
    let c = h.connect();
    let v: Value = c.request("Echo.Echo", &json!("hi")).await.unwrap();
    assert_eq!(v, json!("hi"));
    let e = c
        .request::<_, Value>("Echo.Echo", &json!("forbidden"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-403");
    assert_eq!(
        inbound.load(Ordering::SeqCst),
        1,
        "the refusing interceptor ran first"
    );
    assert!(
        outbound.load(Ordering::SeqCst) >= 4,
        "outbound saw the response payload"
    );
}

// ---------------------------------------------------------------------------------------------
// Route table and handshake dictionary.

#[tokio::test]
async fn the_dictionary_is_stable_and_offered_in_the_handshake() {
    let a = EngineBuilder::new()
        .component(Echo)
        .component(Calc { calls: 0 })
        .build()
        .unwrap();
    let b = EngineBuilder::new()
        .component(Calc { calls: 0 })
        .component(Echo)
        .build()
        .unwrap();
    let codes = |e: &nano::engine::Engine| {
        e.dictionary()
            .iter()
            .map(|(r, c)| (r.to_owned(), c))
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(&a), codes(&b));
    assert!(a.dictionary().code("Echo.Echo").is_some());
    let sys = a.handshake_sys();
    assert_eq!(sys["serializer"], "json");
    assert_eq!(
        sys["dict"]["Echo.Echo"],
        a.dictionary().code("Echo.Echo").unwrap()
    );
    let dup = EngineBuilder::new().component(Echo).component(Echo).build();
    let err = dup.err().expect("the same route twice is refused");
    assert!(
        err.to_string().contains("Echo.Echo"),
        "names the route: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// An async handler holds its scheduler until it completes.

#[derive(Default)]
struct Mixed {
    log: Vec<&'static str>,
}

#[component]
impl Mixed {
    pub async fn slow(&mut self, _s: &Session) -> Result<()> {
        self.log.push("slow started");
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.log.push("slow done");
        Ok(())
    }

    pub fn fast(&mut self, _s: &Session) -> Result<()> {
        self.log.push("fast");
        Ok(())
    }

    pub fn log(&self, _s: &Session) -> Result<Vec<&'static str>> {
        Ok(self.log.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_after_an_async_handler_wait_for_it() {
    let h = Harness::start(EngineBuilder::new().component(Mixed::default()))
        .await
        .unwrap();
    let a = h.connect();
    let b = h.connect();
    a.notify("Mixed.Slow", &()).await.unwrap();
    b.notify("Mixed.Fast", &()).await.unwrap();
    a.notify("Mixed.Fast", &()).await.unwrap();
    let log: Vec<String> = b.request("Mixed.Log", &()).await.unwrap();
    assert_eq!(log, ["slow started", "slow done", "fast", "fast"]);
}

// ---------------------------------------------------------------------------------------------
// Long queues: a connection's task runs a bounded share, the scheduler task the rest, in order.

#[derive(Default)]
struct Burst {
    ctx: Option<Context<Burst>>,
    seen: Vec<u32>,
}

#[component]
impl Burst {
    fn init(&mut self, ctx: &Context<Self>) {
        self.ctx = Some(ctx.clone());
    }

    /// Queues `n` follow-up jobs on its own scheduler.
    pub fn fan_out(&mut self, _s: &Session, n: u32) -> Result<()> {
        let Some(ctx) = &self.ctx else {
            return Err(Error::internal("not initialised"));
        };
        for i in 0..n {
            ctx.run(move |b| b.seen.push(i));
        }
        Ok(())
    }

    pub fn seen(&self, _s: &Session) -> Result<Vec<u32>> {
        Ok(self.seen.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_runs_completely_and_in_order() {
    let h = Harness::start(EngineBuilder::new().component(Burst::default()))
        .await
        .unwrap();
    let c = h.connect();
    c.request::<_, ()>("Burst.FanOut", &500u32).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen: Vec<u32> = c.request("Burst.Seen", &()).await.unwrap();
        if seen.len() == 500 {
            assert_eq!(seen, (0..500).collect::<Vec<_>>());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} ran",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
