//! The per-session in-flight limit: how many of a session's messages may be queued or running
//! on the schedulers before its reader waits (backpressure).
//!
//! A counting semaphore whose uncontended acquire and release are one atomic operation each:
//! free permits and the number of waiting tasks share one word, so a release learns in the same
//! operation whether anybody waits, and only then touches the wake-up machinery. (tokio's
//! `Semaphore` locks its waiter list on every release.) The word's logic ([`Counter`],
//! [`Waiter`]) is apart from the wake-ups (tokio's `Notify`), so that the model checker
//! (`--cfg nano_loom`, see `scheduler::sync`) explores the very code that runs.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::Notify;

use super::Session;
use crate::scheduler::sync::{AtomicUsize, Ordering};

/// One waiting task, counted in the high half of the state word.
const WAITER: usize = 1 << (usize::BITS / 2);
/// The free permits, in the low half.
const PERMITS: usize = WAITER - 1;

/// Free permits (low half) and tasks waiting for one (high half), in one word.
pub(crate) struct Counter {
    state: AtomicUsize,
}

impl Counter {
    /// `permits` free (at least 1, at most 2^(half the word size) - 1).
    pub fn new(permits: usize) -> Self {
        Counter {
            state: AtomicUsize::new(permits.clamp(1, PERMITS)),
        }
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(&self) -> bool {
        let mut cur = self.state.load(Ordering::Relaxed);
        while cur & PERMITS != 0 {
            match self.state.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Returns a permit; true when some task is counted as waiting (the caller wakes one).
    #[must_use]
    pub fn release(&self) -> bool {
        self.state.fetch_add(1, Ordering::AcqRel) >= WAITER
    }

    /// Free permits and waiting tasks.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state.load(Ordering::Acquire);
        (s & PERMITS, s / WAITER)
    }
}

/// A counting semaphore for one session's messages in flight.
#[repr(C)] // the state word first: the owner's hot fields come before `notify`
pub(crate) struct Limit {
    counter: Counter,
    /// Wakes waiters; notified by a release only when some task is counted as waiting.
    notify: Notify,
}

impl Limit {
    /// A limit of `permits` (at least 1, at most 2^(half the word size) - 1).
    pub fn new(permits: usize) -> Self {
        Limit {
            counter: Counter::new(permits),
            notify: Notify::new(),
        }
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(&self) -> bool {
        self.counter.try_acquire()
    }

    /// Takes a permit, waiting until one is released when none is free. Cancel-safe: dropped
    /// while waiting, it takes nothing and leaves the waiters.
    pub async fn acquire(&self) {
        if self.counter.try_acquire() {
            return;
        }
        let mut waiter = Waiter::new(&self.counter);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // In the notify list before the count is looked at: a release after the look sees
            // us counted and wakes a listed waiter.
            notified.as_mut().enable();
            if waiter.take_or_wait() {
                return;
            }
            notified.await;
        }
    }

    /// Returns a permit, waking a waiter if one is counted.
    pub fn release(&self) {
        if self.counter.release() {
            self.notify.notify_one();
        }
    }

    #[cfg(all(test, not(nano_loom)))]
    fn counts(&self) -> (usize, usize) {
        self.counter.counts()
    }
}

/// A task in [`Limit::acquire`]'s slow path; `counted` while it is among the waiters.
pub(crate) struct Waiter<'a> {
    counter: &'a Counter,
    counted: bool,
}

impl<'a> Waiter<'a> {
    pub fn new(counter: &'a Counter) -> Self {
        Waiter {
            counter,
            counted: false,
        }
    }

    /// Takes a free permit (and stops being counted), or is counted as waiting; true when it
    /// took a permit. A compare-exchange even when nothing changes, so the decision to wait is
    /// made on the latest count.
    pub fn take_or_wait(&mut self) -> bool {
        let state = &self.counter.state;
        let mut cur = state.load(Ordering::Acquire);
        loop {
            let took = cur & PERMITS != 0;
            let new = match (took, self.counted) {
                (true, true) => cur - 1 - WAITER,
                (true, false) => cur - 1,
                (false, true) => cur,
                (false, false) => cur + WAITER,
            };
            match state.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.counted = !took;
                    return took;
                }
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.counted {
            // Cancelled while waiting. A wake-up meant for us is passed on by `Notified`'s drop.
            self.counter.state.fetch_sub(WAITER, Ordering::AcqRel);
        }
    }
}

/// One message of a session in flight (queued or running on a scheduler): it counts against
/// the session's limit until dropped. Carries the session handle for the handler.
///
/// Extensions that serve a message outside the schedulers (a cluster gate forwarding it)
/// hold one from [`Session::try_in_flight`] until the message is answered, so the session's
/// `max_inflight` bounds them too.
pub struct InFlight<S> {
    session: Session<S>,
    /// Whether this guard still holds the permit (a deferred response takes it over).
    armed: AtomicBool,
    /// What the metrics record of the message, when they are on.
    probe: Probe,
}

/// How a handled message was answered (for its span).
pub(crate) enum Outcome<'a> {
    /// Answered (or, a notify, run) without an error.
    Ok,
    /// Answered with this error code.
    Failed(&'a str),
    /// Its answer was deferred to a [`Responder`](crate::Responder).
    Deferred,
}

/// A handled message as the metrics see it: which route, since when, how it was answered.
#[derive(Default)]
struct Probe {
    /// When it was queued for its handler; `None`: not observed (metrics off, or not a
    /// handler's message).
    queued: Option<Instant>,
    route: usize,
    request: bool,
    /// The error code it was answered with.
    failed: OnceLock<String>,
}

impl Probe {
    /// The same message, not answered yet (a deferred response takes it over).
    fn moved(&self) -> Probe {
        Probe {
            queued: self.queued,
            route: self.route,
            request: self.request,
            failed: OnceLock::new(),
        }
    }
}

impl<S> InFlight<S> {
    /// The session the message came from.
    #[inline]
    pub fn session(&self) -> &Session<S> {
        &self.session
    }

