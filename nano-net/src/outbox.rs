//! A connection's bounded outbound queue.
//!
//! Producers (handlers on schedulers, group broadcasts, heartbeats) push encoded packets under a
//! short lock; the writer takes everything queued at once and sends it in one vectored write.
//! An idle connection's queue holds no allocation beyond a few slots.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Slots kept allocated between bursts; a larger queue is released once drained.
const KEEP_SLOTS: usize = 16;

/// Why a packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Closed,
    Full,
}

pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
    ready: Notify,
    /// Whether the connection's task is waiting: only then does a push need to wake it. A push
    /// made by the task itself (a handler run inline) is written without a wake-up.
    parked: AtomicBool,
}

struct Queue {
    packets: VecDeque<Bytes>,
    closed: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                packets: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            parked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one packet; wakes the writer when the queue was empty.
    pub fn push(&self, packet: Bytes) -> Result<(), PushError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PushError::Closed);
        }
        if q.packets.len() >= self.capacity {
            return Err(PushError::Full);
        }
        q.packets.push_back(packet);
        let first = q.packets.len() == 1;
        drop(q);
        // Pairs with `set_parked(true)` followed by `is_empty()`: either the task sees this
        // packet before it waits, or we see it waiting.
        if first && self.parked.load(Ordering::SeqCst) {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Marks the connection's task as waiting (true) or running (false).
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().packets.is_empty()
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.lock().packets.len()
    }

    /// The most packets the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A future that completes at the next wake-up: a packet queued into an empty queue, or
    /// [`Outbox::wake`]. Keep it across loop turns (re-arm it after it fires) so waiting costs
    /// nothing per turn.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.ready.notified()
    }

    /// Wakes the connection's task (to close, or to stop).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Moves up to `max` queued packets into `batch`; releases spare slots once drained.
    pub fn take(&self, batch: &mut Vec<Bytes>, max: usize) {
        let mut q = self.lock();
        let n = q.packets.len().min(max);
        batch.extend(q.packets.drain(..n));
        if q.packets.is_empty() && q.packets.capacity() > KEEP_SLOTS {
            q.packets = VecDeque::new();
        }
    }

    /// Refuses further packets; returns what was still queued.
    pub fn close(&self) -> Vec<Bytes> {
        let mut q = self.lock();
        q.closed = true;
        std::mem::take(&mut q.packets).into()
    }
}
