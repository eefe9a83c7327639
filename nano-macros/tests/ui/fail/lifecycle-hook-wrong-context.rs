use nano::prelude::*;

pub struct Clock;

pub struct Other;

#[component]
impl Clock {
    /// The shape is right, but the context is not this component's.
    fn before_shutdown(&mut self, _ctx: &Other) {}
}

fn main() {}
