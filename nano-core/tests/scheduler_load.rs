//! The shared scheduler under load, through the engine: fairness between sessions, order
//! within a session, timers that keep their period and stay cancelled.
//!
//! Time-dependent tests run on tokio's paused clock, moved only by the handlers themselves
//! (`tokio::time::advance`), so "late" is counted in jobs, never measured on the machine's clock.

use std::sync::Arc;
use std::time::Duration;

use nano_core::component::Context;
use nano_core::testing::Harness;
use nano_core::{EngineBuilder, Result, Session, TimerId};
use nano_macros::component;
use tokio::sync::Semaphore;

/// Jobs the scheduler runs in a row before it looks at its timers (`scheduler::BUDGET`).
const BUDGET: u32 = 64;

// ---------------------------------------------------------------------------------------------
// Fairness: a session with a long queue does not hold back another session.

/// `Hold` keeps the scheduler (an async handler waiting on `gate`) while messages queue up
/// behind it; `Record` logs (session, seq).
struct Fair {
    gate: Arc<Semaphore>,
    log: Vec<(u64, u32)>,
}

#[component(crate = ::nano_core)]
impl Fair {
    pub async fn hold(&mut self, _s: &Session) -> Result<()> {
        if let Ok(p) = self.gate.acquire().await {
            p.forget();
        }
        Ok(())
    }

    pub fn record(&mut self, s: &Session, seq: u32) -> Result<()> {
        self.log.push((s.id(), seq));
        Ok(())
    }

