//! The synchronization primitives of the lock-free and locked cores (the scheduler's queue and
//! ownership flag, the in-flight counter): std's normally, loom's when built with
//! `--cfg nano_loom`, so that the code the model checker explores is the code that runs.
//!
//! ```text
//! RUSTFLAGS="--cfg nano_loom" cargo test -p nano-core --lib --release loom
//! ```

#[cfg(nano_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(nano_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(nano_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(nano_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// The locks here guard plain data; a panic while holding one cannot leave it half-written in
/// a way that matters, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
