//! Every example's flags, on the built example binaries: each flag has its effect (addresses
//! are listened on, the WebSocket path is the one upgraded, the heartbeat and the dictionary
//! are announced in the handshake, the stats period shows in the log), and each server exits
//! cleanly on SIGTERM. Ports are always free ones, never the defaults.
//!
//! Runs the example binaries under `target/<profile>/examples/`: `cargo test` builds them;
//! `cargo test --test examples` alone does not, so run `cargo build --examples` first.

#![cfg(unix)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nano::{Client, ClientEvent, Protobuf, Transport};
use serde_json::{json, Value};
use tokio::time::timeout;

mod common;

#[path = "../examples/chat/room.rs"]
#[allow(dead_code)]
mod room;

use common::process::{free_port, Example};
use common::{body, http_exchange, status, T};

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// Status of a WebSocket upgrade attempt on `url`.
async fn ws_status(url: &str) -> u16 {
    match timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("the upgrade is answered within the bound")
    {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{url}: no HTTP answer: {e}"),
    }
}

fn at(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[tokio::test]
async fn pingpong_flags() {
    let (tcp_port, ws_port) = (free_port(), free_port());
    let mut server = Example::spawn(
        "pingpong",
        &[
            "--tcp",
            &at(tcp_port),
            "--ws",
            &at(ws_port),
            "--ws-path",
            "/pp",
            "--heartbeat",
            "7",
            "--dict",
        ],
    );
    let tcp = server.tcp_line().await;
    assert_eq!(tcp, at(tcp_port).parse::<SocketAddr>().unwrap(), "--tcp");
    let ws = server.line_after("ws ").await;
    assert_eq!(ws, format!("ws://{}/pp", at(ws_port)), "--ws and --ws-path");

    let c: Client<Protobuf> = Client::connect_tcp(tcp).await.unwrap();
    let hs = c.handshake();
    assert_eq!(hs.heartbeat, Some(Duration::from_secs(7)), "--heartbeat");
    assert!(
        hs.dict
            .as_ref()
            .is_some_and(|d| d.code("TestHandler.Echo").is_some()),
        "--dict offers the dictionary"
    );
    assert_eq!(hs.serializer.as_deref(), Some("protobuf"));
    let w: Client<Protobuf> = Client::connect_ws(&ws).await.unwrap();
    assert_eq!(w.handshake().heartbeat, Some(Duration::from_secs(7)));
    assert_eq!(
        ws_status(&format!("ws://{}/nano", at(ws_port))).await,
        404,
        "only --ws-path upgrades"
    );
    server.terminate_cleanly().await;
    for client in [&c, &w] {
        let ev = timeout(T, client.closed()).await.unwrap();
        assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
    }

    // Without --dict and with --heartbeat 0: neither is announced; the path is /nano.
    let mut server = Example::spawn(
        "pingpong",
        &[
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--heartbeat",
            "0",
        ],
    );
    let tcp = server.tcp_line().await;
    let ws = server.line_after("ws ").await;
    assert!(ws.ends_with("/nano"), "{ws}");
    let c: Client<Protobuf> = Client::connect_tcp(tcp).await.unwrap();
    assert_eq!(c.handshake().heartbeat, None, "--heartbeat 0 disables it");
    assert!(c.handshake().dict.is_none(), "no dictionary without --dict");
    Client::<Protobuf>::connect_ws(&ws).await.unwrap();
    server.terminate_cleanly().await;
}

#[tokio::test]
async fn chat_flags() {
    let (ws_port, tcp_port) = (free_port(), free_port());
    let mut server = Example::spawn(
        "chat",
        &[
            "--addr",
            &at(ws_port),
            "--tcp",
            &at(tcp_port),
            "--ws-path",
            "/chatws",
            "--heartbeat",
            "5",
            "--stats",
            "1",
        ],
    );
    let page = server.line_after("open ").await;
    assert_eq!(page, format!("http://{}/web/", at(ws_port)), "--addr");
    let tcp = server.tcp_line().await;
    assert_eq!(tcp, at(tcp_port).parse::<SocketAddr>().unwrap(), "--tcp");
    let ws = server.line_after("ws ").await;
    assert_eq!(ws, format!("ws://{}/chatws", at(ws_port)), "--ws-path");

    let http = at(ws_port).parse().unwrap();
    let out = http_exchange(http, &get("/web/")).await;
    assert_eq!(status(&out), 200, "the page on --addr: {out}");
    assert!(body(&out).contains("<"), "{out}");

    let c: Client = Client::connect_tcp(tcp).await.unwrap();
    assert_eq!(
        c.handshake().heartbeat,
        Some(Duration::from_secs(5)),
        "--heartbeat"
    );
    let w: Client = Client::connect_ws(&ws).await.unwrap();
    let joined: Value = w.request("room.join", &json!({})).await.unwrap();
    assert_eq!(joined["code"], 0);
    assert_eq!(
        ws_status(&format!("ws://{}/nano", at(ws_port))).await,
        404,
        "only --ws-path upgrades"
    );
    // --stats 1: a stats line within a few seconds (the default period is 60 s).
    let line = server
        .stderr_line_containing("room stats", Duration::from_secs(5))
        .await;
    assert!(line.contains("inbound"), "{line}");
    server.terminate_cleanly().await;
    let ev = timeout(T, c.closed()).await.unwrap();
    assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
}

#[tokio::test]
async fn tadpole_flags() {
    let port = free_port();
    let mut server = Example::spawn("tadpole", &["--addr", &at(port), "--heartbeat", "9"]);
    let page = server.line_after("open ").await;
    assert_eq!(page, format!("http://{}/web/", at(port)), "--addr");
    let ws = server.line_after("ws ").await;
    assert_eq!(ws, format!("ws://{}/nano", at(port)));
    let out = http_exchange(at(port).parse().unwrap(), &get("/web/tadpole.js")).await;
    assert_eq!(status(&out), 200, "{out}");
    let c: Client = Client::connect_ws(&ws).await.unwrap();
    assert_eq!(
        c.handshake().heartbeat,
        Some(Duration::from_secs(9)),
        "--heartbeat"
    );
    server.terminate_cleanly().await;
    let ev = timeout(T, c.closed()).await.unwrap();
    assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
}

/// The chat room in-process, for the bot.
async fn chat_server() -> nano::Server<nano::Json> {
    let stats = Arc::new(room::Stats::default());
    nano::app()
        .component(room::Room::new(stats, Duration::from_secs(60)))
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn chat_bot_flags() {
    let server = chat_server().await;
    let tcp = server.addr(Transport::Tcp).unwrap().to_string();

    // --tcp and --expect: the bot joins there, and exits 0 on the expected message.
    let mut bot = Example::spawn(
        "chat_bot",
        &["--tcp", &tcp, "--expect", "hello bot", "--timeout", "20"],
    );
    let joined = bot.line_after("joined ").await;
    assert!(joined.contains("success"), "{joined}");
    let me: Client = Client::connect_tcp(tcp.as_str()).await.unwrap();
    let _: Value = me.request("room.join", &json!({})).await.unwrap();
    me.notify("room.message", &json!({"name": "t", "content": "not yet"}))
        .await
        .unwrap();
    me.notify(
        "room.message",
        &json!({"name": "t", "content": "hello bot"}),
    )
    .await
    .unwrap();
    let status = bot.exit_within(T).await;
    assert!(status.success(), "the bot exits 0 on --expect: {status:?}");

    // --timeout 1: without the expected message, it gives up (non-zero) after about 1 s.
    let started = std::time::Instant::now();
    let mut bot = Example::spawn(
        "chat_bot",
        &["--tcp", &tcp, "--expect", "never", "--timeout", "1"],
    );
    bot.line_after("joined ").await;
    let status = bot.exit_within(T).await;
    let took = started.elapsed();
    assert!(!status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "--timeout 1 gave up after {took:?}"
    );
    timeout(T, server.shutdown())
        .await
        .expect("shutdown within the bound");
}
