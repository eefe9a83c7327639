//! Tadpole: a real-time browser game. Every visitor is a tadpole that follows the mouse (or the
//! arrow keys) and sees everyone else swim.
//!
//! ```text
//! cargo run --example tadpole     # then open http://127.0.0.1:3260/web/ in a few tabs
//! ```
//!
//! Component `World`: `World.Enter` (request → `{"id"}`), `World.Update` (a raw payload relayed
//! verbatim to everyone as push `update`: the server never parses the hot path),
//! `World.Message` (chat, pushed as `message` with the sender's id), and push `leave` when a
//! player disconnects. Sessions resume (`--resume 30`): a page whose socket drops swims on
//! as the same tadpole when it is back within 30 s.

use std::time::Duration;

use clap::Parser;
use nano::prelude::*;
use serde_json::{json, Value};

#[path = "../common/mod.rs"]
mod common;

#[derive(Deserialize)]
struct Say {
    message: String,
}

struct World {
    players: Group,
}

#[component]
impl World {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|world, s: &Session| {
            // The session has already left the group; tell the others.
            let _ = world.players.broadcast("leave", &json!({ "id": s.id() }));
        });
    }

    /// Joins the world; answers the player's id.
    pub fn enter(&mut self, s: &Session) -> Result<Value> {
        if !self.players.contains_session(s) {
            self.players.add(s)?;
        }
        Ok(json!({ "id": s.id() }))
    }

    /// Relays a position update to everyone, untouched.
    pub fn update(&mut self, s: &Session, update: Bytes) -> Result<()> {
        if !self.players.contains_session(s) {
            return Err(Error::forbidden("enter the world first"));
        }
        self.players.broadcast_raw("update", &update)
    }

    /// Chat: pushed to everyone as `message` with the sender's id.
    pub fn message(&mut self, s: &Session, say: Say) -> Result<()> {
        if !self.players.contains_session(s) {
            return Err(Error::forbidden("enter the world first"));
        }
        let text: String = say.message.chars().take(200).collect();
        self.players
            .broadcast("message", &json!({ "id": s.id(), "message": text }))
    }
}

#[derive(Parser, Debug)]
#[command(about = "nano tadpole game (WebSocket + page)")]
struct Args {
    /// WebSocket (and page) listen address.
    #[arg(long, default_value = "127.0.0.1:3260")]
    addr: String,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Seconds a session whose connection dropped waits for its page to come back and resume
    /// it (0: no resume).
    #[arg(long, default_value_t = 30)]
    resume: u64,
    #[command(flatten)]
    admin: common::AdminArgs,
}

static PAGES: &[(&str, &[u8])] = &[
    ("/web/index.html", include_bytes!("web/index.html")),
    ("/web/tadpole.js", include_bytes!("web/tadpole.js")),
    ("/web/nano.js", include_bytes!("../web/nano.js")),
];

fn main() -> std::io::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let mut app = nano::app()
        .component(World {
            players: Group::new("world"),
        })
        .push_routes(["update", "message", "leave"])
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .http_embedded(PAGES)
        .websocket(args.addr, "/nano");
    if args.resume > 0 {
        app = app.resume(Duration::from_secs(args.resume));
    }
    common::serve(args.admin.apply(app), true, "/nano")
}
