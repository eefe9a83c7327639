use nano::prelude::*;

pub struct Room;

#[component(name = "room", rename_all = "lowercase", name = "hall")]
impl Room {
    #[handler(name = "Enter")]
    #[handler(name = "Join")]
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

fn main() {}
