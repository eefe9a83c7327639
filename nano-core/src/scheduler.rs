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
//! At most one party *owns* the scheduler at a time, and only the owner touches the components.
//! Ownership is a flag kept under the same lock as the job queue, so one lock round trip both
//! queues a job and tells whether anyone is running, and one both takes the next job and, the
//! queue being empty, gives ownership up: a job queued a moment later finds the scheduler free
//! and runs itself, so none is ever stranded. Whoever submits a job to a free scheduler becomes
//! its owner and runs the job at once, then every job queued meanwhile, in order ("combining").
//! So when the scheduler is idle, a synchronous handler runs at once on the connection's own
//! task, with no hop to another task and no wake-up, and under load one task drains many jobs
//! in a row. A job that must await (an `async fn` handler) is handed, together with ownership,
//! to the scheduler's own task, which drives it to completion before anything else runs; that
//! task also owns the timers.
//!
//! | submitter finds | it does |
//! |---|---|
//! | the scheduler free | becomes its owner, runs its job and then the queue until empty, then lets go |
//! | the scheduler owned | queues the job: the owner runs it before letting go |
//! | an async job at the head | passes ownership and the job to the scheduler task |
//! | it has run 64 jobs and more wait | passes ownership and the rest to the scheduler task |
//!
//! A panic in a job is caught and traced; the scheduler goes on with the next job.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::time::{delay_queue, DelayQueue};

/// The state a scheduler owns: one slot per component.
pub(crate) type SlotRef<'a> = &'a mut (dyn Any + Send);

/// A future borrowed from a component slot (an async handler in progress).
pub(crate) type SlotFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// An async job: given its component, returns the future to drive.
type AsyncJob = Box<dyn for<'a> FnOnce(SlotRef<'a>) -> SlotFuture<'a> + Send>;

type Slots = Vec<Box<dyn Any + Send>>;

