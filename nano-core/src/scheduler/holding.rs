//! Which scheduler the current thread is driving an async job for: the guard against an async
//! handler awaiting work on its own scheduler (which waits for the handler: a deadlock).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Core, SlotFuture};

thread_local! {
    /// The `Core` (as an address) whose async job this thread is polling; 0 when none.
    static HOLDING: Cell<usize> = const { Cell::new(0) };
}

fn addr(core: &Core) -> usize {
    std::ptr::from_ref(core) as usize
}

/// Whether this thread is polling an async job of `core`.
pub(super) fn is_held(core: &Core) -> bool {
    HOLDING.with(|h| h.get() == addr(core))
}

/// An async job that marks its scheduler as held by this thread while it is polled.
pub(super) struct Holding<'a> {
    core: usize,
    fut: SlotFuture<'a>,
}

impl<'a> Holding<'a> {
    pub(super) fn new(core: &Core, fut: SlotFuture<'a>) -> Self {
        Holding {
            core: addr(core),
            fut,
        }
    }
}

/// Puts the previous value back, also when the poll panics.
struct Restore(usize);

impl Drop for Restore {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(self.0));
    }
}

impl Future for Holding<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let _restore = Restore(HOLDING.with(|h| h.replace(self.core)));
        self.fut.as_mut().poll(cx)
    }
}
