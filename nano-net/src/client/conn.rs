//! The running connection: shared state, the handshake exchange and the background tasks
//! (reader, writer, heartbeat).
//!
//! ```text
//!  Client handles ──request/notify──► mpsc<Bytes> ──► writer task ──► socket
//!        ▲  pending map (id → oneshot)                 (batches queued packets)
//!        └──────────── reader task ◄── socket (PacketCodec over a byte buffer)
//!                         │  responses → pending, pushes → subscribers,
//!                         └─ Kick / EOF / error → finish(event)
//!  heartbeat task: a Heartbeat every interval; closes when the server is silent for 2 × interval
//! ```
//!
//! [`Inner::finish`] ends the connection exactly once: it records the [`ClientEvent`], fails
//! every pending request (their senders are dropped), ends the push streams and cancels the
//! tasks; the writer then flushes what is queued and shuts the socket down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{Message, MessageType, Packet, PacketCodec, PacketType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ws::{self, WsRead, WsWrite};
use super::{ClientError, ClientEvent, HandshakeInfo};

/// Bytes reserved in the read buffer before each socket read.
const READ_CHUNK: usize = 16 * 1024;
/// A write batch stops growing once it holds this many bytes.
const MAX_BATCH: usize = 64 * 1024;
/// Capacity of the outgoing packet queue (senders wait when it is full).
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// How long the writer waits for the reader to explain a write error (Kick, EOF) before
/// reporting the write error itself.
const WRITE_ERROR_GRACE: Duration = Duration::from_millis(500);
/// Bound on flushing queued packets and shutting the socket down at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// The heartbeat task never ticks faster or slower than these, whatever the server says.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// A heartbeat packet.
const HEARTBEAT: &[u8] = &[PacketType::Heartbeat as u8, 0, 0, 0];
/// A handshake-ack packet.
const HANDSHAKE_ACK: &[u8] = &[PacketType::HandshakeAck as u8, 0, 0, 0];

/// Locks a mutex, ignoring poisoning (no code panics while holding these locks).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Any byte stream we can speak over (TCP, TLS over TCP).
pub(crate) trait IoStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> IoStream for T {}

/// A boxed byte stream.
pub(crate) type BoxIo = Box<dyn IoStream>;

/// The receiving half of a transport.
pub(crate) enum ReadHalf {
    /// A byte stream (TCP or TLS).
    Io(Box<dyn AsyncRead + Send + Unpin>),
    /// WebSocket binary frames.
    Ws(WsRead),
}

/// The sending half of a transport.
pub(crate) enum WriteHalf {
    /// A byte stream (TCP or TLS).
    Io(Box<dyn AsyncWrite + Send + Unpin>),
    /// WebSocket binary frames (one frame per write batch).
    Ws(WsWrite),
}

impl ReadHalf {
    /// Appends received bytes to `buf`; `Ok(false)` when the peer ended the stream.
    /// Cancel-safe.
    async fn read_more(&mut self, buf: &mut BytesMut) -> Result<bool, ClientError> {
        match self {
            ReadHalf::Io(r) => {
                buf.reserve(READ_CHUNK);
                Ok(r.read_buf(buf).await? != 0)
            }
            ReadHalf::Ws(r) => ws::read_more(r, buf).await,
        }
    }
}

impl WriteHalf {
    /// Writes (and flushes) whole packets.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match self {
            WriteHalf::Io(w) => {
                w.write_all(bytes).await?;
                w.flush().await?;
                Ok(())
            }
            WriteHalf::Ws(w) => ws::write(w, bytes).await,
        }
    }

    /// Ends the stream politely (TCP FIN / TLS close_notify / WebSocket close frame).
    async fn shutdown(&mut self) {
        match self {
            WriteHalf::Io(w) => {
                let _ = w.shutdown().await;
            }
            WriteHalf::Ws(w) => ws::shutdown(w).await,
        }
    }
}

