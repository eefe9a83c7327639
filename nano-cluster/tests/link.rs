//! Node links between in-process nodes on 127.0.0.1: requests, batching, pushes, deadlines,
//! lost and restarted peers, and listen errors.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nano_cluster::link::{
    proto, Inbound, LinkConfig, LinkError, LinkHandler, LinkState, NoHandler, NodeLink, NodeServer,
    Responder, CODE_DEADLINE_EXCEEDED, CODE_UNAVAILABLE,
};
use tokio::sync::mpsc;

/// Failure bound of every wait on an event.
const BOUND: Duration = Duration::from_secs(5);

/// Answers `Echo.*` with the payload, `Fail.*` with an error, drops `Drop.*` unanswered, keeps
/// `Hold.*` forever; reports every frame it sees on a channel.
#[derive(Clone)]
struct Node {
    events: mpsc::UnboundedSender<Event>,
    held: Arc<Mutex<Vec<Responder>>>,
}

#[derive(Debug)]
enum Event {
    Request(proto::Request),
    Notify(proto::Notify),
    Push(proto::Push),
    Other(String),
}

impl Node {
    fn new() -> (Node, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let node = Node {
            events,
            held: Arc::default(),
        };
        (node, rx)
    }
}

impl LinkHandler for Node {
    fn on_inbound(&self, _peer: &NodeLink, inbound: Inbound) {
        let event = match inbound {
            Inbound::Request(req, responder) => {
                let route = req.route.clone();
                let payload = req.payload.clone();
                let _ = self.events.send(Event::Request(req));
                if route.starts_with("Echo.") {
                    responder.respond(Ok(payload));
                } else if route.starts_with("Fail.") {
                    let e = nano_core::Error::new("GAME-001", "room is full")
                        .with_metadata("room", "lobby");
                    responder.respond(Err(e));
                } else if route.starts_with("Hold.") {
                    self.held.lock().unwrap().push(responder);
                } else {
                    drop(responder);
                }
                return;
            }
            Inbound::Notify(n) => Event::Notify(n),
            Inbound::Push(p) => Event::Push(p),
            other => Event::Other(format!("{other:?}")),
        };
        let _ = self.events.send(event);
    }
}

fn request(route: &str, payload: impl Into<Bytes>) -> proto::Request {
    proto::Request {
        route: route.into(),
        payload: payload.into(),
        session_id: 7,
        ..Default::default()
    }
}

fn notify(route: &str) -> proto::Notify {
    proto::Notify {
        route: route.into(),
        ..Default::default()
    }
}

async fn server(id: &str, handler: impl LinkHandler) -> NodeServer {
    NodeServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        id,
        LinkConfig::default(),
        handler,
    )
    .await
    .expect("bind 127.0.0.1:0")
}

async fn dial(id: &str, server: &NodeServer, handler: impl LinkHandler) -> NodeLink {
    let link = NodeLink::dial(id, server.local_addr(), LinkConfig::default(), handler);
    link.wait_up(BOUND).await.expect("link up");
    link
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(BOUND, rx.recv())
        .await
        .expect("an event in time")
        .expect("handler alive")
}

async fn wait_state(link: &NodeLink, state: LinkState) {
    let mut rx = link.watch_state();
    tokio::time::timeout(BOUND, rx.wait_for(|s| *s == state))
        .await
        .expect("state in time")
        .expect("link alive");
}

#[tokio::test]
async fn request_round_trip_both_ways_with_errors_as_is() {
    let (b_handler, mut b_events) = Node::new();
    let b = server("node-b", b_handler).await;
    let (a_handler, _a_events) = Node::new();
    let a = dial("node-a", &b, a_handler).await;
    assert_eq!(a.peer_id().as_deref(), Some("node-b"));

    let answer = a
        .request(request("Echo.Say", "hello"), BOUND)
        .await
        .unwrap();
    assert_eq!(&answer[..], b"hello");
    match next(&mut b_events).await {
        Event::Request(req) => {
            assert_eq!(req.route, "Echo.Say");
            assert_eq!(req.session_id, 7);
            assert!(req.request_id > 0);
            assert!(
                req.deadline_ms > 0 && req.deadline_ms <= 5_000,
                "{}",
                req.deadline_ms
            );
        }
        other => panic!("expected the request, got {other:?}"),
    }

    // A handler's error arrives unchanged: code, message, metadata.
    match a.request(request("Fail.Join", "{}"), BOUND).await {
        Err(LinkError::Remote(e)) => {
            assert_eq!(e.code(), "GAME-001");
            assert_eq!(e.message(), "room is full");
            assert_eq!(e.metadata().get("room").map(String::as_str), Some("lobby"));
        }
        other => panic!("expected the remote error, got {other:?}"),
    }
    // A request dropped unanswered is answered NANO-500 at once.
    match a.request(request("Drop.It", "{}"), BOUND).await {
        Err(LinkError::Remote(e)) => assert_eq!(e.code(), "NANO-500"),
        other => panic!("expected NANO-500, got {other:?}"),
    }

    // The same link carries requests the other way.
    let back = b.peer("node-a").expect("b knows a");
    assert!(back.same(&b.peer("node-a").unwrap()));
    assert_eq!(back.state(), LinkState::Up);
    let answer = back
        .request(request("Echo.Back", "pong"), BOUND)
        .await
        .unwrap();
    assert_eq!(&answer[..], b"pong");
    b.shutdown().await;
}