    /// Moves the permit to a new guard (a deferred response's): this one no longer releases
    /// it. `None` when it was moved already.
    pub(crate) fn take(&self) -> Option<InFlight<S>> {
        self.armed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
            .then(|| InFlight {
                session: self.session.clone(),
                armed: AtomicBool::new(true),
                probe: self.probe.moved(),
            })
    }

    /// Has the metrics time this message of handler `route` from now until it is answered.
    pub(crate) fn observe(&mut self, route: usize, request: bool) {
        self.probe = Probe {
            queued: Some(Instant::now()),
            route,
            request,
            failed: OnceLock::new(),
        };
    }

    /// Its handler starts: the metrics record how long it waited in the queue.
    pub(crate) fn started(&self) {
        if let (Some(queued), Some(m)) = (self.probe.queued, &self.session.inner.shared.metrics) {
            m.queued_for(self.probe.route, queued.elapsed());
        }
    }

    /// It was answered with an error (or, a notify, its handler failed).
    pub(crate) fn failed(&self, code: &str) {
        let _ = self.probe.failed.set(code.to_owned());
    }

    /// How the message was answered so far.
    pub(crate) fn outcome(&self) -> Outcome<'_> {
        if let Some(code) = self.probe.failed.get() {
            Outcome::Failed(code)
        } else if self.armed.load(std::sync::atomic::Ordering::Relaxed) {
            Outcome::Ok
        } else {
            Outcome::Deferred
        }
    }
}

impl<S> Session<S> {
    /// Counts one more message in flight if the session's `max_inflight` allows it now; the
    /// slot is released when the returned guard drops.
    pub fn try_in_flight(&self) -> Option<InFlight<S>> {
        self.inner.inflight.try_acquire().then(|| InFlight {
            session: self.clone(),
            armed: AtomicBool::new(true),
            probe: Probe::default(),
        })
    }

    /// Counts one more message of this session in flight, waiting while `max_inflight` are.
    pub(crate) async fn in_flight(&self) -> InFlight<S> {
        self.inner.inflight.acquire().await;
        InFlight {
            session: self.clone(),
            armed: AtomicBool::new(true),
            probe: Probe::default(),
        }
    }
}

impl<S> std::fmt::Debug for InFlight<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("session", &self.session.id())
            .finish()
    }
}

impl<S> Drop for InFlight<S> {
    fn drop(&mut self) {
        if *self.armed.get_mut() {
            self.session.inner.inflight.release();
            if let (Some(queued), Some(m)) = (self.probe.queued, &self.session.inner.shared.metrics)
            {
                m.handled_message(
                    self.probe.route,
                    self.probe.request,
                    self.probe.failed.get().map(String::as_str),
                    queued.elapsed(),
                );
            }
        }
    }
}

#[cfg(all(test, nano_loom))]
mod loom_model;

#[cfg(all(test, not(nano_loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Polls `fut` once; true when it completed.
    fn ready<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> bool {
        let waker = futures_util::task::noop_waker();
        fut.poll(&mut std::task::Context::from_waker(&waker))
            .is_ready()
    }

    #[test]
    fn permits_are_counted() {
        let l = Limit::new(2);
        assert!(l.try_acquire());
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        l.release();
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        l.release();
        l.release();
        assert_eq!(l.counts(), (2, 0));
        assert_eq!(Limit::new(0).counts(), (1, 0));
    }

    #[test]
    fn a_waiter_waits_for_a_release_and_leaves_the_count_when_cancelled() {
        let l = Limit::new(1);
        assert!(l.try_acquire());
        let mut a = Box::pin(l.acquire());
        assert!(!ready(a.as_mut()), "acquired beyond the limit");
        assert_eq!(l.counts(), (0, 1));
        l.release();
        assert!(ready(a.as_mut()), "not woken by the release");
        assert_eq!(l.counts(), (0, 0));

        let mut b = Box::pin(l.acquire());
        assert!(!ready(b.as_mut()));
        assert_eq!(l.counts(), (0, 1));
        drop(b);
        assert_eq!(l.counts(), (0, 0), "a cancelled waiter still counted");
        l.release();
        assert_eq!(l.counts(), (1, 0));
    }

    #[test]
    fn a_cancelled_waiter_passes_its_wake_up_on() {
        let l = Limit::new(1);
        assert!(l.try_acquire());
        let mut a = Box::pin(l.acquire());
        let mut b = Box::pin(l.acquire());
        assert!(!ready(a.as_mut()));
        assert!(!ready(b.as_mut()));
        l.release(); // wakes `a`, which is then dropped without taking the permit
        drop(a);
        assert!(ready(b.as_mut()), "the permit went to nobody");
        assert_eq!(l.counts(), (0, 0));
    }

    /// Many tasks on several threads, each taking and releasing permits: never more than the
    /// limit held at once, nobody stuck, every permit back at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_than_the_limit_under_contention() {
        const LIMIT: usize = 3;
        let l = Arc::new(Limit::new(LIMIT));
        let held = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (l, held, most) = (l.clone(), held.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..500 {
                    l.acquire().await;
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                    l.release();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("a waiter was never woken")
                .unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= LIMIT, "limit exceeded");
        assert_eq!(l.counts(), (LIMIT, 0));
    }
}
