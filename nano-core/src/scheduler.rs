//! Schedulers: where component code runs, one piece at a time.
//!
//! A scheduler owns its components. It runs jobs (handler calls, timer callbacks, results of
//! async work, session-closed callbacks, lifecycle hooks) strictly one after another, so
//! component code takes `&mut self` and needs no locks. By default every component shares one
//! scheduler (nano's model: one deterministic order of events); a component can be given a
//! scheduler of its own to run in parallel with the rest.
//!
//! # Order and fairness
//!
//! Jobs wait in *lanes*: one per session (its messages, then its closed-callbacks), one for the
//! scheduler's own work (`Context::run`, the results of `Context::spawn`, lifecycle hooks) and
//! one for timer callbacks. Within a lane jobs run in the order they were submitted. Lanes that
//! have jobs take turns, one job each, so a session flooding a shared scheduler delays another
//! session's message by at most one job per busy lane, not by its whole backlog, and a timer
//! fires after at most one job of each busy lane. When the scheduler keeps up (the common case)
//! there is no queue and jobs simply run in arrival order.
//!
//! # How jobs run
//!
//! At most one party *owns* the scheduler at a time, and only the owner touches the components.
//! Ownership is a flag kept under the same lock as the lanes (see [`queue`]), so one lock round
//! trip both queues a job and tells whether anyone is running, and one both takes the next job
//! and, the queue being empty, gives ownership up: a job queued a moment later finds the
//! scheduler free and runs itself, so none is ever stranded. Whoever submits a job to a free
//! scheduler becomes its owner and runs the job at once, then the jobs queued meanwhile
//! ("combining"). So when the scheduler is idle, a synchronous handler runs at once on the
//! connection's own task, with no hop to another task and no wake-up, and under load one task
//! drains many jobs in a row. A job that must await (an `async fn` handler) is handed, together
//! with ownership, to the scheduler's own task, which drives it to completion before anything
//! else runs; that task also owns the timers.
//!
//! So while an async handler awaits, it holds the **whole scheduler**, not just its component:
//! no message, timer, `run`/`spawn` result or callback of any component on that scheduler runs
//! until the handler's future completes (by default every component shares one scheduler).
//! Anything the handler awaits that needs this scheduler would wait for the handler itself: a
//! deadlock. [`Context::call`](crate::Context::call) detects it (the scheduler task marks the
//! thread while it polls an async job, see `holding`) and fails at once instead. Slow work
//! belongs in [`Context::spawn`](crate::Context::spawn), answered later through a
//! [`Responder`](crate::Responder).
//!
//! | who | finds | does |
//! |---|---|---|
//! | a submitter | the scheduler free | becomes its owner, runs its job and then the queue, lane by lane, until empty, then lets go |
//! | a submitter | the scheduler owned | queues the job in its lane: the owner runs it before letting go |
//! | the owner | an async job next | passes ownership and the job to the scheduler task |
//! | a submitter | it has run 64 jobs and more wait | passes ownership and the rest to the scheduler task |
//! | the scheduler task | it has run 64 jobs and more wait | keeps ownership, yields to the runtime, takes its commands and expired timers, then runs the next 64 |
//!
//! So however long the queue stays full, the scheduler task comes back to its timers and its
//! commands (stop) every 64 jobs.
//!
//! A panic in a job is caught and traced; the scheduler goes on with the next job.
//!
//! # Timers
//!
//! A timer is armed in the scheduler task's delay queue; when it expires, the task queues its
//! callback in the timer lane. [`Context::cancel`](crate::Context::cancel) marks the timer
//! cancelled at once (a flag the queued callback checks before it runs), so a cancelled timer
//! never fires again, also when its callback was already queued. A periodic timer is re-armed
//! on its own grid (the previous deadline plus the period, skipping ticks already missed), so
//! its period does not drift by the time its callback waits in the queue.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};

mod holding;
mod queue;
pub(crate) mod sync;

use holding::Holding;

pub(crate) use queue::Lane;
use queue::{Next, Queue};

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

