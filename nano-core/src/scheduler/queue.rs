//! The job queue and the ownership flag, behind one lock: the scheduler's hand-over protocol.
//!
//! Jobs wait in *lanes*: one per session (its messages and its closed-callbacks), one for the
//! scheduler's own work (`Context::run`, results of `Context::spawn`, lifecycle hooks) and one
//! for timer callbacks. A lane's jobs run in the order they were queued; lanes with jobs take
//! turns, one job each, so a session with many messages queued delays another session's next
//! message by at most one job per lane that has work, not by its whole backlog. Queueing and
//! taking a job are O(1): a hash lookup for the lane and a ring of the lanes that have jobs.
//!
//! Generic over the job type so that the model checker (`--cfg nano_loom`, see
//! [`sync`](super::sync)) explores this very code.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::sync::{lock, Mutex};

/// Which queue a job waits in. Jobs of one lane run in order; lanes take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Lane(u64);

impl Lane {
    /// The scheduler's own work: `Context::run`, spawn results, lifecycle hooks.
    pub const WORK: Lane = Lane(0);
    /// Timer callbacks (a lane of their own, so a burst of `run`s does not hold timers back).
    pub const TIMERS: Lane = Lane(u64::MAX);

    /// The lane of a session's messages and closed-callbacks (session ids start at 1).
    pub fn session(id: u64) -> Lane {
        Lane(id)
    }
}

/// Hashes a lane id with one multiplication (session ids are sequential integers).
#[derive(Default)]
pub(super) struct LaneHasher(u64);

impl Hasher for LaneHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Emptied lane buffers kept for reuse, so a lane that empties and fills again (the common
/// case under load) does not allocate.
const SPARE_LANES: usize = 64;

/// The queued jobs, by lane.
pub(super) struct Lanes<J> {
    lanes: HashMap<Lane, VecDeque<J>, BuildHasherDefault<LaneHasher>>,
    /// The lanes that have jobs, in the order they are served; each appears once.
    ring: VecDeque<Lane>,
    spare: Vec<VecDeque<J>>,
    len: usize,
}

impl<J> Lanes<J> {
    fn new() -> Self {
        Lanes {
            lanes: HashMap::default(),
            ring: VecDeque::new(),
            spare: Vec::new(),
            len: 0,
        }
    }

    /// How many jobs are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, lane: Lane, job: J) {
        match self.lanes.entry(lane) {
            Entry::Occupied(mut q) => q.get_mut().push_back(job),
            Entry::Vacant(v) => {
                let mut q = self.spare.pop().unwrap_or_default();
                q.push_back(job);
                v.insert(q);
                self.ring.push_back(lane);
            }
        }
        self.len += 1;
    }

    /// The next job of the lane whose turn it is; that lane goes to the back of the ring.
    fn pop(&mut self) -> Option<J> {
        let lane = self.ring.pop_front()?;
        let Entry::Occupied(mut q) = self.lanes.entry(lane) else {
            debug_assert!(false, "a lane in the ring has no queue");
            return None;
        };
        let job = q.get_mut().pop_front();
        if q.get().is_empty() {
            let q = q.remove();
            if self.spare.len() < SPARE_LANES {
                self.spare.push(q);
            }
        } else {
            self.ring.push_back(lane);
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }
}

/// What the owner does next.
pub(super) enum Next<J> {
    /// Run this job.
    Job(J),
    /// The queue was empty: ownership has been given up.
    Released,
    /// The owner's budget is spent and jobs wait: it still owns the scheduler.
    Yield,
}

struct State<J> {
    lanes: Lanes<J>,
    /// Someone (a submitter running jobs inline, the scheduler task, or a command in transit
    /// to it) owns the scheduler. While it is false the queue is empty.
    owned: bool,
}

/// The queue and who owns the scheduler, behind one lock: one lock round trip both queues a
/// job and tells whether anyone is running, and one both takes the next job and, the queue
/// being empty, gives ownership up — a job queued a moment later finds the scheduler free and
/// runs itself, so none is ever stranded.
pub(super) struct Queue<J> {
    state: Mutex<State<J>>,
}

impl<J> Queue<J> {
    pub fn new() -> Self {
        Queue {
            state: Mutex::new(State {
                lanes: Lanes::new(),
                owned: false,
            }),
        }
    }

    /// Queues a job behind the current owner; or, when nobody owns the scheduler, makes the
    /// caller its owner and gives the job back to be run first (the queue is empty then).
    pub fn submit(&self, lane: Lane, job: J) -> Option<J> {
        let mut state = lock(&self.state);
        if state.owned {
            state.lanes.push(lane, job);
            None
        } else {
            debug_assert!(state.lanes.is_empty(), "jobs queued on a free scheduler");
            state.owned = true;
            Some(job)
        }
    }

    /// For the owner: the next job; or, the queue being empty, gives ownership up (calling
    /// `before_release` first, under the lock); or, `over_budget` and jobs waiting, tells the
    /// owner to yield, keeping ownership.
    pub fn next(&self, over_budget: bool, before_release: impl FnOnce()) -> Next<J> {
        let mut state = lock(&self.state);
        debug_assert!(state.owned, "next() by a non-owner");
        if state.lanes.is_empty() {
            before_release();
            state.owned = false;
            Next::Released
        } else if over_budget {
            Next::Yield
        } else {
            match state.lanes.pop() {
                Some(job) => Next::Job(job),
                None => Next::Yield, // not reached: the lanes are not empty
            }
        }
    }

    /// Ownership lost without anyone to run the queue: frees the scheduler and returns the
    /// queued jobs, for the caller to drop outside the lock.
    pub fn abandon(&self) -> Lanes<J> {
        let mut state = lock(&self.state);
        state.owned = false;
        std::mem::replace(&mut state.lanes, Lanes::new())
    }

    /// How many jobs are queued.
    pub fn len(&self) -> usize {
        lock(&self.state).lanes.len()
    }

    /// Whether someone owns the scheduler, and how many jobs are queued.
    #[cfg(test)]
    pub fn peek(&self) -> (bool, usize) {
        let state = lock(&self.state);
        (state.owned, state.lanes.len())
    }
}