    pub fn log(&self, _s: &Session) -> Result<Vec<(u64, u32)>> {
        Ok(self.log.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_session_delays_another_sessions_message_by_one_job_not_its_backlog() {
    const FLOOD: u32 = 60;
    let gate = Arc::new(Semaphore::new(0));
    let h = Harness::start(EngineBuilder::new().component(Fair {
        gate: gate.clone(),
        log: Vec::new(),
    }))
    .await
    .unwrap();
    let (flooder, other) = (h.connect(), h.connect());
    // The flooder's `Hold` owns the scheduler; its records and then the other's queue behind.
    flooder.notify("Fair.Hold", &()).await.unwrap();
    for seq in 0..FLOOD {
        flooder.notify("Fair.Record", &seq).await.unwrap();
    }
    other.notify("Fair.Record", &0u32).await.unwrap();
    gate.add_permits(1);
    // In the flooder's lane, so after all of its records.
    let log: Vec<(u64, u32)> =
        tokio::time::timeout(Duration::from_secs(10), flooder.request("Fair.Log", &()))
            .await
            .expect("the queue never ran")
            .unwrap();
    assert_eq!(log.len(), FLOOD as usize + 1, "messages lost");
    let at = log
        .iter()
        .position(|&(s, _)| s == other.session().id())
        .expect("the other session's message never ran");
    assert!(
        at <= 1,
        "the other session waited for {at} of the flooder's {FLOOD} queued messages"
    );
    let mine: Vec<u32> = log
        .iter()
        .filter(|&&(s, _)| s == flooder.session().id())
        .map(|&(_, q)| q)
        .collect();
    assert_eq!(mine, (0..FLOOD).collect::<Vec<_>>(), "the flooder's order");
}

/// Sessions sending at once, from their own tasks, some messages async (so queues form and
/// pass from task to task): every session's messages run in the order it sent them.
#[derive(Default)]
struct Order {
    log: Vec<(u32, u32)>,
}

#[component(crate = ::nano_core)]
impl Order {
    pub fn record(&mut self, _s: &Session, m: (u32, u32)) -> Result<()> {
        self.log.push(m);
        Ok(())
    }

    pub async fn record_later(&mut self, _s: &Session, m: (u32, u32)) -> Result<()> {
        tokio::task::yield_now().await;
        self.log.push(m);
        Ok(())
    }

    pub fn log(&self, _s: &Session) -> Result<Vec<(u32, u32)>> {
        Ok(self.log.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_messages_from_concurrent_sessions_run_in_each_sessions_order() {
    const SESSIONS: u32 = 10;
    const EACH: u32 = 300;
    let h = Harness::start(EngineBuilder::new().component(Order::default()))
        .await
        .unwrap();
    let senders: Vec<_> = (0..SESSIONS)
        .map(|c| {
            let client = h.connect();
            tokio::spawn(async move {
                for seq in 0..EACH {
                    let route = if seq % 25 == 3 {
                        "Order.RecordLater"
                    } else {
                        "Order.Record"
                    };
                    client.notify(route, &(c, seq)).await.unwrap();
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for s in senders {
        clients.push(s.await.unwrap());
    }
    // Each client's last message is in; a request in each lane runs after that lane's messages.
    let mut log = Vec::new();
    for c in &clients {
        log = tokio::time::timeout(Duration::from_secs(20), c.request("Order.Log", &()))
            .await
            .expect("the queue never drained")
            .unwrap();
    }
    let log: Vec<(u32, u32)> = log;
    assert_eq!(log.len(), (SESSIONS * EACH) as usize, "messages lost");
    for c in 0..SESSIONS {
        let seqs: Vec<u32> = log
            .iter()
            .filter(|&&(s, _)| s == c)
            .map(|&(_, q)| q)
            .collect();
        assert_eq!(
            seqs,
            (0..EACH).collect::<Vec<_>>(),
            "session {c} out of order"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Timers under a flood.

/// `Tick` is a message that takes 1 ms (of the paused clock); a periodic timer records how
/// many ticks had run each time it fired.
#[derive(Default)]
struct Clock {
    ticks: u32,
    fires: Vec<u32>,
}

const PERIOD_MS: u32 = 100;

#[component(crate = ::nano_core)]
impl Clock {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.every(Duration::from_millis(PERIOD_MS.into()), |c| {
            c.fires.push(c.ticks)
        });
    }

    pub async fn tick(&mut self, _s: &Session) -> Result<()> {
        tokio::time::advance(Duration::from_millis(1)).await;
        self.ticks += 1;
        Ok(())
    }

    pub fn fires(&self, _s: &Session) -> Result<Vec<u32>> {
        Ok(self.fires.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn a_periodic_timer_keeps_its_period_while_a_flood_of_messages_is_served() {
    const TICKS: u32 = 2000;
    let h = Harness::start(EngineBuilder::new().component(Clock::default()))
        .await
        .unwrap();
    let c = h.connect();
    // The session keeps the scheduler's queue full (up to its in-flight limit) throughout.
    for _ in 0..TICKS {
        c.notify("Clock.Tick", &()).await.unwrap();
    }
    let fires: Vec<u32> = c.request("Clock.Fires", &()).await.unwrap();
    // The clock moved 1 ms per tick: fire k was due after tick k × period. It runs at most one
    // scheduler turn late, and the next one is due on the same grid (no drift).
    assert!(
        fires.len() as u32 >= TICKS / PERIOD_MS - 1,
        "{} fires in {TICKS} ms of a {PERIOD_MS} ms timer: {fires:?}",
        fires.len()
    );
    for (k, &at) in fires.iter().enumerate() {
        let due = (k as u32 + 1) * PERIOD_MS;
        assert!(
            (due..=due + BUDGET + 4).contains(&at),
            "fire {k} due at tick {due} ran at tick {at}: {fires:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cancel: a cancelled timer never fires, also when it expired at the same instant.

/// Pairs of timers due at the same instant; whichever of a pair fires first cancels the other.
#[derive(Default)]
struct Rivals {
    pairs: Vec<(TimerId, TimerId)>,
    fired: Vec<usize>,
}

const PAIRS: usize = 32;

#[component(crate = ::nano_core)]
impl Rivals {
    fn init(&mut self, ctx: &Context<Self>) {
        let due = Duration::from_millis(10);
        for i in 0..PAIRS {
            let (c1, c2) = (ctx.clone(), ctx.clone());
            let a = ctx.after(due, move |r| {
                r.fired.push(i);
                c1.cancel(r.pairs[i].1);
            });
            let b = ctx.after(due, move |r| {
                r.fired.push(i);
                c2.cancel(r.pairs[i].0);
            });
            self.pairs.push((a, b));
        }
    }

    pub fn fired(&self, _s: &Session) -> Result<Vec<usize>> {
        Ok(self.fired.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn a_timer_cancelled_by_a_timer_due_at_the_same_instant_never_fires() {
    let h = Harness::start(EngineBuilder::new().component(Rivals::default()))
        .await
        .unwrap();
    let c = h.connect();
    // Paused clock: this returns once the runtime has nothing left to do before 50 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fired: Vec<usize> = c.request("Rivals.Fired", &()).await.unwrap();
    fired.sort_unstable();
    assert_eq!(
        fired,
        (0..PAIRS).collect::<Vec<_>>(),
        "each pair must fire exactly once"
    );
}
