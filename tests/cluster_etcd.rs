//! The cluster's core cases with discovery by a real etcd (feature `etcd`; the etcd at
//! `NANO_ETCD_ENDPOINT`, started by `nano-cluster/tests/etcd.sh`): forwarding through a gate,
//! errors, a broadcast over two gates as two node messages, a gate's clients closing on the
//! backend, and a backend stopping and coming back.

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::T;
mod cluster_support;
use cluster_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_forward_to_backends_found_in_etcd() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let etcd = etcd("forward");
    let chat = backend("chat-1", &etcd, &closed_tx).await;
    let gate1 = gate("gate-1", &etcd).await;
    let gate2 = gate("gate-2", &etcd).await;

    let alice = client(&gate1).await;
    let bob = client(&gate2).await;
    let mut alice_hears = alice.on("onSaid");
    let mut bob_hears = bob.on("onSaid");
    assert_eq!(
        alice
            .request::<_, String>("Room.Join", &"alice")
            .await
            .unwrap(),
        "chat-1"
    );
    let _: String = bob.request("Room.Join", &"bob").await.unwrap();
    let e = alice
        .request::<_, ()>("Room.Fail", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-400");
    let e = alice
        .request::<_, ()>("Nobody.Home", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-404");

    // One broadcast to members on two gates: one push frame per gate.
    let sent = |gate: &str| chat.node.link_stats(gate).expect("linked").frames_sent;
    let before = [sent("gate-1"), sent("gate-2")];
    bob.notify("Room.Say", &"hi").await.unwrap();
    for (c, hears) in [(&alice, &mut alice_hears), (&bob, &mut bob_hears)] {
        let pushed = timeout(T, hears.recv()).await.unwrap().unwrap();
        assert_eq!(c.decode::<Said>(&pushed).unwrap().from, "bob");
    }
    assert_eq!(
        [sent("gate-1") - before[0], sent("gate-2") - before[1]],
        [1, 1]
    );

    // Gate 2 stops: the backend runs Bob's closed callback.
    gate2.server.shutdown().await;
    let (_, _, uid) = next_closed(&mut closed).await;
    assert_eq!(uid.as_deref(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_leaves_etcd_is_replaced_by_another() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let etcd = etcd("replace");
    let chat1 = backend("chat-1", &etcd, &closed_tx).await;
    let gate = gate("gate-1", &etcd).await;
    let c = client(&gate).await;
    let first: String = c.request("Room.Join", &"carl").await.unwrap();
    assert_eq!(first, "chat-1");

    // chat-1 leaves (deregisters from etcd); chat-2 joins: the session moves on.
    let chat2 = backend("chat-2", &etcd, &closed_tx).await;
    assert!(gate.node.wait_for_members("Room", 2, T).await);
    chat1.server.shutdown().await;
    assert!(
        gate.node
            .wait_until(T, |m| !m.iter().any(|m| m.id.as_str() == "chat-1"))
            .await,
        "the gate saw chat-1 leave"
    );
    let (node, _, uid): (String, u64, Option<String>) =
        c.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!((node.as_str(), uid.as_deref()), ("chat-2", Some("carl")));
    drop(chat2);
}
