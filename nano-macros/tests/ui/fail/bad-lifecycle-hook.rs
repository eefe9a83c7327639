use nano::prelude::*;

pub struct Clock;

pub struct Other;

#[component]
impl Clock {
    pub fn init(&mut self) {}

    fn shutdown(&mut self, _ctx: &Context<Self>) -> Result<()> {
        Ok(())
    }

    /// The signature is right, but the context is another component's.
    fn before_shutdown(&mut self, _ctx: &Other) {}

    /// Not a hook: explicitly skipped.
    #[handler(skip)]
    pub fn after_init(&self) -> u32 {
        0
    }
}

fn main() {}
