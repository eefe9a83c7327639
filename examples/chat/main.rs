//! A chat room: a drop-in replacement for go-nano's chat demo.
//!
//! ```text
//! cargo run --example chat        # then open http://127.0.0.1:3250/web/ in two tabs
//! ```
//!
//! - WebSocket on `127.0.0.1:3250` path `/nano` (the page is served on the same port at
//!   `/web/`), and TCP on `127.0.0.1:3251` in the same room; JSON serializer.
//! - Component `room` with lowercase handlers, as go-nano's `WithName("room")` +
//!   `WithNameFunc(strings.ToLower)`: `room.join` (request) and `room.message` (notify).
//! - Members leave the room when they disconnect (a session-closed callback tells the others
//!   with an `onLeave` push, which go-nano clients ignore); a traffic-stats
//!   pipeline counts inbound and outbound messages, and a timer logs the room size.
//! - Sessions resume (`--resume 30`): a page whose socket drops reconnects within 30 s to the
//!   same session, still in the room, and gets every message sent meanwhile; the others see
//!   no leave and no join.
//! - The push routes are in the route dictionary, but a client gets them compressed only after
//!   it sent a route as one of the handshake's `dict` codes itself: clients that ignore the
//!   dictionary (go-nano's demo client, string-route-only clients, pypomelo, which compresses
//!   with pomelo 2.x's `routeToCode` but cannot decode codes) get every push with its string
//!   route. `tests/python/run.sh` runs pypomelo against this example.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

#[path = "../common/mod.rs"]
mod common;
mod room;

use room::{Room, Stats};

#[derive(Parser, Debug)]
#[command(about = "nano chat room (WebSocket + page + TCP)")]
struct Args {
    /// WebSocket (and page) listen address.
    #[arg(long, default_value = "127.0.0.1:3250")]
    addr: String,
    /// TCP listen address.
    #[arg(long, default_value = "127.0.0.1:3251")]
    tcp: String,
    /// WebSocket path (pomelo's stock client connects to `/`).
    #[arg(long, default_value = "/nano")]
    ws_path: String,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Seconds a session whose connection dropped waits for its page to come back and resume
    /// it (0: no resume).
    #[arg(long, default_value_t = 30)]
    resume: u64,
    /// Seconds between room-stats log lines.
    #[arg(long, default_value_t = 60)]
    stats: u64,
    #[command(flatten)]
    admin: common::AdminArgs,
    #[command(flatten)]
    api: common::ApiArgs,
}

static PAGES: &[(&str, &[u8])] = &[
    ("/web/index.html", include_bytes!("web/index.html")),
    ("/web/chat.js", include_bytes!("web/chat.js")),
    // The typed client stubs chat.js is written against (`--export-api examples/chat/web`).
    ("/web/api.js", include_bytes!("web/api.js")),
    ("/web/nano.js", include_bytes!("../web/nano.js")),
];

fn main() -> std::io::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let stats = Arc::new(Stats::default());
    let mut app = nano::app()
        .component(Room::new(
            stats.clone(),
            Duration::from_secs(args.stats.max(1)),
        ))
        .pipeline(|p| Room::count_traffic(&stats, p))
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .http_embedded(PAGES)
        .websocket(args.addr, &args.ws_path)
        .tcp(args.tcp);
    if args.resume > 0 {
        app = app.resume(Duration::from_secs(args.resume));
    }
    let Some(app) = args.api.export(app)? else {
        return Ok(());
    };
    common::serve(args.admin.apply(app), true, &args.ws_path)
}
