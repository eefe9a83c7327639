use nano::prelude::*;

pub struct Room;

#[component(nmae = "room")]
impl Room {
    #[handler(rename = "Enter")]
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

pub struct Lobby;

#[component(rename_all = "lower_case")]
impl Lobby {}

fn main() {}