/// Sends our handshake, reads the server's answer and acknowledges it.
///
/// Bytes received after the answer stay in `buf` for the reader task.
pub(crate) async fn handshake(
    r: &mut ReadHalf,
    w: &mut WriteHalf,
    codec: &mut PacketCodec,
    buf: &mut BytesMut,
    request: &serde_json::Value,
) -> Result<HandshakeInfo, ClientError> {
    let body = serde_json::to_vec(request)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the handshake: {e}")))?;
    let packet = Packet::new(PacketType::Handshake, body)
        .encode()
        .map_err(|e| ClientError::Protocol(format!("cannot encode the handshake: {e}")))?;
    w.write(&packet).await?;
    loop {
        while let Some(p) = codec
            .decode(buf)
            .map_err(|e| ClientError::Protocol(format!("bad packet from the server: {e}")))?
        {
            match p.kind {
                PacketType::Handshake => {
                    let info = HandshakeInfo::parse(&p.body)?;
                    if info.code != 200 {
                        return Err(ClientError::Handshake {
                            code: info.code,
                            body: info.raw,
                        });
                    }
                    w.write(HANDSHAKE_ACK).await?;
                    return Ok(info);
                }
                PacketType::Heartbeat => {}
                PacketType::Kick => {
                    return Err(ClientError::Protocol(format!(
                        "kicked during the handshake: {}",
                        String::from_utf8_lossy(&p.body)
                    )))
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {other:?} packet before the handshake answer"
                    )))
                }
            }
        }
        if !r.read_more(buf).await? {
            return Err(ClientError::Closed);
        }
    }
}

/// What a pending request receives: the response payload and its error flag.
pub(crate) struct Reply {
    /// Error flag (`0x20`): the payload is an error object.
    pub(crate) error: bool,
    /// The response payload.
    pub(crate) payload: Bytes,
}

/// Requests waiting for their response.
#[derive(Default)]
pub(crate) struct Pending {
    /// id → where to deliver the response, and the request's packet (sent again when the
    /// session resumes on a new connection before the server got it).
    pub(crate) map: HashMap<u64, (oneshot::Sender<Reply>, Bytes)>,
    /// Set by `finish`: no new entries are accepted.
    closed: bool,
}

/// Push subscribers.
#[derive(Default)]
struct Subscribers {
    /// route → subscribers of that route.
    routes: HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>,
    /// Subscribers of every push.
    any: Vec<mpsc::UnboundedSender<(String, Bytes)>>,
    /// Set by `finish`: new subscribers get an ended stream.
    closed: bool,
}

/// The tasks of one connection of the client's session.
#[derive(Clone, Default)]
pub(crate) struct ConnCtl {
    /// Cancelled when this connection ends (a child of the client's `shutdown`).
    pub(crate) done: CancellationToken,
    /// Cancelled when its writer task has exited.
    pub(crate) writer_done: CancellationToken,
}

/// State shared by the client handles and the background tasks.
pub(crate) struct Inner {
    /// Outgoing packets, to the writer task of the current connection.
    tx: mpsc::Sender<Bytes>,
    /// The other end of `tx` while no writer holds it (between connections).
    pub(crate) rx_slot: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// The current connection's tasks.
    pub(crate) conn: Mutex<ConnCtl>,
    pub(crate) pending: Mutex<Pending>,
    subs: Mutex<Subscribers>,
    /// Next request id (starts at 1).
    next_id: AtomicU64,
    /// How the connection ended (set once, before `shutdown` is cancelled).
    event: OnceLock<ClientEvent>,
    /// Cancelled when the connection ends.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the writer task has shut the socket down and exited.
    pub(crate) writer_done: CancellationToken,
    /// Heartbeat packets received.
    heartbeats: AtomicU64,
    /// Reference point of `last_recv_ms`.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last read from the socket.
    last_recv_ms: AtomicU64,
    /// The server's handshake answer.
    pub(crate) handshake: HandshakeInfo,
    /// Per-request timeout.
    pub(crate) request_timeout: Duration,
    /// Limit on packet bodies, both directions.
    pub(crate) max_packet_size: usize,
    /// Data packets (responses and pushes) received in the session, over its connections.
    pub(crate) received: AtomicU64,
    /// How to reconnect and resume, when the server resumes sessions.
    pub(crate) resume: Mutex<Option<super::resume::Resumable>>,
    /// Subscribers of connection events.
    pub(crate) watchers: Mutex<Vec<mpsc::UnboundedSender<super::ConnectionEvent>>>,
}

