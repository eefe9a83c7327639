//! The pingpong example as a real process: SIGTERM shuts it down gracefully, kicking clients.
//!
//! Runs the example binaries under `target/<profile>/examples/`: `cargo test` builds them;
//! `cargo test --test signal` alone does not, so run `cargo build --examples` first.

#![cfg(unix)]

use nano::{Client, ClientEvent, Protobuf};
use tokio::time::timeout;

mod common;

use common::process::Example;
use common::T;

#[tokio::test]
async fn sigterm_kicks_clients_and_exits_cleanly() {
    let mut server = Example::spawn("pingpong", &["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"]);
    let addr = server.tcp_line().await;
    let client: Client<Protobuf> = timeout(T, Client::connect_tcp(addr))
        .await
        .expect("connected within the bound")
        .unwrap();
    server.sigterm();
    let ev = timeout(T, client.closed())
        .await
        .expect("kicked within the bound");
    assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
    let status = server.exit_within(T).await;
    assert!(status.success(), "{status:?}");
}
