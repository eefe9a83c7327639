//! A Rust bot for the chat example over TCP: joins the room, prints what it hears, and exits
//! once it has seen a message whose content is `--expect` (used by the browser tests to prove a
//! TCP client shares the room with browser pages).
//!
//! ```text
//! cargo run --example chat &            # the server
//! cargo run --example chat_bot -- --expect hello
//! ```

use std::time::Duration;

use clap::Parser;
use nano::Client;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// The chat server's TCP address.
    #[arg(long, default_value = "127.0.0.1:3251")]
    tcp: String,
    /// Exit 0 once a message with this content arrives.
    #[arg(long)]
    expect: Option<String>,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client: Client = Client::connect_tcp(args.tcp.as_str()).await?;
    let mut messages = client.on("onMessage");
    let joined: Value = client.request("room.join", &json!({})).await?;
    println!("joined {joined}");
    client
        .notify(
            "room.message",
            &json!({"name": "bot", "content": "bot is here"}),
        )
        .await?;
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = messages.recv() => {
                let Some(m) = m else { return Err("disconnected".into()) };
                let v: Value = serde_json::from_slice(&m)?;
                println!("message {}: {}", v["name"], v["content"]);
                if args.expect.as_deref().is_some_and(|e| v["content"] == e) {
                    println!("got expected message");
                    return Ok(());
                }
            }
            _ = &mut deadline => return Err("timed out waiting for the message".into()),
        }
    }
}
