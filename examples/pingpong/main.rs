//! The pingpong server: go-nano's benchmark component over TCP and WebSocket, protobuf
//! serializer.
//!
//! ```text
//! cargo run --release --example pingpong -- --tcp 127.0.0.1:13250 --ws 127.0.0.1:13251 --dict
//! ```

use std::time::Duration;

use clap::Parser;
use nano::prelude::*;

#[path = "../common/mod.rs"]
mod common;
mod handler;

use handler::TestHandler;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(about = "nano pingpong server (go-nano's benchmark component)")]
struct Args {
    /// TCP listen address.
    #[arg(long, default_value = "127.0.0.1:13250")]
    tcp: String,
    /// WebSocket listen address.
    #[arg(long, default_value = "127.0.0.1:13251")]
    ws: String,
    /// WebSocket path.
    #[arg(long, default_value = "/nano")]
    ws_path: String,
    /// Heartbeat interval in seconds (0 disables).
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Offer route compression (the handshake `dict`).
    #[arg(long)]
    dict: bool,
}

fn main() -> std::io::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let app = nano::app()
        .serializer(Protobuf)
        .component(TestHandler)
        .push_routes(["pong"])
        .route_compression(args.dict)
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .tcp(args.tcp)
        .websocket(args.ws, &args.ws_path);
    common::serve(app, false, &args.ws_path)
}
