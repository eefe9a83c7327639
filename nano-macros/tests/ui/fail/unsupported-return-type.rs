use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _s: &Session) {}

    pub fn count(&self, _s: &Session) -> usize {
        0
    }

    pub fn find(&self, _s: &Session, _id: u64) -> Option<String> {
        None
    }
}

fn main() {}
