use nano::prelude::*;

pub struct Room;

pub trait Handlers {
    fn join(&mut self, s: &Session) -> Result<()>;
}

#[component]
impl Handlers for Room {
    fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

fn main() {}