impl Inner {
    /// Creates the shared state; returns the writer's end of the packet queue too.
    pub(crate) fn new(
        handshake: HandshakeInfo,
        request_timeout: Duration,
        max_packet_size: usize,
    ) -> (Arc<Inner>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let inner = Inner {
            tx,
            rx_slot: Mutex::new(None),
            conn: Mutex::default(),
            received: AtomicU64::new(0),
            resume: Mutex::new(None),
            watchers: Mutex::new(Vec::new()),
            pending: Mutex::default(),
            subs: Mutex::default(),
            next_id: AtomicU64::new(1),
            event: OnceLock::new(),
            shutdown: CancellationToken::new(),
            writer_done: CancellationToken::new(),
            heartbeats: AtomicU64::new(0),
            epoch: Instant::now(),
            last_recv_ms: AtomicU64::new(0),
            handshake,
            request_timeout,
            max_packet_size,
        };
        (Arc::new(inner), rx)
    }

    /// Starts the reader, writer and (when `heartbeat` is given) heartbeat tasks of a
    /// connection.
    pub(crate) fn spawn_tasks(
        self: &Arc<Self>,
        r: ReadHalf,
        w: WriteHalf,
        rx: mpsc::Receiver<Bytes>,
        codec: PacketCodec,
        buf: BytesMut,
        heartbeat: Option<Duration>,
    ) {
        let ctl = ConnCtl {
            done: self.shutdown.child_token(),
            writer_done: CancellationToken::new(),
        };
        *lock(&self.conn) = ctl.clone();
        self.touch();
        tokio::spawn(reader_task(Arc::clone(self), ctl.clone(), r, codec, buf));
        tokio::spawn(writer_task(Arc::clone(self), ctl.clone(), w, rx));
        if let Some(interval) = heartbeat {
            let interval = interval.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
            tokio::spawn(heartbeat_task(Arc::clone(self), ctl, interval));
        }
    }

    /// Connection `ctl` was lost without a Kick: the session is resumed on a new connection
    /// when the server offered it (and the client did not opt out), else the client ends with
    /// `event`.
    pub(crate) fn lost(self: &Arc<Self>, ctl: &ConnCtl, event: ClientEvent) {
        if self.is_closed() || ctl.done.is_cancelled() {
            return;
        }
        let resumable = lock(&self.resume).clone();
        match resumable {
            Some(r) => {
                ctl.done.cancel();
                self.tell(super::ConnectionEvent::Lost(event.clone()));
                tokio::spawn(super::resume::reconnect(
                    Arc::clone(self),
                    ctl.clone(),
                    r,
                    event,
                ));
            }
            _ => self.finish(event),
        }
    }

    /// Tells the subscribers of connection events.
    pub(crate) fn tell(&self, event: super::ConnectionEvent) {
        lock(&self.watchers).retain(|w| w.send(event.clone()).is_ok());
    }

