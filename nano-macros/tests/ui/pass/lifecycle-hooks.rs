//! Lifecycle hooks are forwarded to the `Component` impl; other methods are untouched.

use nano::prelude::*;
use nano::Component;

#[derive(Default)]
pub struct Clock {
    ctx: Option<Context<Clock>>,
}

#[component]
impl Clock {
    pub fn init(&mut self, ctx: &Context<Self>) {
        self.ctx = Some(ctx.clone());
    }

    fn after_init(&mut self, _ctx: &nano::Context<Clock>) {}

    pub(crate) fn before_shutdown(&mut self, _ctx: &Context<Self>) {}

    fn shutdown(&mut self, _ctx: &Context<Self>) -> () {
        self.ctx = None;
    }

    pub fn now(&self, _s: &Session) -> Result<u64> {
        Ok(0)
    }
}

/// A component with no hooks keeps the trait's default (no-op) hooks.
pub struct Quiet;

#[component]
impl Quiet {}

fn main() {
    assert_eq!(Clock::HANDLERS.len(), 1);
    assert!(Quiet::HANDLERS.is_empty());
    assert!(Clock::default().ctx.is_none());
}
