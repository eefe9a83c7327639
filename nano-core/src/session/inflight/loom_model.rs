//! Model check of the in-flight counter (`RUSTFLAGS="--cfg nano_loom" cargo test -p nano-core
//! --lib --release loom`): every interleaving of acquirers, releasers and a cancelled waiter.
//!
//! The state word's code ([`Counter`], [`Waiter`]) is the real one. tokio's `Notify` cannot run
//! under loom, so [`Notify`] below models the part of its contract that [`Limit::acquire`]
//! relies on, and [`acquire`] is `Limit::acquire`'s loop with it: a listener enabled before the
//! count is looked at gets a `notify_one` made after; a `notify_one` with nobody listening is
//! kept for the next listener; a listener dropped after being notified passes the wake-up on.
//! Checked: never more permits held than the limit, every waiter woken (a lost wake-up is a
//! deadlock, which loom reports), and the word back to all permits free, nobody waiting.

use loom::sync::atomic::AtomicUsize as Held;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// `loom::model` with at most 4 preemptions per execution unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise (exhaustive search of these models takes far longer than CI can give).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

use super::{Counter, Waiter};
use crate::scheduler::sync::Ordering;

#[derive(Default)]
struct NotifyState {
    /// Enabled listeners not yet notified, oldest first.
    listening: Vec<usize>,
    /// Listeners notified and not yet consumed.
    notified: Vec<usize>,
    /// A `notify_one` that found nobody listening.
    permit: bool,
    next: usize,
}

/// tokio's `Notify` as `Limit` uses it (`notified` + `enable`, await, drop; `notify_one`).
#[derive(Default)]
struct Notify {
    state: Mutex<NotifyState>,
    cv: Condvar,
}

/// An enabled `Notified`.
struct Listener<'a> {
    notify: &'a Notify,
    id: usize,
    done: bool,
}

impl Notify {
    fn enable(&self) -> Listener<'_> {
        let mut s = self.state.lock().unwrap();
        let id = s.next;
        s.next += 1;
        if std::mem::take(&mut s.permit) {
            s.notified.push(id);
        } else {
            s.listening.push(id);
        }
        Listener {
            notify: self,
            id,
            done: false,
        }
    }

    fn notify_one(&self) {
        let mut s = self.state.lock().unwrap();
        if s.listening.is_empty() {
            s.permit = true;
        } else {
            let id = s.listening.remove(0);
            s.notified.push(id);
            self.cv.notify_all();
        }
    }
}

impl Listener<'_> {
    /// `notified.await`.
    fn wait(mut self) {
        let mut s = self.notify.state.lock().unwrap();
        while !s.notified.contains(&self.id) {
            s = self.notify.cv.wait(s).unwrap();
        }
        s.notified.retain(|&i| i != self.id);
        self.done = true;
    }
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = self.notify.state.lock().unwrap();
        s.listening.retain(|&i| i != self.id);
        let before = s.notified.len();
        s.notified.retain(|&i| i != self.id);
        if s.notified.len() != before {
            drop(s);
            self.notify.notify_one(); // notified but never awaited: pass it on
        }
    }
}

struct Model {
    counter: Counter,
    notify: Notify,
    held: Held,
    limit: usize,
}

impl Model {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Model {
            counter: Counter::new(limit),
            notify: Notify::default(),
            held: Held::new(0),
            limit,
        })
    }

    /// `Limit::acquire`, or its first round only when `cancel` (the future dropped while
    /// waiting); true when it took a permit.
    fn acquire(&self, cancel: bool) -> bool {
        if self.counter.try_acquire() {
            return true;
        }
        let mut waiter = Waiter::new(&self.counter);
        loop {
            let listener = self.notify.enable();
            if waiter.take_or_wait() {
                return true;
            }
            if cancel {
                return false; // drops the waiter, then the listener
            }
            listener.wait();
        }
    }

    fn release(&self) {
        if self.counter.release() {
            self.notify.notify_one();
        }
    }

    fn hold(&self) {
        let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            now <= self.limit,
            "{now} permits held with a limit of {}",
            self.limit
        );
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Two tasks contend for one permit held by a third, which releases it.
#[test]
fn loom_in_flight_no_lost_wake_up_and_permits_conserved() {
    model(|| {
        let m = Model::new(1);
        assert!(m.acquire(false));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || {
                    assert!(m.acquire(false));
                    m.hold();
                    m.release();
                })
            })
            .collect();
        m.release();
        for t in tasks {
            t.join().unwrap();
        }
        assert_eq!(m.counter.counts(), (1, 0));
    });
}

/// A waiter that gives up (its future dropped) while a release is under way: the other waiter
/// still gets the permit, and the cancelled one leaves the count.
#[test]
fn loom_in_flight_a_cancelled_waiter_loses_no_permit() {
    model(|| {
        let m = Model::new(1);
        assert!(m.acquire(false));
        let waiting = {
            let m = m.clone();
            thread::spawn(move || {
                assert!(m.acquire(false));
                m.hold();
                m.release();
            })
        };
        let cancelled = {
            let m = m.clone();
            thread::spawn(move || {
                if m.acquire(true) {
                    m.hold();
                    m.release();
                }
            })
        };
        m.release();
        waiting.join().unwrap();
        cancelled.join().unwrap();
        assert_eq!(m.counter.counts(), (1, 0));
    });
}
