use nano::prelude::*;

pub struct Clock;

pub struct Other;

#[component]
impl Clock {
    /// The context is shared.
    pub fn mutable(&self, _s: &Session, _ctx: &mut Context<Self>) -> Result<()> {
        Ok(())
    }
}

pub struct Watch;

#[component]
impl Watch {
    /// Another component's context.
    pub fn other(&self, _s: &Session, _ctx: &Context<Clock>) -> Result<()> {
        Ok(())
    }
}

fn main() {}
