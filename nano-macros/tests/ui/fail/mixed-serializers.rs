use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }

    pub fn leave(&mut self, _s: &Session<Protobuf>) -> Result<()> {
        Ok(())
    }
}

fn main() {}
