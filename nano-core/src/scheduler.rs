//! Schedulers: where component code runs, one piece at a time.
//!
//! A scheduler owns its components. It runs jobs (handler calls, timer callbacks, results of
//! async work, session-closed callbacks, lifecycle hooks) strictly one after another in arrival
//! order, so component code takes `&mut self` and needs no locks. By default every component
//! shares one scheduler (nano's model: one deterministic order of events); a component can be
//! given a scheduler of its own to run in parallel with the rest.
//!
//! # How jobs run
//!
//! The components sit behind one lock. Submitting a job queues it and then tries to take the
//! lock: whoever holds it runs every queued job, in order, before letting go ("combining").
//! So when the scheduler is idle, a synchronous handler runs at once on the connection's own
//! task, with no hop to another task and no wake-up, and under load one task drains many jobs
//! in a row. A job that must await (an `async fn` handler) is handed, together with the lock,
//! to the scheduler's own task, which drives it to completion before anything else runs; that
//! task also owns the timers.
//!
//! | submitter finds | it does |
//! |---|---|
//! | the lock free | runs the queue (its own job included) until empty, then releases |
//! | the lock held | leaves the job queued: the holder runs it before releasing |
//! | an async job at the head | passes the lock and the job to the scheduler task |
//! | it has run 64 jobs and more wait | passes the lock and the rest to the scheduler task |
//!
//! A panic in a job is caught and traced; the scheduler goes on with the next job.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedMutexGuard};
use tokio_util::time::{delay_queue, DelayQueue};

/// The state a scheduler owns: one slot per component.
pub(crate) type SlotRef<'a> = &'a mut (dyn Any + Send);

/// A future borrowed from a component slot (an async handler in progress).
pub(crate) type SlotFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

type Slots = Vec<Box<dyn Any + Send>>;

/// One unit of work for a slot.
pub(crate) enum Job {
    /// Runs to completion at once.
    Sync(Box<dyn FnOnce(SlotRef<'_>) + Send>),
    /// Returns a future the scheduler drives to completion before the next job.
    Async(Box<dyn for<'a> FnOnce(SlotRef<'a>) -> SlotFuture<'a> + Send>),
}

type TimerFn = Arc<Mutex<Box<dyn FnMut(SlotRef<'_>) + Send>>>;

/// Identifies a timer for [`Context::cancel`](crate::Context::cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

enum Command {
    /// The lock and an async job at the head of the queue, handed to the scheduler task.
    RunAsync {
        slots: OwnedMutexGuard<Slots>,
        slot: usize,
        job: Box<dyn for<'a> FnOnce(SlotRef<'a>) -> SlotFuture<'a> + Send>,
    },
    AddTimer {
        id: TimerId,
        slot: usize,
        delay: Duration,
        period: Option<Duration>,
        f: TimerFn,
    },
    CancelTimer(TimerId),
    /// The lock, handed over by a task that ran its share of the queue: run the rest.
    Continue(OwnedMutexGuard<Slots>),
    /// Stop after the commands already queued.
    Stop,
}

struct Queued {
    slot: usize,
    job: Job,
}

struct Core {
    name: Arc<str>,
    slots: Arc<tokio::sync::Mutex<Slots>>,
    queue: Mutex<VecDeque<Queued>>,
    stopped: AtomicBool,
    tx: mpsc::UnboundedSender<Command>,
}

/// A handle to a scheduler: submit work to it from anywhere. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    core: Arc<Core>,
    next_timer: Arc<AtomicU64>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("name", &self.core.name)
            .finish()
    }
}

/// A scheduler that has handles but whose task has not been started yet.
pub(crate) struct PendingScheduler {
    pub handle: Scheduler,
    rx: mpsc::UnboundedReceiver<Command>,
    pub slots: Slots,
}

impl PendingScheduler {
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        PendingScheduler {
            handle: Scheduler {
                core: Arc::new(Core {
                    name: name.into(),
                    slots: Arc::new(tokio::sync::Mutex::new(Vec::new())),
                    queue: Mutex::new(VecDeque::new()),
                    stopped: AtomicBool::new(false),
                    tx,
                }),
                next_timer: Arc::new(AtomicU64::new(1)),
            },
            rx,
            slots: Vec::new(),
        }
    }

    /// Hands the components to the scheduler and spawns its task on the current runtime.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let core = self.handle.core.clone();
        match core.slots.clone().try_lock_owned() {
            Ok(mut slots) => *slots = self.slots,
            Err(_) => unreachable!("nothing can hold the lock of a scheduler not yet started"),
        }
        tokio::spawn(run(core, self.rx))
    }
}

impl Scheduler {
    /// The scheduler's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// Submits a job; it runs after every job submitted before it. Returns false when the
    /// scheduler has stopped.
    pub(crate) fn enqueue(&self, slot: usize, job: Job) -> bool {
        if self.core.stopped.load(Ordering::Acquire) {
            return false;
        }
        lock(&self.core.queue).push_back(Queued { slot, job });
        self.core.drain(INLINE_BUDGET);
        true
    }