    /// A new subscriber of connection events.
    pub(crate) fn watch(&self) -> mpsc::UnboundedReceiver<super::ConnectionEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.watchers).push(tx);
        rx
    }

    /// A fresh request id.
    #[inline]
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers request `id`; `Closed` if the connection has ended.
    #[inline]
    pub(crate) fn register(
        &self,
        id: u64,
        packet: &Bytes,
    ) -> Result<oneshot::Receiver<Reply>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if pending.closed {
            return Err(ClientError::Closed);
        }
        pending.map.insert(id, (tx, packet.clone()));
        Ok(rx)
    }

    /// Forgets request `id` (timed out or abandoned).
    #[inline]
    pub(crate) fn unregister(&self, id: u64) {
        lock(&self.pending).map.remove(&id);
    }

    /// Queues a packet for the writer; waits while the queue is full.
    pub(crate) async fn enqueue(&self, packet: Bytes) -> Result<(), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        tokio::select! {
            sent = self.tx.send(packet) => sent.map_err(|_| ClientError::Closed),
            () = self.shutdown.cancelled() => Err(ClientError::Closed),
        }
    }

    /// `true` once the connection has ended.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// How the connection ended, once it has.
    pub(crate) fn event(&self) -> Option<ClientEvent> {
        self.event.get().cloned()
    }

    /// Heartbeats received so far.
    pub(crate) fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// A new subscriber of the pushes of `route`.
    pub(crate) fn subscribe(&self, route: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = lock(&self.subs);
        if !subs.closed {
            subs.routes.entry(route.to_owned()).or_default().push(tx);
        }
        rx
    }

    /// A new subscriber of every push.
    pub(crate) fn subscribe_any(&self) -> mpsc::UnboundedReceiver<(String, Bytes)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = lock(&self.subs);
        if !subs.closed {
            subs.any.push(tx);
        }
        rx
    }

    /// Ends the connection with `event` (only the first call has an effect).
    pub(crate) fn finish(&self, event: ClientEvent) {
        if self.event.set(event).is_err() {
            return;
        }
        tracing::debug!(event = ?self.event.get(), "nano client connection ended");
        // Dropping the senders fails the waiting requests with `Closed` right away.
        let pending = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.map)
        };
        drop(pending);
        let subs = {
            let mut subs = lock(&self.subs);
            subs.closed = true;
            (
                std::mem::take(&mut subs.routes),
                std::mem::take(&mut subs.any),
            )
        };
        drop(subs);
        lock(&self.watchers).clear();
        self.shutdown.cancel();
    }

    /// Records that bytes arrived (liveness).
    #[inline]
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_recv_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since bytes last arrived.
    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_recv_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Handles one packet from the server; `Err` ends the connection with that event.
    fn dispatch(&self, packet: Packet) -> Result<(), ClientEvent> {
        match packet.kind {
            PacketType::Data => {
                self.received.fetch_add(1, Ordering::Relaxed);
                self.dispatch_message(packet.body)
            }
            PacketType::Heartbeat => {
                self.heartbeats.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            PacketType::Kick => Err(ClientEvent::Kicked {
                reason: kick_reason(&packet.body),
            }),
            other => Err(ClientEvent::Error(format!(
                "unexpected {other:?} packet from the server after the handshake"
            ))),
        }
    }

    /// Handles a data packet: a response or a push.
    fn dispatch_message(&self, body: Bytes) -> Result<(), ClientEvent> {
        let msg = Message::decode(body, self.handshake.dict.as_ref())
            .map_err(|e| ClientEvent::Error(format!("bad message from the server: {e}")))?;
        match msg.kind {
            MessageType::Response => {
                let waiter = lock(&self.pending).map.remove(&msg.id);
                match waiter {
                    Some((tx, _)) => {
                        // The requester may have given up in the meantime.
                        let _ = tx.send(Reply {
                            error: msg.error,
                            payload: msg.payload,
                        });
                    }
                    None => tracing::debug!(id = msg.id, "response to no pending request"),
                }
                Ok(())
            }
            MessageType::Push => {
                let Some(route) = msg.route else {
                    return Err(ClientEvent::Error("push without a route".into()));
                };
                self.deliver_push(&route, msg.payload);
                Ok(())
            }
            kind => Err(ClientEvent::Error(format!(
                "unexpected {kind:?} message from the server"
            ))),
        }
    }

    /// Hands a push to the subscribers of its route and to the catch-all subscribers.
    fn deliver_push(&self, route: &str, payload: Bytes) {
        let mut subs = lock(&self.subs);
        let mut delivered = false;
        if let Some(list) = subs.routes.get_mut(route) {
            list.retain(|tx| tx.send(payload.clone()).is_ok());
            delivered = !list.is_empty();
            if list.is_empty() {
                subs.routes.remove(route);
            }
        }
        if !subs.any.is_empty() {
            subs.any
                .retain(|tx| tx.send((route.to_owned(), payload.clone())).is_ok());
            delivered |= !subs.any.is_empty();
        }
        if !delivered {
            tracing::trace!(route, "push without subscribers dropped");
        }
    }
}

/// The reason of a Kick: empty body (nano) → `None`; `{"reason": …}` (pomelo) → the reason;
/// anything else → the body as text.
fn kick_reason(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => match map.get("reason") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        },
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => Some(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Reads and dispatches packets until the connection ends.
async fn reader_task(
    inner: Arc<Inner>,
    ctl: ConnCtl,
    mut r: ReadHalf,
    mut codec: PacketCodec,
    mut buf: BytesMut,
) {
    // `fatal`: what the server sent ends the session (a Kick, or data we cannot read), unlike
    // a lost connection.
    let (event, fatal) = 'conn: loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    if let Err(event) = inner.dispatch(packet) {
                        break 'conn (event, true);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    break 'conn (
                        ClientEvent::Error(format!("bad packet from the server: {e}")),
                        true,
                    )
                }
            }
        }
        let read = tokio::select! {
            read = r.read_more(&mut buf) => read,
            () = ctl.done.cancelled() => return,
        };
        match read {
            Ok(true) => inner.touch(),
            Ok(false) => break (ClientEvent::Disconnected, false),
            Err(e) => break (ClientEvent::Error(e.to_string()), false),
        }
    };
    if fatal {
        inner.finish(event);
    } else {
        inner.lost(&ctl, event);
    }
}

