//! `name`, `rename_all` and per-handler `name`.

use nano::prelude::*;
use nano::Component;

pub struct Room;

#[component(name = "room", rename_all = "lowercase")]
impl Room {
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }

    pub fn message(&mut self, _s: &Session, _text: String) -> Result<()> {
        Ok(())
    }

    pub fn send_message(&mut self, _s: &Session, _text: String) -> Result<()> {
        Ok(())
    }

    /// An exact name is not renamed.
    #[handler(name = "Kick_Player")]
    pub fn kick(&mut self, _s: &Session, _uid: u64) -> Result<()> {
        Ok(())
    }
}

pub struct Lobby;

#[component(rename_all = "camelCase")]
impl Lobby {
    pub fn list_rooms(&self, _s: &Session) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    pub fn r#match(&self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

fn main() {
    let routes: Vec<_> = <Room as Component>::HANDLERS
        .iter()
        .map(|h| h.route)
        .collect();
    assert_eq!(
        routes,
        [
            "room.join",
            "room.message",
            "room.sendmessage",
            "room.Kick_Player"
        ]
    );
    assert_eq!(<Room as Component>::NAME, "room");

    let routes: Vec<_> = Lobby::HANDLERS.iter().map(|h| h.route).collect();
    assert_eq!(routes, ["Lobby.listRooms", "Lobby.match"]);
    assert_eq!(Lobby::HANDLERS[0].name, "listRooms");
}
