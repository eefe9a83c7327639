//! The synchronization primitives of the lock-free pieces (the outbox's wake-up), from std and
//! futures normally, from loom when built with `--cfg nano_loom` for model checking:
//!
//! ```text
//! RUSTFLAGS="--cfg nano_loom" cargo test -p nano-net --lib loom --release
//! ```
//!
//! (A cfg of our own: tokio reads `--cfg loom` and does not build with it.)

#[cfg(not(nano_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(nano_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(nano_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(nano_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// Orders a `SeqCst` store before a later `SeqCst` load of another location (the two sides
/// of "queue, then look whether the task waits" / "say it waits, then look at the queue").
/// The real code needs nothing more: `SeqCst` operations are in one total order. loom models
/// `SeqCst` accesses as acquire/release only (it would report that pattern as a lost
/// wake-up that cannot happen), but models `SeqCst` fences exactly, so under loom this is one.
#[inline(always)]
pub(crate) fn seq_cst_store_load() {
    #[cfg(nano_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// A waker slot: futures' `AtomicWaker` normally. Under the model checker, a waker behind a
/// loom mutex: its contract (a `wake` after a `register` wakes that waker; registering and
/// waking are each atomic) without its lock-free implementation, which is futures' to check.
/// (loom's own `AtomicWaker` loses the ordering of a wake-up through it, so loom reports a
/// deadlock on the textbook flag / register / re-check pattern.)
#[derive(Default)]
pub(crate) struct AtomicWaker {
    #[cfg(not(nano_loom))]
    inner: futures_util::task::AtomicWaker,
    #[cfg(nano_loom)]
    inner: loom::sync::Mutex<Option<std::task::Waker>>,
}

impl AtomicWaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the waker to wake.
    #[inline]
    pub fn register(&self, waker: &std::task::Waker) {
        #[cfg(not(nano_loom))]
        self.inner.register(waker);
        #[cfg(nano_loom)]
        {
            *self.inner.lock().unwrap() = Some(waker.clone());
        }
    }

    /// Wakes the registered waker, if any.
    #[inline]
    pub fn wake(&self) {
        #[cfg(not(nano_loom))]
        self.inner.wake();
        #[cfg(nano_loom)]
        {
            let waker = self.inner.lock().unwrap().take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}