    pub(crate) fn add_timer(
        &self,
        slot: usize,
        delay: Duration,
        period: Option<Duration>,
        f: Box<dyn FnMut(SlotRef<'_>) + Send>,
    ) -> TimerId {
        let id = TimerId(self.next_timer.fetch_add(1, Ordering::Relaxed));
        let cmd = Command::AddTimer {
            id,
            slot,
            delay,
            period,
            f: Arc::new(Mutex::new(f)),
        };
        if self.core.tx.send(cmd).is_err() {
            tracing::debug!(scheduler = %self.core.name, "timer added to a stopped scheduler");
        }
        id
    }

    /// Asks the scheduler to stop: no new jobs are accepted; its task ends after the commands
    /// already sent to it.
    pub(crate) fn stop(&self) {
        self.core.stopped.store(true, Ordering::Release);
        let _ = self.core.tx.send(Command::Stop);
    }

    pub(crate) fn cancel_timer(&self, id: TimerId) {
        let _ = self.core.tx.send(Command::CancelTimer(id));
    }
}

/// Jobs a connection's task runs for others before it hands the rest to the scheduler task, so
/// that one connection is not kept from its own socket by everyone else's work.
const INLINE_BUDGET: usize = 64;

/// What is left after running the queue for a while.
enum Drained {
    /// The queue was empty; the lock has been released.
    Empty,
    /// The lock and what remains go to the scheduler task.
    Handoff(Command),
}

impl Core {
    /// Runs queued jobs if nobody else is (see the module doc), at most `budget` of them before
    /// handing the lock and the rest to the scheduler task.
    fn drain(&self, budget: usize) {
        loop {
            let Ok(slots) = self.slots.clone().try_lock_owned() else {
                return; // the holder runs what we queued before it lets go
            };
            if !self.finish(self.run_queue(slots, budget)) {
                return;
            }
        }
    }

    /// Acts on the end of a drain; true when the queue must be looked at again (the lock was
    /// released, and a job queued while we held it would otherwise be stranded).
    fn finish(&self, drained: Drained) -> bool {
        match drained {
            Drained::Handoff(cmd) => {
                if self.tx.send(cmd).is_err() {
                    tracing::error!(scheduler = %self.name, "jobs dropped: scheduler stopped");
                }
                false // the scheduler task owns the lock now
            }
            Drained::Empty => !lock(&self.queue).is_empty(),
        }
    }

    /// Runs synchronous jobs until the queue is empty (then releases the lock), an async job is
    /// at its head, or `budget` jobs have run (then returns the lock for the scheduler task).
    fn run_queue(&self, mut slots: OwnedMutexGuard<Slots>, budget: usize) -> Drained {
        let mut ran = 0;
        loop {
            if ran >= budget && !lock(&self.queue).is_empty() {
                return Drained::Handoff(Command::Continue(slots));
            }
            let next = lock(&self.queue).pop_front();
            let Some(Queued { slot, job }) = next else {
                return Drained::Empty;
            };
            let Some(state) = slots.get_mut(slot) else {
                continue;
            };
            match job {
                Job::Sync(f) => {
                    ran += 1;
                    let state = state.as_mut();
                    if std::panic::catch_unwind(AssertUnwindSafe(|| f(state))).is_err() {
                        tracing::error!(scheduler = %self.name, "job panicked");
                    }
                }
                Job::Async(job) => return Drained::Handoff(Command::RunAsync { slots, slot, job }),
            }
        }
    }
}

struct Timer {
    key: delay_queue::Key,
    slot: usize,
    period: Option<Duration>,
    f: TimerFn,
}

/// The scheduler task: async jobs handed to it, and the timers.
async fn run(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut queue: DelayQueue<TimerId> = DelayQueue::new();
    let mut timers: HashMap<TimerId, Timer> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::RunAsync { mut slots, slot, job } => {
                        if let Some(state) = slots.get_mut(slot) {
                            let fut = job(state.as_mut());
                            if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                                tracing::error!(scheduler = %core.name, "async job panicked");
                            }
                        }
                        drop(slots);
                        core.drain(usize::MAX);
                    }
                    Command::Continue(slots) => {
                        if core.finish(core.run_queue(slots, usize::MAX)) {
                            core.drain(usize::MAX);
                        }
                    }
                    Command::AddTimer { id, slot, delay, period, f } => {
                        let key = queue.insert(id, delay);
                        timers.insert(id, Timer { key, slot, period, f });
                    }
                    Command::CancelTimer(id) => {
                        if let Some(t) = timers.remove(&id) {
                            queue.remove(&t.key);
                        }
                    }
                    Command::Stop => break,
                }
            }
            Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                let id = expired.into_inner();
                let Some(mut timer) = timers.remove(&id) else { continue };
                let f = timer.f.clone();
                let fire = Job::Sync(Box::new(move |state| {
                    let mut f = lock(&f);
                    (*f)(state);
                }));
                lock(&core.queue).push_back(Queued { slot: timer.slot, job: fire });
                core.drain(usize::MAX);
                if let Some(period) = timer.period {
                    timer.key = queue.insert(id, period);
                    timers.insert(id, timer);
                }
            }
        }
    }
    tracing::debug!(scheduler = %core.name, "scheduler stopped");
}

/// The locks here guard plain data; a panic while holding one cannot leave it half-written in
/// a way that matters, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
