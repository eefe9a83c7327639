//! Model check of the ownership hand-over (`RUSTFLAGS="--cfg nano_loom" cargo test -p nano-core
//! --lib --release loom`): every interleaving of submitters, owners letting go, and an owner
//! over its budget handing the queue to the scheduler task.
//!
//! [`Queue`] is the real code; the drain loop is `Core::run_sync`'s (take the next job under
//! the lock, or let go when the queue is empty, or stop when the budget is spent). Checked: no
//! two owners at once, every job runs exactly once and in its lane's order, and no job is left
//! on a free scheduler (at the end nobody owns it and the queue is empty).

use loom::sync::atomic::AtomicBool;
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

use super::queue::{Lane, Next, Queue};
use super::sync::Ordering;

/// A job: (submitter, sequence number).
type J = (usize, usize);

struct Model {
    queue: Queue<J>,
    /// Set while someone runs a job (an owner).
    running: AtomicBool,
    log: Mutex<Vec<J>>,
    /// Ownership in transit to the scheduler task (its command channel) and whether the
    /// submitters are done.
    handed: Mutex<(usize, bool)>,
    cv: Condvar,
    budget: usize,
}

impl Model {
    fn new(budget: usize) -> Arc<Self> {
        Arc::new(Model {
            queue: Queue::new(),
            running: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            handed: Mutex::new((0, false)),
            cv: Condvar::new(),
            budget,
        })
    }

    fn run(&self, job: J) {
        assert!(!self.running.swap(true, Ordering::SeqCst), "two owners");
        self.log.lock().unwrap().push(job);
        self.running.store(false, Ordering::SeqCst);
    }

    /// As the owner: runs `first`, then queued jobs, until let go (false) or over budget
    /// (true: still the owner).
    fn drain(&self, mut first: Option<J>) -> bool {
        let mut budget = self.budget;
        loop {
            let job = match first.take() {
                Some(j) => j,
                None => match self.queue.next(budget == 0, || {}) {
                    Next::Job(j) => j,
                    Next::Released => return false,
                    Next::Yield => return true,
                },
            };
            budget = budget.saturating_sub(1);
            self.run(job);
        }
    }

    /// `Scheduler::enqueue`: queue, or own and drain, handing the rest over when over budget.
    fn submit(&self, lane: Lane, job: J) {
        if let Some(first) = self.queue.submit(lane, job) {
            if self.drain(Some(first)) {
                self.handed.lock().unwrap().0 += 1;
                self.cv.notify_all();
            }
        }
    }

    /// The scheduler task: takes handed-over ownership and drains, until the submitters are
    /// done and nothing is in transit.
    fn task(&self) {
        loop {
            let mut h = self.handed.lock().unwrap();
            while h.0 == 0 && !h.1 {
                h = self.cv.wait(h).unwrap();
            }
            if h.0 == 0 {
                return;
            }
            h.0 -= 1;
            drop(h);
            while self.drain(None) {}
        }
    }
}

fn check(m: &Model, submitters: usize, each: usize) {
    assert_eq!(m.queue.peek(), (false, 0), "a job left on a free scheduler");
    let log = m.log.lock().unwrap();
    assert_eq!(log.len(), submitters * each, "jobs lost or run twice");
    for t in 0..submitters {
        let mine: Vec<usize> = log.iter().filter(|j| j.0 == t).map(|j| j.1).collect();
        assert_eq!(mine, (0..each).collect::<Vec<_>>(), "lane {t} out of order");
    }
}

fn scenario(budget: usize, submitters: usize, each: usize) {
    model(move || {
        let m = Model::new(budget);
        let task = {
            let m = m.clone();
            thread::spawn(move || m.task())
        };
        let threads: Vec<_> = (0..submitters)
            .map(|t| {
                let m = m.clone();
                thread::spawn(move || {
                    for i in 0..each {
                        m.submit(Lane::session(t as u64 + 1), (t, i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        m.handed.lock().unwrap().1 = true;
        m.cv.notify_all();
        task.join().unwrap();
        check(&m, submitters, each);
    });
}

/// Submitters racing owners that let go: no job stranded, no two owners.
#[test]
fn loom_scheduler_hand_over_between_submitters() {
    scenario(usize::MAX, 2, 2);
}

/// An owner over its budget hands the queue to the scheduler task while others submit.
#[test]
fn loom_scheduler_hand_over_to_the_task_over_budget() {
    scenario(1, 2, 2);
}
