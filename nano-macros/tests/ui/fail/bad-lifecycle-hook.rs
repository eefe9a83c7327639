use nano::prelude::*;

pub struct Clock;

#[component]
impl Clock {
    pub fn init(&mut self) {}

    fn shutdown(&mut self, _ctx: &Context<Self>) -> Result<()> {
        Ok(())
    }

    /// Not a hook: explicitly skipped.
    #[handler(skip)]
    pub fn after_init(&self) -> u32 {
        0
    }
}

fn main() {}
