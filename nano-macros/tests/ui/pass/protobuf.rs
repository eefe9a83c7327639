//! A protobuf component: the serializer comes from `Session<Protobuf>`.

use nano::prelude::*;
use nano::Component;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Move {
    #[prost(int32, tag = "1")]
    pub x: i32,
    #[prost(int32, tag = "2")]
    pub y: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    #[prost(int32, tag = "1")]
    pub x: i32,
    #[prost(int32, tag = "2")]
    pub y: i32,
}

/// Handlers may name the session type through an alias.
type PbSession = Session<Protobuf>;

#[derive(Default)]
pub struct World {
    at: (i32, i32),
}

#[component]
impl World {
    pub fn r#move(&mut self, _s: &Session<Protobuf>, m: Move) -> Result<Position> {
        self.at = (self.at.0 + m.x, self.at.1 + m.y);
        Ok(Position {
            x: self.at.0,
            y: self.at.1,
        })
    }

    pub fn reset(&mut self, _s: &PbSession) -> Result<()> {
        self.at = (0, 0);
        Ok(())
    }

    pub fn snapshot(&self, _s: &PbSession, raw: Bytes) -> Result<Bytes> {
        Ok(raw)
    }
}

/// A component without handlers picks its serializer explicitly (and may name the runtime
/// crate explicitly, as a path or a string).
pub struct Ticker;

#[component(serializer = nano::Protobuf, crate = ::nano)]
impl Ticker {}

/// With an explicit serializer, every handler's session type is checked against it.
pub struct Chat;

#[component(crate = "nano", serializer = Protobuf)]
impl Chat {
    pub fn say(&mut self, _s: &Session<Protobuf>, _text: String) -> Result<()> {
        Ok(())
    }
}

fn check<C: Component<Serializer = Protobuf>>() {}

fn main() {
    check::<World>();
    check::<Ticker>();
    check::<Chat>();
    let routes: Vec<_> = World::HANDLERS.iter().map(|h| h.route).collect();
    assert_eq!(routes, ["World.Move", "World.Reset", "World.Snapshot"]);

    let bytes = prost::Message::encode_to_vec(&Move { x: 1, y: 2 });
    assert!(World::decode(0, bytes.into()).is_ok());
    assert!(Ticker::HANDLERS.is_empty());
}
