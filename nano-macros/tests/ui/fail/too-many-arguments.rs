use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _s: &Session, _name: String, _level: u32, _team: u8) -> Result<()> {
        Ok(())
    }
}

fn main() {}
