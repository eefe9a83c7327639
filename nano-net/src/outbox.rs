//! A connection's bounded outbound queue, and the wake-up of the connection's task.
//!
//! Producers (handlers on schedulers, group broadcasts, heartbeats) push encoded packets under a
//! short lock; the writer takes everything queued at once and sends it in one vectored write.
//! The queue's length is mirrored in an atomic, so the connection's task can ask "anything to
//! write?" without taking the lock. An idle connection's queue holds no allocation beyond a few
//! slots.
//!
//! The queue is bounded twice: in packets and in bytes (the packets' total length, counted
//! under the same lock as the packets themselves, mirrored in an atomic next to the length).
//!
//! The wake-up is a flag plus an [`AtomicWaker`]: cheaper to wait on, turn after turn, than a
//! `tokio::sync::Notify`, whose waiting future takes the notifier's lock each time it is polled.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::sync::{
    seq_cst_store_load, AtomicBool, AtomicUsize, AtomicWaker, Mutex, MutexGuard, Ordering,
};

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
    /// `queue.bytes`, written under the lock, read without it.
    bytes: AtomicUsize,
    /// Set by a wake-up, cleared by the task that observes it.
    woken: AtomicBool,
    /// Whether the connection's task is waiting: only then does a push need to wake it. A push
    /// made by the task itself (a handler run inline) is written without a wake-up.
    parked: AtomicBool,
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    capacity: usize,
    max_bytes: usize,
}

struct Queue {
    packets: Packets,
    /// Total length of `packets`.
    bytes: usize,
    closed: bool,
}

/// A FIFO whose first packet is stored inline: the usual queue (one reply waiting for its
/// write) touches no heap slot array, and an idle connection holds none.
#[derive(Default)]
struct Packets {
    /// The oldest packet, when `rest` is empty or holds only newer ones.
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Packets {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn push_back(&mut self, p: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(p);
        } else {
            self.rest.push_back(p);
        }
    }

    /// Moves up to `max` of the oldest packets into `batch`; returns their total length.
    fn take_into(&mut self, batch: &mut Vec<Bytes>, max: usize) -> usize {
        let mut max = max;
        if max == 0 {
            return 0;
        }
        let start = batch.len();
        if let Some(p) = self.first.take() {
            batch.push(p);
            max -= 1;
        }
        let n = self.rest.len().min(max);
        batch.extend(self.rest.drain(..n));
        if self.rest.is_empty() && self.rest.capacity() > KEEP_SLOTS {
            self.rest = VecDeque::new();
        }
        batch[start..].iter().map(Bytes::len).sum()
    }

    fn into_vec(self) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self.first.into_iter().collect();
        v.extend(self.rest);
        v
    }
}