/// One unit of work for a slot.
pub(crate) enum Job {
    /// Runs to completion at once.
    Sync(Box<dyn FnOnce(SlotRef<'_>) + Send>),
    /// Returns a future the scheduler drives to completion before the next job.
    Async(AsyncJob),
}

type TimerFn = Arc<Mutex<Box<dyn FnMut(SlotRef<'_>) + Send>>>;

/// Identifies a timer for [`Context::cancel`](crate::Context::cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

enum Command {
    /// Ownership and the async job found at the head of the queue, for the scheduler task.
    RunAsync {
        owner: Handover,
        slot: usize,
        job: AsyncJob,
    },
    /// Ownership, handed over by a task that ran its share of the queue: run the rest.
    Continue(Handover),
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

struct Queued {
    slot: usize,
    job: Job,
}

/// The job queue and who owns the scheduler, behind one lock.
struct State {
    queue: VecDeque<Queued>,
    /// Someone (a submitter running jobs inline, or the scheduler task, or a command in transit
    /// to it) owns the scheduler. While it is false the queue is empty.
    owned: bool,
}

struct Core {
    name: Arc<str>,
    state: Mutex<State>,
    /// The components. Only the owner locks this, so the lock is never contended; it is held
    /// for a run of synchronous jobs, never across an await (an async job takes its component
    /// out of the slot instead, see [`Lent`]).
    slots: Mutex<Slots>,
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
                    state: Mutex::new(State {
                        queue: VecDeque::new(),
                        owned: false,
                    }),
                    slots: Mutex::new(Vec::new()),
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
        *lock(&core.slots) = self.slots;
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
        if let Some(first) = self.core.submit(Queued { slot, job }) {
            // We own the scheduler: run our job and what queues up behind it, for a while.
            match self.core.run_sync(Some(first), INLINE_BUDGET) {
                Ran::Released => {}
                Ran::Async { slot, job } => {
                    self.core
                        .hand_off(|owner| Command::RunAsync { owner, slot, job })
                }
                Ran::OverBudget => self.core.hand_off(Command::Continue),
            }
        }
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

/// How a run of synchronous jobs ended.
enum Ran {
    /// The queue was empty; ownership has been released.
    Released,
    /// An async job is next; the caller still owns the scheduler.
    Async { slot: usize, job: AsyncJob },
    /// The budget is spent and more jobs wait; the caller still owns the scheduler.
    OverBudget,
}

impl Core {
    /// Queues a job behind the current owner; or, when nobody owns the scheduler, makes the
    /// caller its owner and gives the job back to be run first (the queue is empty then).
    fn submit(&self, job: Queued) -> Option<Queued> {
        let mut state = lock(&self.state);
        if state.owned {
            state.queue.push_back(job);
            None
        } else {
            debug_assert!(state.queue.is_empty(), "jobs queued on a free scheduler");
            state.owned = true;
            Some(job)
        }
    }

    /// Runs jobs as the owner: `first`, then the queue's, in order, until the queue is empty
    /// (ownership is then released), an async job is next, or `budget` jobs have run and more
    /// wait. One lock round trip per job takes it and learns whether the queue is empty.
    fn run_sync(&self, mut next: Option<Queued>, budget: usize) -> Ran {
        let mut slots = lock(&self.slots);
        let mut ran = 0;
        loop {
            let Queued { slot, job } = match next.take() {
                Some(q) => q,
                None => {
                    let mut state = lock(&self.state);
                    if ran >= budget && !state.queue.is_empty() {
                        return Ran::OverBudget;
                    }
                    match state.queue.pop_front() {
                        Some(q) => q,
                        None => {
                            // Let go of the components first: the next owner may come at once.
                            drop(slots);
                            state.owned = false;
                            return Ran::Released;
                        }
                    }
                }
            };
            match job {
                Job::Sync(f) => {
                    let Some(component) = slots.get_mut(slot) else {
                        continue;
                    };
                    ran += 1;
                    debug_assert!(!(**component).is::<Vacant>(), "a lent-out slot is in use");
                    let component = component.as_mut();
                    if std::panic::catch_unwind(AssertUnwindSafe(|| f(component))).is_err() {
                        tracing::error!(scheduler = %self.name, "job panicked");
                    }
                }
                Job::Async(job) => return Ran::Async { slot, job },
            }
        }
    }

    /// Passes the caller's ownership to the scheduler task.
    fn hand_off(self: &Arc<Self>, cmd: impl FnOnce(Handover) -> Command) {
        // A failed send drops the command, and with it the `Handover`, which gives up the queue.
        let _ = self.tx.send(cmd(Handover(Some(self.clone()))));
    }

    /// Ownership lost without anyone to run the queue (the scheduler task has stopped): drops
    /// the queued jobs and frees the scheduler.
    fn abandon(&self) {
        let dropped = {
            let mut state = lock(&self.state);
            state.owned = false;
            std::mem::take(&mut state.queue)
        };
        tracing::error!(scheduler = %self.name, jobs = dropped.len(), "jobs dropped: scheduler stopped");
        drop(dropped); // outside the lock: a job's captures may do anything when dropped
    }
}

/// Ownership of a scheduler on its way to, or held by, the scheduler task. Dropped while still
/// holding ownership — the task had stopped and the command was never run, or the task was
/// dropped mid-job with its runtime — it abandons the queue rather than leave the scheduler
/// owned by nobody forever.
struct Handover(Option<Arc<Core>>);

impl Handover {
    /// Ownership was released the normal way.
    fn released(mut self) {
        self.0 = None;
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(core) = self.0.take() {
            core.abandon();
        }
    }
}

/// What a slot holds while its component is lent out to an async job.
struct Vacant;

/// A component taken out of its slot for an async job, which borrows it across awaits (a
/// `MutexGuard` cannot be held there: the task's future must stay `Send`). Only the owner
/// touches the slots, and the owner is busy driving that job, so nobody sees the slot vacant.
/// Dropping it puts the component back, also when the job panics or the task is dropped.
struct Lent<'a> {
    core: &'a Core,
    slot: usize,
    component: Box<dyn Any + Send>,
}

impl<'a> Lent<'a> {
    fn take(core: &'a Core, slot: usize) -> Option<Self> {
        let mut slots = lock(&core.slots);
        let component = std::mem::replace(slots.get_mut(slot)?, Box::new(Vacant));
        Some(Lent {
            core,
            slot,
            component,
        })
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let component = std::mem::replace(&mut self.component, Box::new(Vacant));
        if let Some(slot) = lock(&self.core.slots).get_mut(self.slot) {
            *slot = component;
        }
    }
}

/// The scheduler task's turn as owner: the async job it was handed (if any), then `first` and
/// the queue, async jobs included, until the queue is empty.
async fn own(
    core: &Core,
    owner: Handover,
    mut job: Option<(usize, AsyncJob)>,
    first: Option<Queued>,
) {
    let mut next = first;
    loop {
        if let Some((slot, job)) = job.take() {
            if let Some(mut lent) = Lent::take(core, slot) {
                let fut = job(lent.component.as_mut());
                if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                    tracing::error!(scheduler = %core.name, "async job panicked");
                }
            }
        }
        match core.run_sync(next.take(), usize::MAX) {
            Ran::Released => break,
            Ran::Async { slot, job: j } => job = Some((slot, j)),
            Ran::OverBudget => {} // not with an unlimited budget; run on
        }
    }
    owner.released();
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
                    Command::RunAsync { owner, slot, job } => {
                        own(&core, owner, Some((slot, job)), None).await;
                    }
                    Command::Continue(owner) => own(&core, owner, None, None).await,
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
                let slot = timer.slot;
                // Re-armed before the callback runs, so the period does not drift by the time
                // the queue takes.
                if let Some(period) = timer.period {
                    timer.key = queue.insert(id, period);
                    timers.insert(id, timer);
                }
                let fire = Job::Sync(Box::new(move |state| {
                    let mut f = lock(&f);
                    (*f)(state);
                }));
                if let Some(first) = core.submit(Queued { slot, job: fire }) {
                    let owner = Handover(Some(core.clone()));
                    own(&core, owner, None, Some(first)).await;
                }
            }
        }
    }
    tracing::debug!(scheduler = %core.name, "scheduler stopped");
}

/// The locks here guard plain data; a panic while holding one cannot leave it half-written in
/// a way that matters, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
