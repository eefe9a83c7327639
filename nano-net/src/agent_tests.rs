//! The agent's teardown guard and its pre-handshake bounds, with scripted and real sources and
//! the real codec.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{Packet, PacketType};
use nano_core::{Group, Json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::serve;
use crate::config::ServerConfig;
use crate::ctx::ServerCtx;
use crate::transport::{PacketSink, PacketSource, Progress, TcpSource};

const T: Duration = Duration::from_secs(10);

fn ctx(config: ServerConfig) -> Arc<ServerCtx<Json>> {
    let engine = nano_core::EngineBuilder::<Json>::new().build().unwrap();
    Arc::new(ServerCtx::new(engine, config))
}

fn handshake_bytes() -> Vec<u8> {
    let hs = Packet::new(PacketType::Handshake, r#"{"sys":{"type":"test"}}"#)
        .encode()
        .unwrap();
    let ack = Packet::new(PacketType::HandshakeAck, Bytes::new())
        .encode()
        .unwrap();
    [&hs[..], &ack[..]].concat()
}

/// What a scripted read does.
enum Step {
    Bytes(Vec<u8>),
    /// Tells the test the read was reached (the session is registered by then), waits for
    /// its go, then panics.
    Panic(
        mpsc::UnboundedSender<()>,
        tokio::sync::oneshot::Receiver<()>,
    ),
    /// Tells the test, then never completes.
    Hang(mpsc::UnboundedSender<()>),
}

struct Script(VecDeque<Step>);

impl PacketSource for Script {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self.0.pop_front() {
            Some(Step::Bytes(b)) => {
                buf.extend_from_slice(&b);
                Ok(b.len())
            }
            Some(Step::Panic(reached, go)) => {
                let _ = reached.send(());
                let _ = go.await;
                panic!("a panic on the connection's task");
            }
            Some(Step::Hang(reached)) => {
                let _ = reached.send(());
                std::future::pending().await
            }
            None => Ok(0),
        }
    }

    fn limit_reads(&mut self, _max: Option<usize>) {}
}

/// Accepts everything.
struct Sink;

impl PacketSink for Sink {
    async fn send_batch_tracked(
        &mut self,
        _batch: &[Bytes],
        progress: &Progress,
    ) -> io::Result<()> {
        progress.mark();
        Ok(())
    }

    async fn shutdown_tracked(
        &mut self,
        _error: Option<String>,
        _progress: &Progress,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Starts a connection that shakes hands, then reaches `last`; returns its task once `last`
/// was reached, with the registered session in a group.
async fn registered_then(
    ctx: &Arc<ServerCtx<Json>>,
    last: impl FnOnce(mpsc::UnboundedSender<()>) -> Step,
) -> (
    tokio::task::JoinHandle<()>,
    nano_core::Session<Json>,
    Group<Json>,
) {
    let (tx, mut reached) = mpsc::unbounded_channel();
    let script = Script(VecDeque::from([Step::Bytes(handshake_bytes()), last(tx)]));
    let task = tokio::spawn(serve(
        ctx.clone(),
        script,
        Sink,
        ([127, 0, 0, 1], 9).into(),
        crate::server::Transport::Tcp,
    ));
    tokio::time::timeout(T, reached.recv())
        .await
        .expect("the read after the handshake");
    let sessions = ctx.sessions();
    assert_eq!(sessions.len(), 1, "registered before the read");
    let group = Group::new("g");
    group.add(&sessions[0]).unwrap();
    (task, sessions[0].clone(), group)
}

#[tokio::test]
async fn a_panic_unwinding_out_of_the_connection_task_still_tears_the_session_down() {
    let ctx = ctx(ServerConfig::default());
    let (go, wait) = tokio::sync::oneshot::channel();
    let (task, session, group) = registered_then(&ctx, |r| Step::Panic(r, wait)).await;
    go.send(()).unwrap();
    let joined = tokio::time::timeout(T, task).await.unwrap();
    assert!(
        joined.unwrap_err().is_panic(),
        "the panic unwound out of serve"
    );
    assert_eq!(ctx.session_count(), 0, "unregistered");
    assert!(session.is_closed(), "closed");
    assert_eq!(group.count(), 0, "left its groups (Session::closed ran)");
    // The connection's state is ended: nothing more is queued for it.
    assert!(session.push("late", &1).is_err());
}

#[tokio::test]
async fn a_dropped_connection_task_still_tears_the_session_down() {
    let ctx = ctx(ServerConfig::default());
    let (task, session, group) = registered_then(&ctx, Step::Hang).await;
    task.abort();
    assert!(tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap_err()
        .is_cancelled());
    assert_eq!(ctx.session_count(), 0, "unregistered");
    assert!(session.is_closed());
    assert_eq!(group.count(), 0);
    assert!(session.push("late", &1).is_err());
}

/// The real TCP source, recording the largest buffer the agent reads into.
struct Spy {
    inner: TcpSource,
    largest: Arc<AtomicUsize>,
}

impl PacketSource for Spy {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // On entry: what the decoder left (and reserved); after: what the read allocated.
        self.largest.fetch_max(buf.capacity(), Ordering::Relaxed);
        let r = self.inner.read_into(buf).await;
        self.largest.fetch_max(buf.capacity(), Ordering::Relaxed);
        r
    }

    fn limit_reads(&mut self, max: Option<usize>) {
        self.inner.limit_reads(max);
    }
}

/// Serves one real TCP connection through a [`Spy`]; returns the client side, the largest
/// buffer seen, and the connection's task.
async fn spied(
    ctx: &Arc<ServerCtx<Json>>,
) -> (
    tokio::net::TcpStream,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, remote) = listener.accept().await.unwrap();
    let (r, w) = stream.into_split();
    let largest = Arc::new(AtomicUsize::new(0));
    let source = Spy {
        inner: TcpSource::new(r),
        largest: largest.clone(),
    };
    let task = tokio::spawn(serve(
        ctx.clone(),
        source,
        crate::transport::StreamSink(w),
        remote,
        crate::server::Transport::Tcp,
    ));
    (client, largest, task)
}

#[tokio::test]
async fn before_the_handshake_a_connection_holds_a_few_kib_whatever_it_sends() {
    let ctx = ctx(ServerConfig::default());
    let cap = ctx.config.max_handshake_size;
    let (mut client, largest, task) = spied(&ctx).await;
    // 256 KiB of heartbeats (allowed before the handshake) in one burst, then a Handshake
    // header announcing the most allowed, and only part of its body.
    let hb = Packet::heartbeat().encode().unwrap();
    let burst: Vec<u8> = hb.iter().copied().cycle().take(256 * 1024).collect();
    client.write_all(&burst).await.unwrap();
    let len = cap;
    client
        .write_all(&[1, (len >> 16) as u8, (len >> 8) as u8, len as u8])
        .await
        .unwrap();
    client.write_all(&[b' '; 100]).await.unwrap();
    // Wait until the server has read everything sent: it then holds the partial handshake.
    let sent = burst.len() + 4 + 100;
    let deadline = tokio::time::Instant::now() + T;
    while largest.load(Ordering::Relaxed) < cap {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reserved the body"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let held = largest.load(Ordering::Relaxed);
    assert!(
        held <= 2 * cap,
        "{held} bytes held before the handshake ({sent} sent)"
    );
    assert!(!task.is_finished());
    task.abort();

    // A header announcing 64 KiB is refused from the header alone: the connection closes
    // before anything is reserved for it.
    let (mut client, largest, task) = spied(&ctx).await;
    client.write_all(&[1, 0x01, 0x00, 0x00]).await.unwrap();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(largest.load(Ordering::Relaxed) <= 2 * cap);
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(T, tokio::io::AsyncReadExt::read(&mut client, &mut b))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed");
}
