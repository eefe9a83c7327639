//! Handler arguments beyond the payload, in memory through the real codec: deferred responses
//! (`Responder<T>`) answered from a spawned task, a timer, another thread, dropped, timed out,
//! for a notify; `&Context<Self>` arguments; the guard against an async handler awaiting its
//! own scheduler.

use std::time::Duration;

use nano::engine::EngineBuilder;
use nano::prelude::*;
use nano::testing::Harness;

#[derive(Default)]
struct Slow {
    /// Responders kept unanswered (the timeout test).
    parked: Vec<Responder<u32>>,
    /// How many notifies got a notify responder.
    notify_responders: u32,
}

#[component]
impl Slow {
    /// Doubles `n` in a task off the scheduler, answering from there.
    pub fn spawned(&mut self, _s: &Session, n: u32, ctx: &Context<Self>, reply: Responder<u32>) {
        ctx.spawn(async move { n * 2 }, move |_slow, doubled| {
            reply.ok(doubled)
        });
    }

    /// Answers `n + 1` from a timer.
    pub fn timer(&mut self, _s: &Session, n: u32, ctx: &Context<Self>, reply: Responder<u32>) {
        ctx.after(Duration::from_millis(5), move |_slow| reply.ok(n + 1));
    }

    /// Answers from another OS thread.
    pub fn thread(&self, _s: &Session, n: u32, reply: Responder<String>) {
        std::thread::spawn(move || reply.ok(format!("thread {n}")));
    }

    /// Never answers: the responder is dropped on another thread.
    pub fn forget(&self, _s: &Session, reply: Responder<u32>) {
        std::thread::spawn(move || drop(reply));
    }

    /// Answers an error response through the responder.
    pub fn refuse(&self, _s: &Session, reply: Responder<()>) {
        reply.err(Error::bad_request("refused"));
    }

    /// Keeps the responder with a timeout, and never answers.
    pub fn park(&mut self, _s: &Session, reply: Responder<u32>) {
        self.parked.push(reply.timeout(Duration::from_millis(50)));
    }

    /// Answers every parked responder (after their timeout: the answers are discarded).
    pub fn unpark(&mut self, _s: &Session) -> Result<usize> {
        let n = self.parked.len();
        for r in self.parked.drain(..) {
            r.ok(7);
        }
        Ok(n)
    }

    /// Sent as a notify: its responder answers nothing.
    pub fn note(&mut self, _s: &Session, reply: Responder<u32>) {
        if reply.is_notify() {
            self.notify_responders += 1;
        }
        reply.ok(1);
    }

    pub fn notes(&self, _s: &Session) -> Result<u32> {
        Ok(self.notify_responders)
    }

    /// Uses its `&Context<Self>` argument to set a timer that pushes.
    pub fn remind(&mut self, s: &Session, text: String, ctx: &Context<Self>) -> Result<()> {
        let s = s.clone();
        ctx.after(Duration::from_millis(5), move |_slow| {
            let _ = s.push("Slow.Reminder", &text);
        });
        Ok(())
    }

    /// An async handler awaiting work on its own scheduler: refused by the guard.
    pub async fn self_call(&mut self, _s: &Session, ctx: &Context<Self>) -> Result<u32> {
        ctx.call(|slow: &mut Slow| slow.notify_responders).await
    }

    /// `Context::call` from a task off the scheduler works, and answers through a responder.
    pub fn off_call(&self, _s: &Session, ctx: &Context<Self>, reply: Responder<u32>) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            reply.send(
                ctx.call(|slow: &mut Slow| slow.notify_responders + 100)
                    .await,
            );
        });
    }
}

async fn harness() -> Harness {
    Harness::start(EngineBuilder::new().component(Slow::default()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_response_from_a_spawned_task() {
    let h = harness().await;
    let c = h.connect();
    let v: u32 = c.request("Slow.Spawned", &21u32).await.unwrap();
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_response_from_a_timer() {
    let h = harness().await;
    let c = h.connect();
    let v: u32 = c.request("Slow.Timer", &41u32).await.unwrap();
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_response_from_another_thread() {
    let h = harness().await;
    let c = h.connect();
    let v: String = c.request("Slow.Thread", &3u32).await.unwrap();
    assert_eq!(v, "thread 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_responder_answers_an_error_exactly_once() {
    let h = harness().await;
    let c = h.connect();
    let err = c.request::<_, u32>("Slow.Forget", &()).await.unwrap_err();
    assert_eq!(err.code(), "NANO-500");
    assert_eq!(err.message(), "request dropped without an answer");
    // A later request is answered after it: had a second answer been sent, it would be here.
    let _: u32 = c.request("Slow.Notes", &()).await.unwrap();
    assert_eq!(c.responses().len(), 2, "{:?}", c.responses());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_error_is_an_error_response() {
    let h = harness().await;
    let c = h.connect();
    let err = c.request::<_, ()>("Slow.Refuse", &()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), ("NANO-400", "refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_timeout_answers_and_a_late_answer_is_discarded() {
    let h = harness().await;
    let c = h.connect();
    let err = c.request::<_, u32>("Slow.Park", &()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        ("NANO-503", "request timed out")
    );
    let answered: usize = c.request("Slow.Unpark", &()).await.unwrap();
    assert_eq!(answered, 1);
    let _: u32 = c.request("Slow.Notes", &()).await.unwrap();
    // Park (timed out), Unpark, Notes: the late `ok(7)` sent nothing.
    assert_eq!(c.responses().len(), 3, "{:?}", c.responses());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_gets_a_responder_that_answers_nothing() {
    let h = harness().await;
    let c = h.connect();
    c.notify("Slow.Note", &()).await.unwrap();
    c.notify("Slow.Note", &()).await.unwrap();
    let n: u32 = c.request("Slow.Notes", &()).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(c.responses().len(), 1, "{:?}", c.responses());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_argument_sets_a_timer_that_pushes() {
    let h = harness().await;
    let c = h.connect();
    c.request::<_, ()>("Slow.Remind", &"stretch").await.unwrap();
    let pushes = c.wait_pushes(1).await.unwrap();
    assert_eq!(pushes[0].route, "Slow.Reminder");
    let text: String = c.push_as(0).unwrap();
    assert_eq!(text, "stretch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handler_awaiting_its_own_scheduler_is_refused_not_deadlocked() {
    let h = harness().await;
    let c = h.connect();
    let err = c.request::<_, u32>("Slow.SelfCall", &()).await.unwrap_err();
    assert_eq!(err.code(), "NANO-500");
    assert!(err.message().contains("deadlock"), "{}", err.message());
    // The scheduler is free again, and the same call from off the scheduler works.
    let v: u32 = c.request("Slow.OffCall", &()).await.unwrap();
    assert_eq!(v, 100);
}

/// A component with one route for other cluster nodes only.
struct Vault;

#[component]
impl Vault {
    pub fn open(&mut self, _s: &Session) -> Result<&'static str> {
        Ok("open")
    }

    #[handler(internal)]
    pub fn secret(&mut self, _s: &Session) -> Result<&'static str> {
        Ok("secret")
    }
}

#[tokio::test]
async fn an_internal_route_does_not_exist_for_a_client() {
    let h = Harness::start(EngineBuilder::new().component(Vault))
        .await
        .unwrap();
    let c = h.connect();
    let open: String = c.request("Vault.Open", &()).await.unwrap();
    assert_eq!(open, "open");
    let e = c
        .request::<_, String>("Vault.Secret", &())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-404");
    assert_eq!(e.message(), "route not found: Vault.Secret");
}