/// Identifies a timer for [`Context::cancel`](crate::Context::cancel). Unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

static NEXT_TIMER: AtomicU64 = AtomicU64::new(1);

/// A timer's callback.
type TimerFn = Box<dyn FnMut(SlotRef<'_>) + Send>;

/// A timer's callback and its cancelled flag, shared by the scheduler task (which arms it), the
/// callback jobs it queues, and [`Scheduler::cancel_timer`].
struct TimerShared {
    cancelled: AtomicBool,
    f: Mutex<TimerFn>,
}

/// The timers that may still fire, by id: what `cancel_timer` marks.
type Registry = Arc<Mutex<HashMap<TimerId, Arc<TimerShared>>>>;

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
        timer: Arc<TimerShared>,
    },
    CancelTimer(TimerId),
    /// Stop after the commands and the jobs already queued.
    Stop,
}

struct Queued {
    slot: usize,
    job: Job,
}

struct Core {
    name: Arc<str>,
    queue: Queue<Queued>,
    /// The components. Only the owner locks this, so the lock is never contended; it is held
    /// for a run of synchronous jobs, never across an await (an async job takes its component
    /// out of the slot instead, see [`Lent`]).
    slots: Mutex<Slots>,
    stopped: AtomicBool,
    timers: Registry,
    tx: mpsc::UnboundedSender<Command>,
}