impl Outbox {
    /// A queue of at most `capacity` packets and `max_bytes` bytes (a packet larger than
    /// `max_bytes` is still taken into an empty queue).
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                packets: Packets::default(),
                bytes: 0,
                closed: false,
            }),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            woken: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            parked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
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
        let bytes = q.bytes + packet.len();
        if len >= self.capacity || (len > 0 && bytes > self.max_bytes) {
            return Err(PushError::Full);
        }
        q.packets.push_back(packet);
        q.bytes = bytes;
        self.bytes.store(bytes, Ordering::Relaxed);
        // SeqCst pairs with `set_parked(true)` followed by `is_empty()`: either the task sees
        // this packet before it waits, or we see it waiting.
        self.len.store(len + 1, Ordering::SeqCst);
        drop(q);
        seq_cst_store_load();
        if len == 0 && self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    /// Marks the connection's task as waiting (true) or running (false).
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::SeqCst);
        seq_cst_store_load();
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
    #[allow(dead_code)] // the loom model and tests
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the queue is half full, in packets or in bytes: time for the connection's
    /// task to write before reading on.
    #[inline]
    pub fn half_full(&self) -> bool {
        self.len() >= self.capacity / 2 || self.bytes() >= self.max_bytes / 2
    }

    /// Completes at the next wake-up (a packet queued into an empty queue while the task was
    /// parked, or [`Outbox::wake`]), consuming it. One task waits; others only wake it.
    pub fn woken(&self) -> impl std::future::Future<Output = ()> + '_ {
        poll_fn(|cx| self.poll_woken(cx))
    }

    fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A wake-up between the check above and the registration has no waker to call.
        if self.woken.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Wakes the connection's task (new packets, or time to close or stop).
    pub fn wake(&self) {
        // A swap, not a store: the same instruction as a `SeqCst` store on x86 (`xchg`), and
        // the model checker orders it against the task's own swap (it mis-orders a plain store
        // against a concurrent read-modify-write: a wake-up lost that cannot be).
        self.woken.swap(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Moves up to `max` queued packets into `batch`; releases spare slots once drained.
    pub fn take(&self, batch: &mut Vec<Bytes>, max: usize) {
        if self.is_empty() {
            return;
        }
        let mut q = self.lock();
        q.bytes -= q.packets.take_into(batch, max);
        self.bytes.store(q.bytes, Ordering::Relaxed);
        self.len.store(q.packets.len(), Ordering::SeqCst);
    }

    /// Refuses further packets; returns what was still queued.
    pub fn close(&self) -> Vec<Bytes> {
        let mut q = self.lock();
        q.closed = true;
        q.bytes = 0;
        self.bytes.store(0, Ordering::Relaxed);
        self.len.store(0, Ordering::SeqCst);
        std::mem::take(&mut q.packets).into_vec()
    }
}

#[cfg(all(test, not(nano_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn packet(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn length_follows_pushes_and_takes() {
        let o = Outbox::new(4, usize::MAX);
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

    #[test]
    fn bytes_are_bounded_too() {
        let o = Outbox::new(100, 10);
        o.push(Bytes::from(vec![0; 6])).unwrap();
        o.push(Bytes::from(vec![1; 4])).unwrap();
        assert_eq!(o.bytes(), 10);
        assert!(o.half_full(), "half the bytes");
        assert_eq!(o.push(Bytes::from(vec![2; 1])), Err(PushError::Full));
        let mut batch = Vec::new();
        o.take(&mut batch, 1);
        assert_eq!(o.bytes(), 4);
        assert!(!o.half_full());
        o.push(Bytes::from(vec![3; 6])).unwrap();
        assert_eq!(o.push(Bytes::from(vec![4; 1])), Err(PushError::Full));
        batch.clear();
        o.take(&mut batch, 8);
        assert_eq!(o.bytes(), 0);
        // Alone in the queue, a packet over the byte bound still goes out.
        o.push(Bytes::from(vec![5; 50])).unwrap();
        assert_eq!(o.push(Bytes::from(vec![6; 1])), Err(PushError::Full));
        assert_eq!(o.close().len(), 1);
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn order_is_kept_across_the_inline_slot() {
        let o = Outbox::new(8, usize::MAX);
        let mut batch = Vec::new();
        for n in 0..3 {
            o.push(packet(n)).unwrap();
        }
        o.take(&mut batch, 1);
        assert_eq!(batch, vec![packet(0)]);
        // The inline slot is free but older packets wait behind it: new ones go after them.
        o.push(packet(3)).unwrap();
        batch.clear();
        o.take(&mut batch, 8);
        assert_eq!(batch, vec![packet(1), packet(2), packet(3)]);
        // Empty again: the next packet takes the inline slot, and a take of 0 moves nothing.
        o.push(packet(4)).unwrap();
        batch.clear();
        o.take(&mut batch, 0);
        assert!(batch.is_empty());
        assert_eq!(o.len(), 1);
        o.push(packet(5)).unwrap();
        assert_eq!(o.close(), vec![packet(4), packet(5)]);
    }

    #[tokio::test]
    async fn a_push_wakes_a_parked_task_only() {
        let o = Outbox::new(8, usize::MAX);
        // Not parked: the task's own pushes leave no wake-up behind.
        o.push(packet(1)).unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(20), o.woken()).await;
        assert!(pending.is_err(), "a push while running must not wake");
        o.take(&mut Vec::new(), 8);
        // Parked: the first push into the empty queue wakes it.
        o.set_parked(true);
        o.push(packet(2)).unwrap();
        tokio::time::timeout(Duration::from_secs(1), o.woken())
            .await
            .expect("woken by the push");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_from_other_threads_are_never_lost() {
        // Two producers and a thread of stray wake-ups (as a close would make) race the
        // consumer's park / check / wait: a lost wake-up stalls the consumer (timeout).
        const EACH: u32 = 20_000;
        let o = Arc::new(Outbox::new(64, usize::MAX));
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
                // A timeout re-polls what it wraps, which would see the flag of a wake-up
                // whose waker call was lost: time the wait instead of trusting the timeout.
                let started = std::time::Instant::now();
                let _ = tokio::time::timeout(Duration::from_secs(3), o.woken()).await;
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "a packet queued while parked must wake the task"
                );
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

/// Model checks of the wake-up protocol: every interleaving (within loom's bounds) of
/// producers pushing, the connection's task parking and checking, and stray wake-ups (a close
/// or an abort). A lost wake-up leaves the task blocked forever, which loom reports.
#[cfg(all(test, nano_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    fn packet(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    /// Every interleaving with up to three preemptions (loom's advice: most concurrency bugs
    /// need two or three; unbounded, two producers and the task take hours).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// The connection task's loop, as the agent runs it: take, park, check, wait.
    fn consume(o: &Outbox, want: usize, stop: Option<&AtomicBool>) -> Vec<Bytes> {
        let mut got = Vec::new();
        loop {
            o.take(&mut got, usize::MAX);
            if got.len() >= want || stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return got;
            }
            o.set_parked(true);
            if o.is_empty() {
                loom::future::block_on(o.woken());
            }
            o.set_parked(false);
        }
    }

    #[test]
    fn loom_packets_queued_by_two_producers_always_wake_the_task() {
        model(|| {
            let o = Arc::new(Outbox::new(8, usize::MAX));
            let producers: Vec<_> = (0..2u8)
                .map(|n| {
                    let o = o.clone();
                    loom::thread::spawn(move || o.push(packet(n)).unwrap())
                })
                .collect();
            let got = consume(&o, 2, None);
            assert_eq!(got.len(), 2);
            for p in producers {
                p.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_a_push_and_a_stray_wake_up_never_leave_the_task_waiting() {
        model(|| {
            let o = Arc::new(Outbox::new(8, usize::MAX));
            let producer = {
                let o = o.clone();
                loom::thread::spawn(move || {
                    o.push(packet(1)).unwrap();
                    o.push(packet(2)).unwrap();
                })
            };
            // A wake-up with nothing queued (as a kick's, racing the pushes) must not eat the
            // one a later push needs.
            let stray = {
                let o = o.clone();
                loom::thread::spawn(move || o.wake())
            };
            let got = consume(&o, 2, None);
            assert_eq!(got, vec![packet(1), packet(2)], "in order");
            producer.join().unwrap();
            stray.join().unwrap();
        });
    }

    #[test]
    fn loom_an_end_signalled_by_wake_is_always_seen() {
        model(|| {
            let o = Arc::new(Outbox::new(8, usize::MAX));
            let closing = Arc::new(AtomicBool::new(false));
            let ender = {
                let (o, closing) = (o.clone(), closing.clone());
                // What ConnState::end does: set the flag, then wake.
                loom::thread::spawn(move || {
                    closing.store(true, Ordering::SeqCst);
                    o.wake();
                })
            };
            consume(&o, usize::MAX, Some(&closing));
            ender.join().unwrap();
        });
    }
}
