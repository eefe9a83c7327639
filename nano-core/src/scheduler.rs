//! Schedulers: where component code runs, one piece at a time.
//!
//! A scheduler is a tokio task that owns its components. It runs jobs (handler calls, timer
//! callbacks, results of async work, session-closed callbacks, lifecycle hooks) strictly one
//! after another in arrival order, so component code takes `&mut self` and needs no locks. By
//! default every component shares one scheduler (nano's model: one deterministic order of
//! events); a component can be given a scheduler of its own to run in parallel with the rest.
//!
//! A panic in a job is caught and traced; the scheduler goes on with the next job.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::time::{delay_queue, DelayQueue};

/// The state a scheduler owns: one slot per component.
pub(crate) type SlotRef<'a> = &'a mut (dyn Any + Send);

/// A future borrowed from a component slot (an async handler in progress).
pub(crate) type SlotFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One unit of work for a slot. Returns a future when the work is asynchronous; the scheduler
/// drives it to completion before the next job.
pub(crate) type JobFn = Box<dyn for<'a> FnOnce(SlotRef<'a>) -> Option<SlotFuture<'a>> + Send>;

type TimerFn = Box<dyn FnMut(SlotRef<'_>) + Send>;

/// Identifies a timer for [`Context::cancel`](crate::Context::cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

pub(crate) enum Command {
    Job {
        slot: usize,
        job: JobFn,
    },
    AddTimer {
        id: TimerId,
        slot: usize,
        delay: Duration,
        period: Option<Duration>,
        f: TimerFn,
    },
    CancelTimer(TimerId),
    /// Stop after the commands already queued.
    Stop,
}

/// A handle to a scheduler: enqueue work on it from anywhere. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    name: Arc<str>,
    tx: mpsc::UnboundedSender<Command>,
    next_timer: Arc<AtomicU64>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("name", &self.name)
            .finish()
    }
}

/// A scheduler that has handles but whose task has not been started yet.
pub(crate) struct PendingScheduler {
    pub handle: Scheduler,
    rx: mpsc::UnboundedReceiver<Command>,
    pub slots: Vec<Box<dyn Any + Send>>,
}

impl PendingScheduler {
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        PendingScheduler {
            handle: Scheduler {
                name: name.into(),
                tx,
                next_timer: Arc::new(AtomicU64::new(1)),
            },
            rx,
            slots: Vec::new(),
        }
    }

    /// Spawns the scheduler's task on the current tokio runtime.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let name = self.handle.name.clone();
        tokio::spawn(run(name, self.rx, self.slots))
    }
}

impl Scheduler {
    /// The scheduler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enqueues a job; returns false when the scheduler has stopped.
    pub(crate) fn enqueue(&self, slot: usize, job: JobFn) -> bool {
        self.tx.send(Command::Job { slot, job }).is_ok()
    }

    pub(crate) fn add_timer(
        &self,
        slot: usize,
        delay: Duration,
        period: Option<Duration>,
        f: TimerFn,
    ) -> TimerId {
        let id = TimerId(self.next_timer.fetch_add(1, Ordering::Relaxed));
        let cmd = Command::AddTimer {
            id,
            slot,
            delay,
            period,
            f,
        };
        if self.tx.send(cmd).is_err() {
            tracing::debug!(scheduler = %self.name, "timer added to a stopped scheduler");
        }
        id
    }

    /// Asks the scheduler to stop after the work already queued.
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }

    pub(crate) fn cancel_timer(&self, id: TimerId) {
        let _ = self.tx.send(Command::CancelTimer(id));
    }
}

struct Timer {
    key: delay_queue::Key,
    slot: usize,
    period: Option<Duration>,
    f: TimerFn,
}

async fn run(
    name: Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    mut slots: Vec<Box<dyn Any + Send>>,
) {
    let mut queue: DelayQueue<TimerId> = DelayQueue::new();
    let mut timers: HashMap<TimerId, Timer> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Job { slot, job } => {
                        let Some(state) = slots.get_mut(slot) else { continue };
                        run_job(&name, state.as_mut(), job).await;
                    }
                    Command::AddTimer { id, slot, delay, period, f } => {
                        let key = queue.insert(id, delay);
                        timers.insert(id, Timer { key, slot, period, f });
                    }
                    Command::Stop => break,
                    Command::CancelTimer(id) => {
                        if let Some(t) = timers.remove(&id) {
                            queue.remove(&t.key);
                        }
                    }
                }
            }
            Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                let id = expired.into_inner();
                let Some(mut timer) = timers.remove(&id) else { continue };
                if let Some(state) = slots.get_mut(timer.slot) {
                    let f = &mut timer.f;
                    let state = state.as_mut();
                    if std::panic::catch_unwind(AssertUnwindSafe(|| f(state))).is_err() {
                        tracing::error!(scheduler = %name, "timer callback panicked");
                    }
                }
                if let Some(period) = timer.period {
                    timer.key = queue.insert(id, period);
                    timers.insert(id, timer);
                }
            }
        }
    }
    tracing::debug!(scheduler = %name, "scheduler stopped");
}

async fn run_job(name: &str, state: SlotRef<'_>, job: JobFn) {
    match std::panic::catch_unwind(AssertUnwindSafe(|| job(state))) {
        Ok(None) => {}
        Ok(Some(fut)) => {
            if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                tracing::error!(scheduler = %name, "async job panicked");
            }
        }
        Err(_) => tracing::error!(scheduler = %name, "job panicked"),
    }
}
