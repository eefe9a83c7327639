//! Every handler shape under the default JSON serializer.

use nano::prelude::*;
use nano::Component;

#[derive(Deserialize)]
pub struct JoinRequest {
    pub name: String,
}

#[derive(Serialize)]
pub struct JoinResponse {
    pub code: i32,
}

pub struct Room {
    members: Vec<String>,
}

#[component]
impl Room {
    /// `&mut self`, typed payload, typed response.
    pub fn join(&mut self, _s: &Session, req: JoinRequest) -> Result<JoinResponse> {
        self.members.push(req.name);
        Ok(JoinResponse { code: 0 })
    }

    /// `&self`, no payload, `Result<()>`.
    pub fn ping(&self, _s: &Session) -> Result<()> {
        Ok(())
    }

    /// Raw `Bytes` in and out.
    pub fn echo(&self, _s: &Session, data: Bytes) -> Result<Bytes> {
        Ok(data)
    }

    /// Raw `Vec<u8>` in and out, spelled with full paths.
    pub fn reverse(
        &self,
        _s: &nano::Session,
        mut data: std::vec::Vec<u8>,
    ) -> nano::Result<Vec<u8>> {
        data.reverse();
        Ok(data)
    }

    /// `async fn`; `std::result::Result` with a custom error convertible into `nano::Error`.
    pub async fn count(&mut self, _s: &Session) -> std::result::Result<usize, std::fmt::Error> {
        Ok(self.members.len())
    }

    /// `pub(crate)` methods are handlers too.
    pub(crate) fn leave(&mut self, _s: &Session, name: String) -> Result<()> {
        self.members.retain(|m| *m != name);
        Ok(())
    }

    /// Not a handler: skipped.
    #[handler(skip)]
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Not a handler: no receiver.
    pub fn new() -> Self {
        Room {
            members: Vec::new(),
        }
    }

    /// Not a handler: private.
    #[allow(dead_code)]
    fn helper(&self) {}
}

fn main() {
    let routes: Vec<_> = Room::HANDLERS.iter().map(|h| h.route).collect();
    assert_eq!(
        routes,
        [
            "Room.Join",
            "Room.Ping",
            "Room.Echo",
            "Room.Reverse",
            "Room.Count",
            "Room.Leave"
        ]
    );
    assert_eq!(Room::NAME, "Room");

    let info = |name: &str| *Room::HANDLERS.iter().find(|h| h.name == name).unwrap();
    assert!(info("Join").has_payload && !info("Join").raw_payload && !info("Join").is_async);
    assert!(!info("Ping").has_payload);
    assert!(info("Echo").raw_payload && info("Reverse").raw_payload);
    assert!(info("Count").is_async);

    // Decoding runs off the scheduler and reports bad payloads as NANO-400.
    assert!(Room::decode(0, Bytes::from_static(br#"{"name":"a"}"#)).is_ok());
    let err = Room::decode(0, Bytes::from_static(b"not json")).unwrap_err();
    assert_eq!(err.code(), "NANO-400");
    assert!(Room::decode(2, Bytes::from_static(b"\xff")).is_ok());
    assert_eq!(
        Room::decode(99, Bytes::new()).unwrap_err().code(),
        "NANO-404"
    );

    let room = Room::new();
    assert!(room.members().is_empty());
}
