//! Graceful shutdown over real sockets: queued pushes drain before the Kick, a request in
//! flight is answered, requests sent during shutdown get an answer or a closed connection
//! (never silence), the session-closed callbacks run, and shutdown ends within its bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nano::prelude::*;
use nano::protocol::{Message, MessageType, PacketType};
use nano::{Client, ClientError, ClientEvent, Transport};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

mod common;

use common::{request_packet, Raw, T};

/// Pushes sent by `before_shutdown` to every member, queued before the kick.
const FAREWELLS: usize = 300;

/// Holds a request until the test releases it; counts closed sessions.
struct Gate {
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
    closed: Arc<AtomicUsize>,
}

#[component]
impl Gate {
    fn init(&mut self, ctx: &Context<Self>) {
        let closed = self.closed.clone();
        ctx.on_session_closed(move |_, _s: &Session| {
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }

    pub async fn hold(&mut self, _s: &Session) -> Result<&'static str> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok("released")
    }

    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }
}

/// Everyone joins; at shutdown it pushes farewells to all and tells the test shutdown began.
struct Herald {
    all: Group,
    began: mpsc::UnboundedSender<()>,
}

#[component]
impl Herald {
    fn before_shutdown(&mut self, _ctx: &Context<Self>) {
        for i in 0..FAREWELLS {
            let _ = self.all.broadcast("onBye", &i);
        }
        let _ = self.began.send(());
    }

    pub fn join(&mut self, s: &Session) -> Result<()> {
        self.all.add(s)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_answers_and_kicks_every_client() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (began_tx, mut began) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let closed = Arc::new(AtomicUsize::new(0));
    let shutdown_timeout = Duration::from_secs(3);
    // Herald is registered last, so its before_shutdown runs first (reverse order), on the
    // default scheduler, while Gate's own scheduler is still busy with the held request.
    let server = nano::app()
        .component_on(
            Gate {
                started: started_tx,
                release: release.clone(),
                closed: closed.clone(),
            },
            "gate",
        )
        .component(Herald {
            all: Group::new("all"),
            began: began_tx,
        })
        .shutdown_timeout(shutdown_timeout)
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    let tcp = server.addr(Transport::Tcp).unwrap();
    let ws = format!("ws://{}/nano", server.addr(Transport::WebSocket).unwrap());

    let mut clients: Vec<Client> = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 {
            Client::connect_tcp(tcp).await.unwrap()
        } else {
            Client::connect_ws(&ws).await.unwrap()
        };
        c.request::<_, ()>("Herald.Join", &()).await.unwrap();
        clients.push(c);
    }
    // A raw member sees the exact packet order: every farewell, then the Kick, then the close.
    let mut watcher = Raw::tcp(tcp).await;
    watcher.handshake().await;
    watcher
        .send(&request_packet(1, "Herald.Join", b"", None))
        .await;
    let joined = watcher.next_non_heartbeat().await.unwrap();
    assert_eq!(
        Message::decode(joined.body, None).unwrap().kind,
        MessageType::Response
    );
    let members = clients.len() + 1;

    // A request in flight when shutdown starts.
    let holder = Client::<Json>::builder()
        .request_timeout(Duration::from_secs(30))
        .connect_tcp(tcp)
        .await
        .unwrap();
    let held = tokio::spawn(async move {
        let r = holder.request::<_, String>("Gate.Hold", &()).await;
        (r, holder)
    });
    timeout(T, started.recv())
        .await
        .expect("the held request reached its handler")
        .unwrap();

    let started_at = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    timeout(T, began.recv())
        .await
        .expect("before_shutdown ran")
        .unwrap();

    // Requests sent while shutting down: an answer, NANO-503 or a closed connection.
    let latecomer = clients.pop().unwrap();
    let late = tokio::spawn(async move {
        let r = timeout(
            T,
            latecomer.request::<_, Value>("Gate.Echo", &json!("late")),
        )
        .await;
        (r, latecomer)
    });
    release.notify_one();

    let (held, holder) = timeout(T, held).await.expect("held request done").unwrap();
    match held {
        Ok(v) => assert_eq!(v, "released"),
        Err(ClientError::Server(e)) => assert_eq!(e.code(), "NANO-503"),
        Err(e) => panic!("the request in flight during shutdown went unanswered: {e:?}"),
    }
    let (late, latecomer) = late.await.unwrap();
    clients.push(latecomer);
    match late.expect("the late request is never left hanging") {
        Ok(v) => assert_eq!(v, json!("late")),
        Err(ClientError::Server(e)) => assert_eq!(e.code(), "NANO-503"),
        Err(ClientError::Closed) => {}
        Err(e) => panic!("unexpected outcome for a request during shutdown: {e:?}"),
    }

    timeout(shutdown_timeout + Duration::from_secs(2), shutdown)
        .await
        .expect("shutdown ends within its configured bound")
        .unwrap();
    let took = started_at.elapsed();
    assert!(
        took < shutdown_timeout + Duration::from_secs(2),
        "shutdown took {took:?}"
    );

    // The watcher: all farewells in order, then the Kick, then the close.
    let mut farewells = 0;
    let mut kicked = false;
    for p in watcher.until_closed().await {
        match p.kind {
            PacketType::Heartbeat => {}
            PacketType::Data => {
                assert!(!kicked, "a push after the Kick");
                let m = Message::decode(p.body, None).unwrap();
                assert_eq!(m.route.as_deref(), Some("onBye"));
                assert_eq!(&m.payload[..], farewells.to_string().as_bytes());
                farewells += 1;
            }
            PacketType::Kick => {
                assert!(!kicked, "one Kick");
                kicked = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        farewells, FAREWELLS,
        "every push queued before the kick arrived"
    );
    assert!(kicked, "the Kick arrived after the pushes");

    for c in clients.iter().chain(std::iter::once(&holder)) {
        let ev = timeout(T, c.closed()).await.unwrap();
        assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        members + 1,
        "the closed callbacks ran once per session (the members and the holder)"
    );
}
