//! The chat example's component over real sockets: WebSocket and TCP clients in one room.

use std::sync::Arc;
use std::time::Duration;

use nano::{Client, ClientError, Transport};
use serde_json::{json, Value};
use tokio::time::timeout;

#[path = "../examples/chat/room.rs"]
mod room;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn chat_room_like_go_nano() {
    let stats = Arc::new(room::Stats::default());
    let server = nano::app()
        .component(room::Room::new(stats.clone(), Duration::from_secs(60)))
        .pipeline(|p| room::Room::count_traffic(&stats, p))
        .websocket("127.0.0.1:0", "/nano")
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let ws_url = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());
    let a: Client = Client::connect_ws(&ws_url).await.unwrap();
    let mut a_new = a.on("onNewUser");
    let mut a_msgs = a.on("onMessage");

    // Refused before joining.
    let refused = a
        .request::<_, Value>("room.message", &json!({"name": "a", "content": "x"}))
        .await;
    assert!(matches!(refused, Err(ClientError::Server(e)) if e.code() == "NANO-403"));

    let r: Value = a.request("room.join", &json!({})).await.unwrap();
    assert_eq!(r, json!({"code": 0, "result": "success"}));

    let b: Client = Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let mut b_members = b.on("onMembers");
    let mut b_msgs = b.on("onMessage");
    let r: Value = b
        .request_raw("room.join", b"")
        .await
        .map(|p| serde_json::from_slice(&p).unwrap())
        .unwrap();
    assert_eq!(r["code"], 0);
    let members: Value =
        serde_json::from_slice(&timeout(T, b_members.recv()).await.unwrap().unwrap()).unwrap();
    assert_eq!(
        members["members"].as_array().unwrap().len(),
        1,
        "b sees a as the existing member"
    );
    let new_user: Value =
        serde_json::from_slice(&timeout(T, a_new.recv()).await.unwrap().unwrap()).unwrap();
    assert!(new_user["content"]
        .as_str()
        .unwrap()
        .starts_with("New user: "));

    a.notify("room.message", &json!({"name": "ann", "content": "hello"}))
        .await
        .unwrap();
    for rx in [&mut a_msgs, &mut b_msgs] {
        let m: Value =
            serde_json::from_slice(&timeout(T, rx.recv()).await.unwrap().unwrap()).unwrap();
        assert_eq!(
            m,
            json!({"name": "ann", "content": "hello"}),
            "the sender included"
        );
    }
    // b leaves: a is told, and b is no longer a member.
    let mut a_left = a.on("onLeave");
    b.close().await;
    let left: Value =
        serde_json::from_slice(&timeout(T, a_left.recv()).await.unwrap().unwrap()).unwrap();
    assert!(left["content"].as_str().unwrap().starts_with("User left: "));
    assert!(stats.inbound.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    assert!(stats.outbound.load(std::sync::atomic::Ordering::Relaxed) >= 6);
    timeout(T, server.shutdown())
        .await
        .expect("shutdown within the bound");
}