/// Writes queued packets in batches; at the end of the client flushes the queue and shuts the
/// socket down. When only this connection ends, the queue waits in `rx_slot` for the next.
async fn writer_task(
    inner: Arc<Inner>,
    ctl: ConnCtl,
    mut w: WriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut batch = BytesMut::new();
    // A packet taken from the queue that did not fit in the previous batch.
    let mut carry: Option<Bytes> = None;
    let mut graceful = true;
    loop {
        let first = match carry.take() {
            Some(first) => Some(first),
            None => tokio::select! {
                biased;
                first = rx.recv() => first,
                () = ctl.done.cancelled() => None,
            },
        };
        let Some(first) = first else { break };
        let write = async {
            if rx.is_empty() {
                w.write(&first).await
            } else {
                carry = fill_batch(&mut batch, first, &mut rx);
                w.write(&batch).await
            }
        };
        // A write stuck on a peer that stopped reading is abandoned shortly after the end.
        let stuck = async {
            ctl.done.cancelled().await;
            if !inner.is_closed() {
                return; // only this connection ended: its socket is gone
            }
            tokio::time::sleep(SHUTDOWN_TIMEOUT).await;
        };
        let result = tokio::select! {
            result = write => result,
            () = stuck => {
                graceful = false;
                break;
            }
        };
        if let Err(e) = result {
            // A write usually fails because the server closed: let the reader report how
            // (Kick, EOF) before reporting the write error.
            let _ = tokio::time::timeout(WRITE_ERROR_GRACE, ctl.done.cancelled()).await;
            inner.lost(&ctl, ClientEvent::Error(format!("write failed: {e}")));
            graceful = false;
            break;
        }
    }
    if !inner.is_closed() {
        // The connection was lost, not the client: the queue waits for the next one (a
        // packet taken from it is dropped with the socket, as those written to it were).
        drop(w);
        *lock(&inner.rx_slot) = Some(rx);
        ctl.writer_done.cancel();
        return;
    }
    if graceful {
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
            while let Some(first) = carry.take().or_else(|| rx.try_recv().ok()) {
                carry = fill_batch(&mut batch, first, &mut rx);
                if w.write(&batch).await.is_err() {
                    return;
                }
            }
            w.shutdown().await;
        })
        .await;
    }
    drop(w);
    ctl.writer_done.cancel();
    inner.writer_done.cancel();
}

/// Puts `first` and as many queued packets as fit in [`MAX_BATCH`] bytes into `batch`
/// (`first` always, even if larger). Returns a packet taken from the queue that did not fit.
fn fill_batch(batch: &mut BytesMut, first: Bytes, rx: &mut mpsc::Receiver<Bytes>) -> Option<Bytes> {
    batch.clear();
    batch.extend_from_slice(&first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(more) if batch.len() + more.len() > MAX_BATCH => return Some(more),
            Ok(more) => batch.extend_from_slice(&more),
            Err(_) => break,
        }
    }
    None
}

/// Sends a heartbeat every `interval`; ends the connection when the server has been silent
/// for 2 × `interval`.
async fn heartbeat_task(inner: Arc<Inner>, ctl: ConnCtl, interval: Duration) {
    let start = tokio::time::Instant::now() + interval;
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_after = interval.saturating_mul(2);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = ctl.done.cancelled() => return,
        }
        let silent = inner.silent_for();
        if silent > dead_after {
            inner.lost(
                &ctl,
                ClientEvent::Error(format!(
                    "heartbeat timeout: the server was silent for {silent:?}"
                )),
            );
            return;
        }
        // A full queue means packets are flowing anyway, and any packet counts as liveness.
        match inner.tx.try_send(Bytes::from_static(HEARTBEAT)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
