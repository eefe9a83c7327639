//! A cluster in one process: a master, backends and gates, each a real nano server with its
//! cluster node on 127.0.0.1 ephemeral ports, linked over gRPC; real clients on TCP talk to the
//! gates only. Forwarded requests, notifies, pushes, kicks, binds, errors, deadlines, sticky
//! routing, session ids across gates, and session-closed callbacks on the backends.

use std::time::Duration;

use nano::client::ConnectionEvent;
use nano::ClientEvent;
use nano_cluster::node::MultiLogin;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::cut::Cutter;
use common::T;
mod cluster_support;
use cluster_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_notifies_pushes_and_errors_travel_through_the_gate() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let master = master().await;
    let chat = backend("chat-1", &master, &closed_tx).await;
    let gate = gate("gate-1", &master).await;

    let c = client(&gate).await;
    let mut joined = c.on("onJoined");
    let mut said = c.on("onSaid");
    let node: String = c.request("Room.Join", &"alice").await.unwrap();
    assert_eq!(node, "chat-1");
    let pushed = timeout(T, joined.recv()).await.unwrap().unwrap();
    assert_eq!(c.decode::<String>(&pushed).unwrap(), "chat-1");

    // The backend's session carries the gate's id and the uid bound on the backend.
    let (node, id, uid): (String, u64, Option<String>) =
        c.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!((node.as_str(), uid.as_deref()), ("chat-1", Some("alice")));
    assert_eq!(gate.node.forwarded_sessions(), 1);
    assert_eq!(chat.node.remote_sessions(), 1);
    assert!(id > u64::from(u32::MAX), "a node-prefixed id: {id}");
    assert!(id < 1 << 53, "exact in JavaScript: {id}");

    // Data the gate shares with the session travels with its next message, changes included.
    let team: Option<String> = c.request("Room.Team", &json!({})).await.unwrap();
    assert_eq!(team, None);
    c.request::<_, ()>("Lobby.Team", &"red").await.unwrap();
    let team: Option<String> = c.request("Room.Team", &json!({})).await.unwrap();
    assert_eq!(team.as_deref(), Some("red"));
    c.request::<_, ()>("Lobby.Team", &"blue").await.unwrap();
    let team: Option<String> = c.request("Room.Team", &json!({})).await.unwrap();
    assert_eq!(team.as_deref(), Some("blue"));

    // A notify runs on the backend; its group broadcast reaches the client through the gate.
    c.notify("Room.Say", &"hello").await.unwrap();
    let pushed = timeout(T, said.recv()).await.unwrap().unwrap();
    assert_eq!(
        c.decode::<Said>(&pushed).unwrap(),
        Said {
            from: "alice".into(),
            node: "chat-1".into(),
            text: "hello".into()
        }
    );

    // A handler's error reaches the client as a local one would.
    let e = c
        .request::<_, ()>("Room.Fail", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-400");
    assert_eq!(e.server_error().unwrap().message(), "no such room");
    // A method the backend does not have: its NANO-404; a service nobody hosts: the gate's.
    let e = c
        .request::<_, ()>("Room.Nothing", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-404");
    let e = c
        .request::<_, ()>("Nobody.Home", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-404");

    // The client leaves: the backend runs its session-closed callback for it, once.
    c.close().await;
    let (node, closed_id, uid) = next_closed(&mut closed).await;
    assert_eq!(
        (node.as_str(), closed_id, uid.as_deref()),
        ("chat-1", id, Some("alice"))
    );
    assert!(closed.try_recv().is_err(), "closed callbacks ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_kicks_through_the_gate_and_an_unanswered_request_hits_the_deadline() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat = backend("chat-1", &master, &closed_tx).await;
    let gate = gate("gate-1", &master).await;

    let c = client(&gate).await;
    let _: String = c.request("Room.Join", &"bob").await.unwrap();
    // The gate answers NANO-504 at its forward deadline (300 ms), whatever the backend does.
    let started = tokio::time::Instant::now();
    let e = c
        .request::<_, ()>("Room.Hang", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "NANO-504");
    assert!(started.elapsed() < T);

    // The backend kicks: the client gets the Kick with its reason, the backend its callback.
    let _ = c.request::<_, ()>("Room.Kick", &json!({})).await;
    let event = timeout(T, c.closed()).await.expect("kicked in time");
    assert_eq!(
        event,
        ClientEvent::Kicked {
            reason: Some("bye".into())
        }
    );
    let (_, _, uid) = next_closed(&mut closed).await;
    assert_eq!(uid.as_deref(), Some("bob"));

    // The backend closes another session: no Kick, the connection ends, the callback runs.
    let c = client(&gate).await;
    let _: String = c.request("Room.Join", &"bea").await.unwrap();
    c.notify("Room.Leave", &json!({})).await.unwrap();
    let event = timeout(T, c.closed()).await.expect("closed in time");
    assert_eq!(event, ClientEvent::Disconnected);
    let (_, _, uid) = next_closed(&mut closed).await;
    assert_eq!(uid.as_deref(), Some("bea"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_two_gates_share_a_room_with_distinct_session_ids() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat = backend("chat-1", &master, &closed_tx).await;
    let gate1 = gate("gate-1", &master).await;
    let gate2 = gate("gate-2", &master).await;

    let alice = client(&gate1).await;
    let bob = client(&gate2).await;
    let mut alice_hears = alice.on("onSaid");
    let _: String = alice.request("Room.Join", &"alice").await.unwrap();
    let _: String = bob.request("Room.Join", &"bob").await.unwrap();
    let (_, a_id, _): (String, u64, Option<String>) =
        alice.request("Room.Who", &json!({})).await.unwrap();
    let (_, b_id, _): (String, u64, Option<String>) =
        bob.request("Room.Who", &json!({})).await.unwrap();
    assert_ne!(a_id, b_id, "two gates never hand out the same session id");
    assert_ne!(a_id >> 32, b_id >> 32, "each gate has its own id prefix");

    // Bob (gate 2) speaks; Alice (gate 1) hears it.
    bob.notify("Room.Say", &"hi alice").await.unwrap();
    let pushed = timeout(T, alice_hears.recv()).await.unwrap().unwrap();
    let said: Said = alice.decode(&pushed).unwrap();
    assert_eq!(
        (said.from.as_str(), said.text.as_str()),
        ("bob", "hi alice")
    );

    // Bob's gate shuts down: the backend runs Bob's callback, Alice stays.
    gate2.server.shutdown().await;
    let (_, id, uid) = next_closed(&mut closed).await;
    assert_eq!((id, uid.as_deref()), (b_id, Some("bob")));
    let (_, still, _): (String, u64, Option<String>) =
        alice.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!(still, a_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_backends_and_stick_to_theirs() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat1 = backend("chat-1", &master, &closed_tx).await;
    let _chat2 = backend("chat-2", &master, &closed_tx).await;
    let gate = gate("gate-1", &master).await;
    assert!(
        gate.node.wait_for_members("Room", 2, T).await,
        "both backends discovered"
    );

    let mut served = Vec::new();
    for i in 0..6 {
        let c = client(&gate).await;
        let first: String = c.request("Room.Join", &format!("user-{i}")).await.unwrap();
        for _ in 0..5 {
            let (node, _, _): (String, u64, Option<String>) =
                c.request("Room.Who", &json!({})).await.unwrap();
            assert_eq!(node, first, "a session's messages stay on its backend");
        }
        served.push(first);
    }
    for node in ["chat-1", "chat-2"] {
        assert_eq!(
            served.iter().filter(|n| *n == node).count(),
            3,
            "round robin over the backends: {served:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_members_on_two_gates_is_one_node_message_per_gate() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let master = master().await;
    let chat = backend("chat-1", &master, &closed_tx).await;
    let gates = [gate("gate-1", &master).await, gate("gate-2", &master).await];
    let mut clients = Vec::new();
    for i in 0..20 {
        let c = client(&gates[i % 2]).await;
        let hears = c.on("onSaid");
        let _: String = c.request("Room.Join", &format!("user-{i}")).await.unwrap();
        clients.push((c, hears));
    }
    let sent = |gate: &str| chat.node.link_stats(gate).expect("linked").frames_sent;
    let before = [sent("gate-1"), sent("gate-2")];

    clients[0]
        .0
        .notify("Room.Say", &"to everyone")
        .await
        .unwrap();
    for (c, hears) in &mut clients {
        let pushed = timeout(T, hears.recv()).await.unwrap().unwrap();
        assert_eq!(c.decode::<Said>(&pushed).unwrap().text, "to everyone");
    }
    let after = [sent("gate-1"), sent("gate-2")];
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [1, 1],
        "20 members on 2 gates: one push frame per gate"
    );
    for (_, hears) in &mut clients {
        assert!(hears.try_recv().is_err(), "each member got it once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_call_each_other_typed_and_reach_internal_routes_clients_cannot() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let master = master().await;
    let chat = backend("chat-1", &master, &closed_tx).await;
    let gate = gate("gate-1", &master).await;
    let c = client(&gate).await;
    let mut said = c.on("onSaid");
    let _: String = c.request("Room.Join", &"carol").await.unwrap();

    // Internal routes do not exist for clients, through the gate.
    for route in ["Math.Double", "Room.Members"] {
        let e = c.request::<_, u64>(route, &21).await.unwrap_err();
        assert_eq!(code_of(&e), "NANO-404", "{route}");
    }
    // A node reaches them, typed: the gate calls the backend...
    let doubled: u64 = gate.node.call("Math.Double", &21u64).await.unwrap();
    assert_eq!(doubled, 42);
    let members: usize = gate.node.call("Room.Members", &json!({})).await.unwrap();
    assert_eq!(members, 1);
    let on: u64 = gate
        .node
        .call_on("chat-1", "Math.Double", &5u64)
        .await
        .unwrap();
    assert_eq!(on, 10);
    // ...and the backend calls itself the same way.
    let here: u64 = chat.node.call("Math.Double", &8u64).await.unwrap();
    assert_eq!(here, 16);

    // The handler's error, typed; no such node or service; the deadline.
    let e = gate
        .node
        .call::<u64>("Math.Double", &u64::MAX)
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), ("NANO-400", "too large"));
    let e = gate.node.call::<u64>("Nobody.Home", &1).await.unwrap_err();
    assert_eq!(e.code(), "NANO-404");
    let e = gate
        .node
        .call_on::<u64>("chat-9", "Math.Double", &1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-404");
    let e = gate
        .node
        .call_within::<()>("Room.Hang", &json!({}), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-504");
    // A reply that does not decode as the type asked for.
    let e = gate
        .node
        .call::<String>("Math.Double", &1u64)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NANO-400");

    // A notify from a node: its broadcast reaches the room's client through the gate.
    gate.node.notify("Room.Say", &"from a node").unwrap();
    let pushed = timeout(T, said.recv()).await.unwrap().unwrap();
    let said: Said = c.decode(&pushed).unwrap();
    assert_eq!(
        (said.from.as_str(), said.text.as_str()),
        ("", "from a node")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_of_a_uid_kicks_the_first_on_any_gate() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat = backend("chat-1", &master, &closed_tx).await;
    let gate1 = gate("gate-1", &master).await;
    let gate2 = gate("gate-2", &master).await;
    // The gates tell each other of binds over their link.
    assert!(gate1.node.wait_for_peer("gate-2", T).await);
    assert!(gate2.node.wait_for_peer("gate-1", T).await);

    // Dana logs in on gate 1, then again on gate 2: the first session is kicked.
    let first = client(&gate1).await;
    let _: String = first.request("Room.Join", &"dana").await.unwrap();
    let second = client(&gate2).await;
    let _: String = second.request("Room.Join", &"dana").await.unwrap();
    let event = timeout(T, first.closed()).await.expect("kicked in time");
    assert_eq!(
        event,
        ClientEvent::Kicked {
            reason: Some("logged in elsewhere".into())
        }
    );
    let (_, _, uid): (String, u64, Option<String>) =
        second.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!(uid.as_deref(), Some("dana"));

    // And again on the same gate as the second: the second is kicked, the third stays.
    let third = client(&gate2).await;
    let _: String = third.request("Room.Join", &"dana").await.unwrap();
    let event = timeout(T, second.closed()).await.expect("kicked in time");
    assert!(matches!(event, ClientEvent::Kicked { .. }), "{event:?}");
    let (_, _, uid): (String, u64, Option<String>) =
        third.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!(uid.as_deref(), Some("dana"));
    // Other uids are not affected.
    let erin = client(&gate1).await;
    let _: String = erin.request("Room.Join", &"erin").await.unwrap();
    let _: (String, u64, Option<String>) = third.request("Room.Who", &json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_refuse_newer_the_second_login_is_the_one_kicked() {
    let (closed_tx, _closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat = backend("chat-1", &master, &closed_tx).await;
    let gate1 = gate_with("gate-1", &master, MultiLogin::RefuseNewer).await;
    let gate2 = gate_with("gate-2", &master, MultiLogin::RefuseNewer).await;
    assert!(gate1.node.wait_for_peer("gate-2", T).await);
    assert!(gate2.node.wait_for_peer("gate-1", T).await);

    let first = client(&gate1).await;
    let _: String = first.request("Room.Join", &"fay").await.unwrap();
    let second = client(&gate2).await;
    let _ = second.request::<_, String>("Room.Join", &"fay").await;
    let event = timeout(T, second.closed()).await.expect("refused in time");
    assert_eq!(
        event,
        ClientEvent::Kicked {
            reason: Some("already logged in".into())
        }
    );
    let (_, _, uid): (String, u64, Option<String>) =
        first.request("Room.Who", &json!({})).await.unwrap();
    assert_eq!(uid.as_deref(), Some("fay"), "the first login stays");
    assert!(!first.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_shows_its_cluster_members_and_forwarded_sessions_on_its_monitor() {
    let master = master().await;
    let (closed, _rx) = mpsc::unbounded_channel();
    let _b = backend("b-monitor", &master, &closed).await;
    let g = gate("g-monitor", &master).await;
    let c = client(&g).await;
    let _: String = c.request("Room.Join", &"ann").await.unwrap();
    let admin = g.server.admin_addr().expect("the gate's admin listener");
    let (status, _, body) = common::http_request(admin, "GET", "/debug/nano/node.json").await;
    assert_eq!(status, 200);
    let node: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ext = &node["extensions"][0];
    assert_eq!(ext["name"], "cluster");
    assert_eq!(ext["info"]["id"], "g-monitor");
    assert_eq!(ext["info"]["forwarded_sessions"], 1);
    let members = ext["info"]["members"].as_array().unwrap();
    let b = members
        .iter()
        .find(|m| m["id"] == "b-monitor")
        .unwrap_or_else(|| panic!("the backend among {members:?}"));
    assert!(b["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "Room"));
    assert_eq!(b["link_up"], true);
    assert!(b["frames_sent"].as_u64().unwrap() >= 1);
    // The forwarded request counts on the gate as a message in, not as a local handler's.
    assert_eq!(node["stats"]["messages_in_total"], 1);
    assert_eq!(node["stats"]["requests_total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_from_its_gate_resumes_and_gets_what_the_backend_sent_meanwhile() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let master = master().await;
    let _chat = backend("chat-1", &master, &closed_tx).await;
    let gate = gate_resuming(
        "gate-1",
        &master,
        nano::Resume::new(Duration::from_secs(30)),
    )
    .await;
    let (tx, mut suspended) = mpsc::unbounded_channel();
    gate.server.engine().on_session_suspended(move |s| {
        let _ = tx.send(s.id());
    });
    let cutter = Cutter::start(gate.server.addr(nano::Transport::Tcp).unwrap()).await;

    let bob = client(&gate).await;
    let _: String = bob.request("Room.Join", &"bob").await.unwrap();
    let alice = nano::Client::connect_tcp(cutter.addr()).await.unwrap();
    assert!(alice.is_resumable());
    let mut events = alice.connection_events();
    let mut said = alice.on("onSaid");
    let _: String = alice.request("Room.Join", &"alice").await.unwrap();
    let before: (String, u64, Option<String>) =
        alice.request("Room.Who", &json!({})).await.unwrap();
    let say = |range: std::ops::Range<u32>| {
        let bob = bob.clone();
        async move {
            for n in range {
                bob.notify("Room.Say", &n.to_string()).await.unwrap();
            }
            // Bob's notifies ran on the backend once his request after them is answered.
            let _: (String, u64, Option<String>) =
                bob.request("Room.Who", &json!({})).await.unwrap();
        }
    };
    say(0..5).await;

    cutter.refuse(true);
    cutter.cut();
    let id = timeout(T, suspended.recv()).await.unwrap().unwrap();
    assert!(matches!(
        timeout(T, events.recv()).await.unwrap().unwrap(),
        ConnectionEvent::Lost(_)
    ));
    // The backend pushes to the suspended session (through the gate); a request made while
    // disconnected waits for the connection.
    say(5..15).await;
    let who = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .request::<_, (String, u64, Option<String>)>("Room.Who", &json!({}))
                .await
        })
    };
    cutter.refuse(false);
    assert_eq!(
        timeout(T, events.recv()).await.unwrap().unwrap(),
        ConnectionEvent::Resumed
    );
    let mut texts = Vec::new();
    while texts.len() < 15 {
        let p = timeout(T, said.recv()).await.unwrap().unwrap();
        texts.push(alice.decode::<Said>(&p).unwrap().text);
    }
    let want: Vec<String> = (0..15).map(|n| n.to_string()).collect();
    assert_eq!(texts, want, "in order, once");
    let after = timeout(T, who).await.unwrap().unwrap().unwrap();
    assert_eq!(
        after, before,
        "the same session on the backend, still bound"
    );
    assert_eq!(before.1, id);
    assert!(closed.try_recv().is_err(), "the backend closed nothing");
    assert_eq!(gate.node.forwarded_sessions(), 2);
}
