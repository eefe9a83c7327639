use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }
}

fn main() {}