/// A handle to a scheduler: submit work to it from anywhere. Cheap to clone.
///
/// A scheduler runs its components' jobs one at a time. Each session's messages (and its
/// closed-callbacks) run in the order they arrived; so do the jobs given with
/// [`Context::run`](crate::Context::run), and timer callbacks. When jobs queue up, sessions,
/// `run` jobs and timers take turns, one job each, so no session's backlog holds the others
/// back, and timers fire at most a few dozen jobs late however long the queue stays full.
#[derive(Clone)]
pub struct Scheduler {
    core: Arc<Core>,
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
                    queue: Queue::new(),
                    slots: Mutex::new(Vec::new()),
                    stopped: AtomicBool::new(false),
                    timers: Registry::default(),
                    tx,
                }),
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
    /// Whether the caller is an async job this scheduler is driving (an `async fn` handler
    /// holding it): awaiting work queued on this scheduler there would never finish.
    pub fn is_held_here(&self) -> bool {
        holding::is_held(&self.core)
    }

    /// The scheduler's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// How many jobs wait in its queue now.
    pub fn queued(&self) -> usize {
        self.core.queue.len()
    }

    /// Submits a job in `lane`; it runs after every job submitted before it in that lane.
    /// Returns false when the scheduler has stopped.
    pub(crate) fn enqueue(&self, lane: Lane, slot: usize, job: Job) -> bool {
        if self.core.stopped.load(Ordering::Acquire) {
            return false;
        }
        if let Some(first) = self.core.queue.submit(lane, Queued { slot, job }) {
            // We own the scheduler: run our job and what queues up behind it, for a while.
            let mut budget = BUDGET;
            match self.core.run_sync(Some(first), &mut budget) {
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
        f: TimerFn,
    ) -> TimerId {
        let id = TimerId(NEXT_TIMER.fetch_add(1, Ordering::Relaxed));
        let timer = Arc::new(TimerShared {
            cancelled: AtomicBool::new(false),
            f: Mutex::new(f),
        });
        lock(&self.core.timers).insert(id, timer.clone());
        let cmd = Command::AddTimer {
            id,
            slot,
            delay,
            period,
            timer,
        };
        if self.core.tx.send(cmd).is_err() {
            lock(&self.core.timers).remove(&id);
            tracing::debug!(scheduler = %self.core.name, "timer added to a stopped scheduler");
        }
        id
    }

    /// Asks the scheduler to stop: no new jobs are accepted; its task ends after the commands
    /// and the jobs already queued.
    pub(crate) fn stop(&self) {
        self.core.stopped.store(true, Ordering::Release);
        let _ = self.core.tx.send(Command::Stop);
    }

    /// Cancels a timer: from now on its callback never runs, even if it is already queued.
    pub(crate) fn cancel_timer(&self, id: TimerId) {
        let timer = lock(&self.core.timers).remove(&id);
        if let Some(timer) = timer {
            timer.cancelled.store(true, Ordering::Release);
            // Disarms it too, so it stops costing anything.
            let _ = self.core.tx.send(Command::CancelTimer(id));
        }
    }
}

/// Jobs an owner runs in a row before it lets others in: a connection's task hands the rest to
/// the scheduler task (so that one connection is not kept from its own socket by everyone
/// else's work); the scheduler task yields and looks at its timers and commands.
const BUDGET: usize = 64;

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
    /// Runs jobs as the owner: `first`, then the queue's, lane by lane, until the queue is
    /// empty (ownership is then released), an async job is next, or `budget` jobs have run and
    /// more wait. One lock round trip per job takes it and learns whether the queue is empty.
    fn run_sync(&self, mut next: Option<Queued>, budget: &mut usize) -> Ran {
        let mut slots = Some(lock(&self.slots));
        loop {
            let Queued { slot, job } = match next.take() {
                Some(q) => q,
                // Let go of the components before ownership: the next owner may come at once.
                None => match self.queue.next(*budget == 0, || drop(slots.take())) {
                    Next::Job(q) => q,
                    Next::Released => return Ran::Released,
                    Next::Yield => return Ran::OverBudget,
                },
            };
            match job {
                Job::Sync(f) => {
                    *budget = budget.saturating_sub(1);
                    let Some(component) = slots.as_mut().and_then(|s| s.get_mut(slot)) else {
                        continue;
                    };
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
        let dropped = self.queue.abandon();
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

/// One turn of the scheduler task as owner: the async job it was handed (if any), then `first`
/// and the queue, async jobs included, until the queue is empty or [`BUDGET`] jobs have run.
/// Gives the ownership back when jobs still wait.
async fn turn(
    core: &Core,
    owner: Handover,
    mut job: Option<(usize, AsyncJob)>,
    mut first: Option<Queued>,
) -> Option<Handover> {
    let mut budget = BUDGET;
    loop {
        if let Some((slot, job)) = job.take() {
            budget = budget.saturating_sub(1);
            if let Some(mut lent) = Lent::take(core, slot) {
                let fut = Holding::new(core, job(lent.component.as_mut()));
                if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                    tracing::error!(scheduler = %core.name, "async job panicked");
                }
            }
        }
        match core.run_sync(first.take(), &mut budget) {
            Ran::Released => {
                owner.released();
                return None;
            }
            Ran::Async { slot, job: j } => job = Some((slot, j)),
            Ran::OverBudget => return Some(owner),
        }
    }
}

struct Armed {
    key: delay_queue::Key,
    slot: usize,
    period: Option<Duration>,
    timer: Arc<TimerShared>,
}

/// The scheduler task's timers: armed in a delay queue, by id.
#[derive(Default)]
struct Timers {
    queue: DelayQueue<TimerId>,
    armed: HashMap<TimerId, Armed>,
}

impl Timers {
    fn add(
        &mut self,
        id: TimerId,
        slot: usize,
        delay: Duration,
        period: Option<Duration>,
        timer: Arc<TimerShared>,
    ) {
        if timer.cancelled.load(Ordering::Acquire) {
            return; // cancelled before it was armed
        }
        let key = self.queue.insert(id, delay);
        self.armed.insert(
            id,
            Armed {
                key,
                slot,
                period,
                timer,
            },
        );
    }

    fn cancel(&mut self, id: TimerId) {
        if let Some(t) = self.armed.remove(&id) {
            self.queue.remove(&t.key);
        }
    }

    /// The callback job of an expired timer, to queue; a periodic timer is re-armed first, so
    /// its period does not drift by the time the callback waits in the queue.
    fn expired(
        &mut self,
        expired: delay_queue::Expired<TimerId>,
        registry: &Registry,
    ) -> Option<Queued> {
        let id = *expired.get_ref();
        let mut armed = self.armed.remove(&id)?;
        let timer = armed.timer.clone();
        let slot = armed.slot;
        let once = match armed.period {
            Some(period) => {
                let next = next_tick(expired.deadline(), period, Instant::now());
                armed.key = self.queue.insert_at(id, next);
                self.armed.insert(id, armed);
                None
            }
            None => Some(registry.clone()),
        };
        let fire = Job::Sync(Box::new(move |state| {
            if let Some(registry) = once {
                lock(&registry).remove(&id);
            }
            if timer.cancelled.load(Ordering::Acquire) {
                return;
            }
            let mut f = lock(&timer.f);
            (*f)(state);
        }));
        Some(Queued { slot, job: fire })
    }
}

/// A periodic timer's next deadline: on its grid (`deadline` + k × `period`), the first one
/// after `now` (ticks missed while the scheduler was busy are skipped, not fired in a burst).
/// A period under the delay queue's resolution (1 ms) counts as 1 ms: a zero period would expire
/// again at once, forever, and keep the task from its queue.
fn next_tick(deadline: Instant, period: Duration, now: Instant) -> Instant {
    let period = period.max(Duration::from_millis(1));
    let next = deadline + period;
    if next > now {
        return next;
    }
    let behind = now.duration_since(deadline).as_nanos();
    let periods = behind / period.as_nanos() + 1;
    u32::try_from(periods)
        .ok()
        .and_then(|k| period.checked_mul(k))
        .map_or(now + period, |d| deadline + d)
}

/// The scheduler task: async jobs handed to it, the rest of long queues, and the timers.
async fn run(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut timers = Timers::default();
    // Ownership kept between turns while jobs wait.
    let mut owner: Option<Handover> = None;
    let mut stopping = false;
    loop {
        if let Some(o) = owner.take() {
            owner = turn(&core, o, None, None).await;
            if owner.is_some() {
                // Let the runtime run other tasks; then the commands and timers, then a turn.
                tokio::task::yield_now().await;
            }
        }
        if stopping {
            if owner.is_none() {
                break;
            }
            continue; // the jobs already queued run, turn by turn
        }
        // Timers first: polling the delay queue also arms its wake-up for a timer just added.
        tokio::select! {
            biased;
            Some(expired) = std::future::poll_fn(|cx| timers.queue.poll_expired(cx)), if !timers.queue.is_empty() => {
                let Some(fire) = timers.expired(expired, &core.timers) else { continue };
                if let Some(first) = core.queue.submit(Lane::TIMERS, fire) {
                    let o = Handover(Some(core.clone()));
                    owner = turn(&core, o, None, Some(first)).await;
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::RunAsync { owner: o, slot, job } => {
                        debug_assert!(owner.is_none(), "two owners");
                        owner = turn(&core, o, Some((slot, job)), None).await;
                    }
                    Command::Continue(o) => {
                        debug_assert!(owner.is_none(), "two owners");
                        owner = Some(o);
                    }
                    Command::AddTimer { id, slot, delay, period, timer } => {
                        timers.add(id, slot, delay, period, timer);
                    }
                    Command::CancelTimer(id) => timers.cancel(id),
                    Command::Stop => stopping = true,
                }
            }
            () = std::future::ready(()), if owner.is_some() => {}
        }
    }
    drop(owner);
    // The components go with the task: they may hold handles on this scheduler (a stored
    // `Context`), which would otherwise keep it alive forever.
    let slots = std::mem::take(&mut *lock(&core.slots));
    drop(slots);
    let registry = std::mem::take(&mut *lock(&core.timers));
    drop(registry);
    tracing::debug!(scheduler = %core.name, "scheduler stopped");
}

/// The locks here guard plain data; a panic while holding one cannot leave it half-written in
/// a way that matters, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(all(test, not(nano_loom)))]
mod tests;

#[cfg(all(test, nano_loom))]
mod loom_model;
