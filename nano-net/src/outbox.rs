//! A connection's bounded outbound queue, and the wake-up of the connection's task.
//!
//! Producers (handlers on schedulers, group broadcasts, heartbeats) push encoded packets under a
//! short lock; the writer takes everything queued at once and sends it in one vectored write.
//! The queue's length is mirrored in an atomic, so the connection's task can ask "anything to
//! write?" without taking the lock. An idle connection's queue holds no allocation beyond a few
//! slots.
//!
//! The wake-up is a flag plus an [`AtomicWaker`]: cheaper to wait on, turn after turn, than a
//! `tokio::sync::Notify`, whose waiting future takes the notifier's lock each time it is polled.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// Slots kept allocated between bursts; a larger queue is released once drained.
const KEEP_SLOTS: usize = 16;

/// Why a packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Closed,
    Full,
}

/// Field order is layout (`repr(C)`): what every request touches first, close together, so a
/// request on one of thousands of connections misses the cache on as few lines as possible.
#[repr(C)]
pub(crate) struct Outbox {
    /// `queue.packets.len()`, written under the lock, read without it.
    len: AtomicUsize,
    /// How many times a wake-up has taken the waker (see [`Outbox::woken`]).
    takes: AtomicUsize,
    /// Set by a wake-up, cleared by the task that observes it.
    woken: AtomicBool,
    /// Whether the connection's task is waiting: only then does a push need to wake it. A push
    /// made by the task itself (a handler run inline) is written without a wake-up.
    parked: AtomicBool,
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    capacity: usize,
}

/// The waker a waiting task last left in an [`Outbox`], and the outbox's take count then.
#[derive(Default)]
pub(crate) struct Registered(Option<(Waker, usize)>);

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
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            woken: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            takes: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one packet; wakes the connection's task when it is waiting and the queue was
    /// empty.
    pub fn push(&self, packet: Bytes) -> Result<(), PushError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PushError::Closed);
        }
        let len = q.packets.len();
        if len >= self.capacity {
            return Err(PushError::Full);
        }
        q.packets.push_back(packet);
        // SeqCst pairs with `set_parked(true)` followed by `is_empty()`: either the task sees
        // this packet before it waits, or we see it waiting.
        self.len.store(len + 1, Ordering::SeqCst);
        drop(q);
        if len == 0 && self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    /// Marks the connection's task as waiting (true) or running (false).
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packets queued now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// The most packets the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Completes at the next wake-up (a packet queued into an empty queue while the task was
    /// parked, or [`Outbox::wake`]), consuming it. One task waits; others only wake it.
    ///
    /// `registered` is the waiting task's memory of the waker it left here: while no wake-up
    /// has taken it, polling again with the same waker registers nothing (the common case: the
    /// task polls this at every turn, and only another task's push ever uses the waker).
    pub fn woken<'a>(
        &'a self,
        registered: &'a mut Registered,
    ) -> impl std::future::Future<Output = ()> + 'a {
        poll_fn(move |cx| self.poll_woken(cx, registered))
    }

    fn poll_woken(&self, cx: &mut Context<'_>, registered: &mut Registered) -> Poll<()> {
        if self.woken.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if let Some((waker, takes)) = &registered.0 {
            // Every take of the waker is counted before the waker is called, so an unchanged
            // count means ours is still in place.
            if waker.will_wake(cx.waker()) && self.takes.load(Ordering::SeqCst) == *takes {
                return Poll::Pending;
            }
        }
        let takes = self.takes.load(Ordering::SeqCst);
        self.waker.register(cx.waker());
        registered.0 = Some((cx.waker().clone(), takes));
        // A wake-up between the check above and the registration has no waker to call.
        if self.woken.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Wakes the connection's task (new packets, or time to close or stop).
    pub fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        let waker = self.waker.take();
        self.takes.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Moves up to `max` queued packets into `batch`; releases spare slots once drained.
    pub fn take(&self, batch: &mut Vec<Bytes>, max: usize) {
        if self.is_empty() {
            return;
        }
        let mut q = self.lock();
        let n = q.packets.len().min(max);
        batch.extend(q.packets.drain(..n));
        self.len.store(q.packets.len(), Ordering::SeqCst);
        if q.packets.is_empty() && q.packets.capacity() > KEEP_SLOTS {
            q.packets = VecDeque::new();
        }
    }

    /// Refuses further packets; returns what was still queued.
    pub fn close(&self) -> Vec<Bytes> {
        let mut q = self.lock();
        q.closed = true;
        self.len.store(0, Ordering::SeqCst);
        std::mem::take(&mut q.packets).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn packet(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn length_follows_pushes_and_takes() {
        let o = Outbox::new(4);
        assert!(o.is_empty());
        for n in 0..4 {
            o.push(packet(n)).unwrap();
        }
        assert_eq!(o.len(), 4);
        assert_eq!(o.push(packet(9)), Err(PushError::Full));
        let mut batch = Vec::new();
        o.take(&mut batch, 3);
        assert_eq!(batch, vec![packet(0), packet(1), packet(2)]);
        assert_eq!(o.len(), 1);
        batch.clear();
        o.take(&mut batch, 3);
        assert_eq!(batch, vec![packet(3)]);
        assert!(o.is_empty());
        o.push(packet(5)).unwrap();
        assert_eq!(o.close(), vec![packet(5)]);
        assert!(o.is_empty());
        assert_eq!(o.push(packet(6)), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_a_parked_task_only() {
        let o = Outbox::new(8);
        let mut reg = Registered::default();
        // Not parked: the task's own pushes leave no wake-up behind.
        o.push(packet(1)).unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(20), o.woken(&mut reg)).await;
        assert!(pending.is_err(), "a push while running must not wake");
        o.take(&mut Vec::new(), 8);
        // Parked: the first push into the empty queue wakes it.
        o.set_parked(true);
        o.push(packet(2)).unwrap();
        tokio::time::timeout(Duration::from_secs(1), o.woken(&mut reg))
            .await
            .expect("woken by the push");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_from_other_threads_are_never_lost() {
        // Two producers and a thread of stray wake-ups (as a close would make) race the
        // consumer's park / check / wait: a lost wake-up stalls the consumer (timeout).
        const EACH: u32 = 20_000;
        let o = Arc::new(Outbox::new(64));
        let done = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let o = o.clone();
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        let v = p << 24 | n;
                        while o.push(Bytes::from(v.to_be_bytes().to_vec())).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let stray = {
            let (o, done) = (o.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    o.wake();
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        };
        let mut next = [0u32; 2];
        let mut batch = Vec::new();
        let mut reg = Registered::default();
        while next.iter().sum::<u32>() < 2 * EACH {
            o.take(&mut batch, 256);
            for p in batch.drain(..) {
                let v = u32::from_be_bytes(p.as_ref().try_into().unwrap());
                let (producer, n) = ((v >> 24) as usize, v & 0xff_ffff);
                assert_eq!(n, next[producer], "in order per producer");
                next[producer] += 1;
            }
            o.set_parked(true);
            if o.is_empty() {
                tokio::time::timeout(Duration::from_secs(5), o.woken(&mut reg))
                    .await
                    .expect("a packet queued while parked must wake the task");
            }
            o.set_parked(false);
        }
        done.store(true, Ordering::Relaxed);
        for p in producers {
            p.join().unwrap();
        }
        stray.join().unwrap();
    }
}
