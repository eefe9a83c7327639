//! Bounded send queues over real sockets: `FullQueuePolicy::DropAndWarn` drops what does not
//! fit and keeps the connection, and a small queue still answers a long pipelined burst (the
//! agent writes replies as they pile up).

use nano::prelude::*;
use nano::protocol::{DataPacketWriter, Message, MessageType, PacketType};
use nano::{FullQueuePolicy, Server, Transport};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;

use common::{request_packet, Raw, Via, BOTH, T};

/// Pushes of 16 KiB attempted by one `Flood.Go`, in one handler call: far more than the queue
/// of 8 holds while the client does not read.
const ATTEMPTS: usize = 200;

struct Flood {
    /// (accepted, refused) after each flood.
    done: mpsc::UnboundedSender<(usize, usize)>,
}

#[component]
impl Flood {
    pub fn go(&mut self, s: &Session) -> Result<()> {
        let blob = "x".repeat(16 * 1024);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..ATTEMPTS {
            match s.push("onFlood", &blob) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
        let _ = self.done.send((accepted, refused));
        Ok(())
    }

    pub fn echo(&mut self, _s: &Session, v: u64) -> Result<u64> {
        Ok(v)
    }
}

async fn server(
    queue: usize,
    policy: FullQueuePolicy,
) -> (Server<Json>, mpsc::UnboundedReceiver<(usize, usize)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = nano::app()
        .component(Flood { done: tx })
        .send_queue(queue)
        .on_full_queue(policy)
        .heartbeat(None)
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    (server, rx)
}

async fn raw(server: &Server<Json>, via: Via) -> Raw {
    match via {
        Via::Tcp => Raw::tcp(server.addr(Transport::Tcp).unwrap()).await,
        Via::Ws => {
            Raw::ws(&format!(
                "ws://{}/nano",
                server.addr(Transport::WebSocket).unwrap()
            ))
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_warn_drops_pushes_but_keeps_the_connection() {
    let (server, mut done) = server(8, FullQueuePolicy::DropAndWarn).await;
    let mut open = Vec::new();
    for via in BOTH {
        let mut raw = raw(&server, via).await;
        raw.handshake().await;
        // Not reading while the flood runs.
        let go = DataPacketWriter::notify("Flood.Go", None).unwrap();
        raw.send(&go.finish(1024).unwrap()).await;
        let (accepted, refused) = timeout(T, done.recv())
            .await
            .expect("the flood ran")
            .unwrap();
        assert_eq!(accepted + refused, ATTEMPTS);
        assert!(
            refused > 0,
            "{via:?}: the queue filled (nothing was refused)"
        );
        // Now read: every accepted push arrives, then the answer to a later request.
        raw.send(&request_packet(7, "Flood.Echo", b"7", None)).await;
        let mut pushes = 0;
        loop {
            let p = raw
                .next()
                .await
                .unwrap_or_else(|| panic!("{via:?}: closed after {pushes} pushes"));
            assert_eq!(p.kind, PacketType::Data);
            let m = Message::decode(p.body, None).unwrap();
            match m.kind {
                MessageType::Push => {
                    assert_eq!(m.route.as_deref(), Some("onFlood"));
                    pushes += 1;
                }
                MessageType::Response => {
                    assert_eq!((m.id, &m.payload[..]), (7, &b"7"[..]), "{via:?}");
                    break;
                }
                other => panic!("{via:?}: {other:?}"),
            }
        }
        assert_eq!(
            pushes, accepted,
            "{via:?}: every accepted push arrived, the refused ones were dropped"
        );
        open.push(raw);
        assert_eq!(
            server.sessions(),
            open.len(),
            "{via:?}: the connection stayed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_queue_answers_a_hundred_pipelined_requests_in_order() {
    // Disconnect (the default policy): a reply that did not fit would end the connection.
    let (server, _done) = server(4, FullQueuePolicy::Disconnect).await;
    for via in BOTH {
        let mut raw = raw(&server, via).await;
        raw.handshake().await;
        let mut batch = Vec::new();
        for id in 1..=100u64 {
            batch.extend_from_slice(&request_packet(
                id,
                "Flood.Echo",
                id.to_string().as_bytes(),
                None,
            ));
        }
        raw.send(&batch).await;
        for id in 1..=100u64 {
            let p = raw
                .next()
                .await
                .unwrap_or_else(|| panic!("{via:?}: closed before the answer to {id}"));
            let m = Message::decode(p.body, None).unwrap();
            assert_eq!(m.kind, MessageType::Response);
            assert_eq!(m.id, id, "{via:?}");
            assert_eq!(&m.payload[..], id.to_string().as_bytes());
        }
    }
}
