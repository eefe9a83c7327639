use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }

    #[handler(name = "Join")]
    pub fn enter(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

pub struct Lobby;

#[component(rename_all = "lowercase")]
impl Lobby {
    pub fn sendmessage(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }

    pub fn send_message(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

fn main() {}
