//! The component of go-nano's own benchmark: `TestHandler.Ping` (notify → push `pong`) and
//! `TestHandler.Echo` (request → response), with protobuf messages.

use nano::prelude::*;

/// `message Ping { string content = 1; int64 sequence = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Any text; echoed three times.
    #[prost(string, tag = "1")]
    pub content: String,
    /// Echoed plus one.
    #[prost(int64, tag = "2")]
    pub sequence: i64,
}

/// `message Pong { string content = 1; int64 sequence = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    /// The ping's content three times.
    #[prost(string, tag = "1")]
    pub content: String,
    /// The ping's sequence plus one.
    #[prost(int64, tag = "2")]
    pub sequence: i64,
}

impl Pong {
    /// The reply to `ping`.
    pub fn reply_to(ping: &Ping) -> Pong {
        Pong {
            content: ping.content.repeat(3),
            sequence: ping.sequence.wrapping_add(1),
        }
    }
}

/// go-nano's benchmark component.
pub struct TestHandler;

#[component]
impl TestHandler {
    /// Notify `TestHandler.Ping`: answers with a `pong` push.
    pub fn ping(&mut self, s: &Session<Protobuf>, ping: Ping) -> Result<()> {
        s.push("pong", &Pong::reply_to(&ping))
    }

    /// Request `TestHandler.Echo`: answers with a `Pong` response.
    pub fn echo(&mut self, _s: &Session<Protobuf>, ping: Ping) -> Result<Pong> {
        Ok(Pong::reply_to(&ping))
    }
}