#[tokio::test]
async fn a_thousand_concurrent_requests_all_answered_with_their_payloads() {
    let b = server("node-b", Node::new().0).await;
    let a = dial("node-a", &b, NoHandler).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let a = a.clone();
        tasks.spawn(async move {
            let answer = a.request(request("Echo.N", i.to_string()), BOUND).await;
            (i, answer)
        });
    }
    let mut seen = vec![false; 1000];
    while let Some(done) = tokio::time::timeout(BOUND, tasks.join_next())
        .await
        .unwrap()
    {
        let (i, answer) = done.unwrap();
        assert_eq!(answer.unwrap(), Bytes::from(i.to_string()));
        seen[i as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let stats = a.stats();
    assert!(stats.frames_sent >= 1001, "{stats:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_frames_travels_in_fewer_messages() {
    let (handler, mut events) = Node::new();
    let b = server("node-b", handler).await;
    let a = dial("node-a", &b, NoHandler).await;
    let inbound = b.peer("node-a").unwrap();
    let before = inbound.stats();

    const N: u64 = 1000;
    for _ in 0..N {
        a.notify(notify("Room.Tick")).unwrap();
    }
    for _ in 0..N {
        assert!(matches!(next(&mut events).await, Event::Notify(_)));
    }
    let after = inbound.stats();
    let messages = after.messages_received - before.messages_received;
    let frames = after.frames_received - before.frames_received;
    assert_eq!(frames, N);
    assert!(messages < N, "{N} frames in {messages} messages");
    println!("{N} frames arrived in {messages} Frames messages");
    let sent = a.stats();
    assert!(sent.messages_sent < sent.frames_sent, "{sent:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_push_for_several_members_is_one_frame() {
    let (handler, mut events) = Node::new();
    let b = server("node-b", handler).await;
    let a = dial("node-a", &b, NoHandler).await;
    let inbound = b.peer("node-a").unwrap();
    let before = inbound.stats().frames_received;

    a.push(
        "onMessage",
        Bytes::from_static(b"{\"x\":1}"),
        vec![11, 12, 13],
    )
    .unwrap();
    a.notify(notify("Marker.End")).unwrap();
    match next(&mut events).await {
        Event::Push(p) => {
            assert_eq!(p.route, "onMessage");
            assert_eq!(&p.payload[..], b"{\"x\":1}");
            assert_eq!(p.session_ids, vec![11, 12, 13]);
        }
        other => panic!("expected the push, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await, Event::Notify(n) if n.route == "Marker.End"));
    assert_eq!(inbound.stats().frames_received - before, 2);

    // The other fire-and-forget frames arrive as sent.
    a.kick(11, Some("bye")).unwrap();
    a.close_session(12).unwrap();
    a.session_closed(13).unwrap();
    a.bind(14, "alice").unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        match next(&mut events).await {
            Event::Other(s) => seen.push(s),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        seen[0].starts_with("Kick") && seen[0].contains("bye"),
        "{seen:?}"
    );
    assert!(seen[1].starts_with("Close"), "{seen:?}");
    assert!(seen[2].starts_with("SessionClosed"), "{seen:?}");
    assert!(
        seen[3].starts_with("Bind") && seen[3].contains("alice"),
        "{seen:?}"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_never_answers_gives_deadline_exceeded_on_time() {
    let (handler, mut events) = Node::new();
    let b = server("node-b", handler).await;
    let a = dial("node-a", &b, NoHandler).await;

    let deadline = Duration::from_millis(300);
    let start = Instant::now();
    let result = a.request(request("Hold.Forever", "{}"), deadline).await;
    let elapsed = start.elapsed();
    let e = result.expect_err("no answer");
    assert!(matches!(e, LinkError::DeadlineExceeded(_)), "{e:?}");
    assert_eq!(e.code(), CODE_DEADLINE_EXCEEDED);
    assert_eq!(e.into_error().code(), "NANO-504");
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + Duration::from_secs(1), "{elapsed:?}");
    // It did reach the peer, with its remaining time.
    match next(&mut events).await {
        Event::Request(req) => assert!(req.deadline_ms > 0 && req.deadline_ms <= 300),
        other => panic!("expected the request, got {other:?}"),
    }
    // The link is still fine.
    assert_eq!(
        &a.request(request("Echo.X", "ok"), BOUND).await.unwrap()[..],
        b"ok"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn the_peer_going_away_answers_every_pending_request_at_once() {
    let (handler, mut events) = Node::new();
    let b = server("node-b", handler).await;
    let a = dial("node-a", &b, NoHandler).await;

    const N: usize = 50;
    let long = Duration::from_secs(60);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let a = a.clone();
        tasks.spawn(async move { a.request(request("Hold.Forever", "{}"), long).await });
    }
    for _ in 0..N {
        assert!(matches!(next(&mut events).await, Event::Request(_)));
    }

    let start = Instant::now();
    b.shutdown().await;
    let mut answered = 0;
    while let Some(done) = tokio::time::timeout(BOUND, tasks.join_next())
        .await
        .unwrap()
    {
        let e = done.unwrap().expect_err("the peer is gone");
        assert!(matches!(e, LinkError::Unavailable(_)), "{e:?}");
        assert_eq!(e.code(), CODE_UNAVAILABLE);
        answered += 1;
    }
    assert_eq!(answered, N);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // While down, sends fail fast instead of waiting.
    wait_state(&a, LinkState::Down).await;
    let start = Instant::now();
    let e = a.request(request("Echo.X", "{}"), long).await.unwrap_err();
    assert!(matches!(e, LinkError::Unavailable(_)), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        a.notify(notify("X.Y")),
        Err(LinkError::Unavailable(_))
    ));
    a.close();
    assert_eq!(a.state(), LinkState::Closed);
}

#[tokio::test]
async fn a_peer_restarted_on_the_same_address_is_redialed() {
    let b = server("node-b", Node::new().0).await;
    let addr = b.local_addr();
    let a = dial("node-a", &b, NoHandler).await;
    assert_eq!(
        &a.request(request("Echo.1", "one"), BOUND).await.unwrap()[..],
        b"one"
    );

    b.shutdown().await;
    wait_state(&a, LinkState::Down).await;

    let b2 = NodeServer::bind(addr, "node-b", LinkConfig::default(), Node::new().0)
        .await
        .expect("the address is free again");
    a.wait_up(BOUND).await.expect("redialed");
    assert_eq!(
        &a.request(request("Echo.2", "two"), BOUND).await.unwrap()[..],
        b"two"
    );
    assert!(b2.peer("node-a").is_some());
    a.close();
    b2.shutdown().await;
}

#[tokio::test]
async fn a_busy_listen_address_is_a_clear_error() {
    let b = server("node-b", NoHandler).await;
    let addr = b.local_addr();
    let e = NodeServer::bind(addr, "node-c", LinkConfig::default(), NoHandler)
        .await
        .expect_err("the address is taken");
    assert_eq!(e.addr, addr);
    assert_eq!(e.source.kind(), std::io::ErrorKind::AddrInUse);
    let text = e.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains("cannot listen for cluster links"), "{text}");
    b.shutdown().await;
}

#[tokio::test]
async fn only_the_lower_id_dials() {
    let a = server("node-a", NoHandler).await;
    let b = NodeLink::dial("node-b", a.local_addr(), LinkConfig::default(), NoHandler);
    let e = b.wait_up(Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(e, LinkError::Unavailable(_)));
    assert!(a.peer("node-b").is_none());
    b.close();
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_and_an_oversized_frame_are_refused_at_send() {
    let config = LinkConfig {
        queue_capacity: 4,
        max_message_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        ..LinkConfig::default()
    };
    let (handler, mut events) = Node::new();
    let b = server("node-b", handler).await;
    let a = NodeLink::dial("node-a", b.local_addr(), config, NoHandler);
    a.wait_up(BOUND).await.unwrap();

    // Single-threaded runtime: the writer cannot run until this loop yields.
    let results: Vec<_> = (0..6).map(|_| a.notify(notify("Q.Fill"))).collect();
    assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(results[4], Err(LinkError::QueueFull(4))),
        "{results:?}"
    );
    for _ in 0..4 {
        assert!(matches!(next(&mut events).await, Event::Notify(_)));
    }

    let big = Bytes::from(vec![0u8; 100 * 1024]);
    let e = a.push("onBig", big, vec![1]).unwrap_err();
    assert!(
        matches!(e, LinkError::TooLarge { limit: 49152, .. }),
        "{e:?}"
    );
    assert_eq!(
        &a.request(request("Echo.X", "ok"), BOUND).await.unwrap()[..],
        b"ok"
    );
    a.close();
    b.shutdown().await;
}

/// The peer's process "crashes": its runtime is dropped with its tasks and sockets, so no
/// stream is ended properly; every pending request is answered at once all the same, and a
/// peer started again on the address is redialed.
#[test]
fn a_crashed_peer_answers_every_pending_request_at_once_and_is_redialed() {
    let peer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (handler, mut events) = Node::new();
    let b = peer_rt.block_on(server("node-b", handler));
    let addr = b.local_addr();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let a = dial("node-a", &b, NoHandler).await;
        const N: usize = 20;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            let a = a.clone();
            tasks.spawn(async move {
                a.request(request("Hold.Forever", "{}"), Duration::from_secs(60))
                    .await
            });
        }
        for _ in 0..N {
            assert!(matches!(next(&mut events).await, Event::Request(_)));
        }

        let start = Instant::now();
        peer_rt.shutdown_background();
        let mut answered = 0;
        while let Some(done) = tokio::time::timeout(BOUND, tasks.join_next())
            .await
            .unwrap()
        {
            let e = done.unwrap().expect_err("the peer crashed");
            assert_eq!(e.code(), CODE_UNAVAILABLE, "{e:?}");
            answered += 1;
        }
        assert_eq!(answered, N);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        wait_state(&a, LinkState::Down).await;
        drop(b);

        // The crashed runtime closes its listener on a thread of its own
        // (`shutdown_background`): the port is free once that thread got to it.
        let deadline = Instant::now() + BOUND;
        let b2 = loop {
            match NodeServer::bind(addr, "node-b", LinkConfig::default(), Node::new().0).await {
                Ok(b2) => break b2,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the crashed peer's port is not free yet");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("the address is not free again: {e:?}"),
            }
        };
        a.wait_up(BOUND).await.expect("redialed");
        assert_eq!(
            &a.request(request("Echo.3", "three"), BOUND).await.unwrap()[..],
            b"three"
        );
        a.close();
        b2.shutdown().await;
    });
}

#[tokio::test]
async fn another_node_on_the_address_is_not_taken_for_the_peer() {
    let b = server("node-b", Node::new().0).await;
    let addr = b.local_addr();
    let a = dial("node-a", &b, NoHandler).await;
    b.shutdown().await;
    wait_state(&a, LinkState::Down).await;

    let c = NodeServer::bind(addr, "node-c", LinkConfig::default(), Node::new().0)
        .await
        .unwrap();
    assert!(a.wait_up(Duration::from_millis(500)).await.is_err());
    assert_eq!(a.peer_id().as_deref(), Some("node-b"));
    a.close();
    c.shutdown().await;
}

#[tokio::test]
async fn a_forgotten_peer_is_closed_and_gets_a_new_link_when_it_dials_again() {
    let b = server("node-b", Node::new().0).await;
    let a = dial("node-a", &b, NoHandler).await;
    let first = b.peer("node-a").unwrap();
    assert!(b.service().forget("node-a"));
    assert_eq!(first.state(), LinkState::Closed);
    assert!(b.peer("node-a").is_none());
    // The dialing side sees the stream end and redials: a new handle on the server.
    wait_state(&a, LinkState::Down).await;
    a.wait_up(BOUND).await.unwrap();
    let second = b.peer("node-a").expect("dialed again");
    assert!(!second.same(&first));
    assert_eq!(
        &a.request(request("Echo.4", "four"), BOUND).await.unwrap()[..],
        b"four"
    );
    a.close();
    b.shutdown().await;
}

/// Three nodes, each linking to the two others by id and address: the lower id dials, so each
/// pair shares one link, and requests flow both ways on it.
#[tokio::test]
async fn three_nodes_keep_one_link_per_pair() {
    let ids = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(server(id, Node::new().0).await);
    }
    let addrs: Vec<_> = nodes.iter().map(NodeServer::local_addr).collect();
    let mut links = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for (j, peer) in ids.iter().enumerate() {
            if i != j {
                links.push((i, j, node.link_to(peer, addrs[j])));
            }
        }
    }
    for (i, j, link) in &links {
        link.wait_up(BOUND).await.unwrap();
        // The lower id dialed; the higher one holds the accepted end.
        assert_eq!(link.addr().is_some(), i < j, "{link:?}");
        assert!(link.same(&nodes[*i].link_to(ids[*j], addrs[*j])));
        let payload = format!("{i}->{j}");
        let answer = link
            .request(request("Echo.Pair", payload.clone()), BOUND)
            .await;
        assert_eq!(answer.unwrap(), Bytes::from(payload));
    }
    for node in &nodes {
        assert_eq!(node.service().peers().len(), 2);
    }
    // Each link carried its own Hello, one request and one answer each way, nothing more:
    // no second stream per pair.
    for (_, _, link) in &links {
        let stats = link.stats();
        assert_eq!(stats.frames_sent, 3, "{link:?} {stats:?}");
        assert_eq!(stats.frames_received, 3, "{link:?} {stats:?}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}
