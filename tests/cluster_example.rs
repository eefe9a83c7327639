//! The cluster example (go-nano's distributed chat demo) as real processes on 127.0.0.1: a
//! master, a chat node and two gates; clients log in over WebSocket through either gate.

use nano::{Client, Json};
use serde_json::{json, Value};
use tokio::time::timeout;

mod common;
use common::process::Example;
use common::T;

fn cluster(args: &[&str]) -> Example {
    Example::spawn("cluster", args)
}

async fn gate(master: &str, id: &str) -> (Example, String) {
    let mut gate = cluster(&[
        "gate",
        "--master",
        master,
        "--listen",
        "127.0.0.1:0",
        "--gate-address",
        "127.0.0.1:0",
        "--node-id",
        id,
        "--lease-ttl",
        "2",
    ]);
    gate.line_after("cluster ").await;
    let _page = gate.line_after("open ").await;
    let ws = gate.line_after("ws ").await;
    // The gate knows the chat node and the master before clients come.
    gate.stderr_line_containing("services=[\"RoomService\"]", T)
        .await;
    (gate, ws)
}

/// A logged-in client and what it was pushed.
struct User {
    client: Client<Json>,
    pushes: nano::AnyPushStream,
    /// Pushes received while waiting for another route (pushes from different nodes may
    /// arrive in either order).
    early: Vec<(String, Value)>,
}

impl User {
    async fn login(ws: &str, nickname: &str) -> User {
        let client = timeout(T, Client::<Json>::connect_ws(ws))
            .await
            .expect("connect in time")
            .expect("connect");
        let pushes = client.on_any();
        let login: Value = client
            .request("BindService.Login", &json!({ "nickname": nickname }))
            .await
            .expect("login answered");
        assert_eq!(login["code"], 0, "{login}");
        User {
            client,
            pushes,
            early: Vec::new(),
        }
    }

    /// The next push on `route`, decoded (pushes on other routes are kept for later).
    async fn next(&mut self, route: &str) -> Value {
        if let Some(i) = self.early.iter().position(|(r, _)| r == route) {
            return self.early.remove(i).1;
        }
        let wait = async {
            loop {
                let (r, payload) = self.pushes.recv().await.expect("connection open");
                let value = serde_json::from_slice::<Value>(&payload).expect("json push");
                if r == route {
                    return value;
                }
                self.early.push((r, value));
            }
        };
        timeout(T, wait)
            .await
            .unwrap_or_else(|_| panic!("no {route} push within {T:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_nanos_cluster_chat_runs_across_a_master_a_chat_node_and_two_gates() {
    let mut master = cluster(&[
        "master",
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "master",
        "--lease-ttl",
        "2",
    ]);
    let master_addr = master.line_after("cluster ").await;
    let mut chat = cluster(&[
        "chat",
        "--master",
        &master_addr,
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "chat-1",
        "--lease-ttl",
        "2",
    ]);
    chat.line_after("cluster ").await;
    let (mut gate1, ws1) = gate(&master_addr, "gate-1").await;
    let (_gate2, ws2) = gate(&master_addr, "gate-2").await;

    // Alice logs in on gate 1: the master tells her who is online (nobody yet).
    let mut alice = User::login(&ws1, "alice").await;
    assert_eq!(alice.next("onMembers").await, json!({ "members": "" }));
    // Bob logs in on gate 2: he hears of Alice, Alice hears of him from the chat node.
    let mut bob = User::login(&ws2, "bob").await;
    assert_eq!(bob.next("onMembers").await, json!({ "members": "alice" }));
    assert_eq!(
        alice.next("onNewUser").await,
        json!({ "content": "User user join: bob" })
    );

    // Bob speaks: both get the line from the chat node, Bob his balance from the master.
    bob.client
        .notify(
            "RoomService.SyncMessage",
            &json!({ "name": "bob", "content": "hi alice" }),
        )
        .await
        .unwrap();
    let line = json!({ "name": "bob", "content": "hi alice" });
    assert_eq!(alice.next("onMessage").await, line);
    assert_eq!(bob.next("onMessage").await, line);
    assert_eq!(
        bob.next("onBalance").await,
        json!({ "currentBalance": 999 })
    );

    // The master's service and the room's join are for nodes only.
    for route in [
        "TopicService.NewUser",
        "TopicService.Stats",
        "RoomService.JoinRoom",
    ] {
        let e = bob
            .client
            .request::<_, Value>(route, &json!({ "nickname": "mallory", "uid": 1 }))
            .await
            .unwrap_err();
        assert_eq!(
            e.server_error().map(|e| e.code().to_owned()).as_deref(),
            Some("NANO-404"),
            "{route}: {e}"
        );
    }

    // Bob leaves: the master and the chat node run their session-closed callbacks.
    bob.client.close().await;
    master
        .stderr_line_containing("user left uid=2 nickname=bob", T)
        .await;
    chat.stderr_line_containing("user session disconnected uid=Some(\"2\")", T)
        .await;

    // Gate 1 dies with Alice connected: once its lease lapses, her session closes everywhere.
    gate1.kill().await;
    master
        .stderr_line_containing("user left uid=1 nickname=alice", 3 * T)
        .await;
    chat.stderr_line_containing("user session disconnected uid=Some(\"1\")", 3 * T)
        .await;

    // A second master on the same address: a clear error and a non-zero exit, not a hang.
    let mut again = cluster(&["master", "--listen", &master_addr, "--node-id", "master-2"]);
    let status = again.exit_within(T).await;
    assert!(!status.success());
    assert!(
        again.stderr().contains(&master_addr),
        "the error names the address: {}",
        again.stderr()
    );
}
