//! The per-connection agent: handshake, read loop, and the batched writer. (Heartbeats and the
//! liveness check are the sweeper's, in `heartbeat`.)
//!
//! ```text
//! socket ─read─▶ PacketCodec ─▶ Engine::handle_data ─▶ scheduler ─▶ Session ─▶ ConnState
//!                                                                              │ outbox
//! socket ◀─write/writev/frame── the same task, after each read or when woken ◀─┘
//! ```

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{Packet, PacketCodec, PacketType};
use nano_core::{Link, SendError, Serializer, Session};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::metrics::NetMetrics;
use crate::config::{FullQueuePolicy, HandshakeRequest, ServerConfig};
use crate::ctx::ServerCtx;
use crate::outbox::{Outbox, PushError};
use crate::resume::{Detached, ResumeLink, Resuming};
use crate::server::Transport;
use crate::transport::{bounded_write, PacketSink, PacketSource, Progress, Stalled};

/// How the connection should end.
#[derive(Debug, Clone)]
enum Ending {
    /// Flush, then close.
    Close,
    /// Flush, send Kick (with an optional reason), then close.
    Kick(Option<String>),
    /// Protocol error: flush, close (WebSocket: close frame with the reason).
    ProtocolError(String),
}

/// What the connection's task shares with the rest of the server: it is the session's link
/// (the bounded outbound queue drained by the task), and what the heartbeat sweeper watches.
#[repr(C)] // hot fields first (see `Outbox`)
pub(crate) struct ConnState {
    closing: AtomicBool,
    /// Whether a packet arrived since the heartbeat sweeper last looked.
    heard: AtomicBool,
    /// Outbound packets; its wake-up is the task's one event source besides the socket.
    outbox: Outbox,
    ending: Mutex<Option<Ending>>,
    /// Stops everything at once (abort, or closing finished).
    kill: CancellationToken,
    /// A line at info level or louder was traced about this connection's end: one is enough.
    reported: AtomicBool,
    remote: SocketAddr,
    policy: FullQueuePolicy,
    transport: Transport,
    /// When the connection was accepted (wall clock, for the monitor page) ...
    connected_at: SystemTime,
    /// ... and on the monotonic clock, which `last_read_ms` counts from.
    since: std::time::Instant,
    /// When bytes last arrived, in milliseconds since `since`.
    last_read_ms: AtomicU64,
    /// Why the connection ended: the first cause noted wins.
    cause: OnceLock<&'static str>,
    /// The server's transport metrics, when they are on.
    metrics: Option<Arc<NetMetrics>>,
}

impl ConnState {
    fn new(
        config: &ServerConfig,
        remote: SocketAddr,
        transport: Transport,
        metrics: Option<Arc<NetMetrics>>,
    ) -> Self {
        ConnState {
            transport,
            connected_at: SystemTime::now(),
            since: std::time::Instant::now(),
            last_read_ms: AtomicU64::new(0),
            cause: OnceLock::new(),
            metrics,
            outbox: Outbox::new(config.send_queue, config.send_queue_bytes),
            heard: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            ending: Mutex::new(None),
            kill: CancellationToken::new(),
            reported: AtomicBool::new(false),
            remote,
            policy: config.on_full_queue,
        }
    }

    /// A connection without a socket, for unit tests of what watches it.
    #[cfg(test)]
    pub(crate) fn for_test() -> Self {
        let config = ServerConfig {
            send_queue: 16,
            ..ServerConfig::default()
        };
        ConnState::new(&config, ([127, 0, 0, 1], 0).into(), Transport::Tcp, None)
    }

    /// Takes what is queued (tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> Vec<Bytes> {
        let mut batch = Vec::new();
        self.outbox.take(&mut batch, usize::MAX);
        batch
    }

    /// Whether the connection is ending (kicked, closed or aborted).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The peer's address.
    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The connection's transport.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// When it was accepted.
    pub(crate) fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// How long it has been open, and how long since bytes last arrived.
    pub(crate) fn ages(&self) -> (Duration, Duration) {
        let open = self.since.elapsed();
        let read = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        (open, open.saturating_sub(read))
    }

    /// Packets waiting in its send queue.
    pub(crate) fn queue_len(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes arrived (`n` of them).
    fn heard_bytes(&self, n: usize) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.traffic(self.transport).bytes_in.inc_by(n as u64);
        }
    }

    /// Notes why the connection ends, unless a cause was noted already.
    fn cause(&self, why: &'static str) {
        let _ = self.cause.set(why);
    }

    /// True the first time only: whoever traces why this connection ends at info level or
    /// louder asks first, so each connection's end is one line (later causes go to debug).
    pub(crate) fn report(&self) -> bool {
        !self.reported.swap(true, Ordering::AcqRel)
    }

    /// Completes once the connection is ending (kicked, closed or aborted).
    async fn ended(&self) {
        while !self.is_closing() {
            self.outbox.woken().await;
        }
    }

    /// A write accepted no byte for the whole write deadline: the connection is aborted.
    fn stalled(&self, write_timeout: Duration) {
        self.cause("write timeout");
        if self.report() {
            tracing::warn!(
                remote = %self.remote,
                reason = "write timeout",
                timeout = ?write_timeout,
                "write timeout: peer not reading, closing connection"
            );
        } else {
            tracing::debug!(remote = %self.remote, reason = "write timeout", "write timeout");
        }
        self.abort();
    }

    fn end(&self, how: Ending) {
        self.cause(match how {
            Ending::Close => "closed by server",
            Ending::Kick(_) => "kicked",
            Ending::ProtocolError(_) => "protocol error",
        });
        let mut e = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(how);
            self.closing.store(true, Ordering::Release);
            self.outbox.wake();
        }
    }

    /// The heartbeat found the peer silent, and its session can be resumed: the connection
    /// is closed (without a Kick, which would tell the client not to come back) and its
    /// session suspended.
    pub(crate) fn drop_silent(&self) {
        self.cause("heartbeat timeout");
        self.end(Ending::Close);
    }

    /// Stops the connection at once, without flushing.
    pub(crate) fn abort(&self) {
        self.closing.store(true, Ordering::Release);
        self.kill.cancel();
        self.outbox.wake();
    }

    /// A packet arrived (written only when it changes, to keep the line clean).
    pub(crate) fn mark_heard(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a packet arrived since the last call.
    pub(crate) fn take_heard(&self) -> bool {
        self.heard.swap(false, Ordering::Relaxed)
    }
}

impl Link for ConnState {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        match self.outbox.push(packet) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::Closed),
            Err(PushError::Full) => {
                match self.policy {
                    FullQueuePolicy::Disconnect => {
                        self.cause("send queue full");
                        if self.report() {
                            tracing::warn!(remote = %self.remote, reason = "send queue full", "send queue full: client not reading, disconnecting");
                        }
                        self.abort();
                    }
                    FullQueuePolicy::DropAndWarn => {
                        if let Some(m) = &self.metrics {
                            m.dropped();
                        }
                        tracing::warn!(remote = %self.remote, "send queue full: packet dropped");
                    }
                }
                Err(SendError::Full)
            }
        }
    }

    fn kick(&self, reason: Option<&str>) {
        self.end(Ending::Kick(reason.map(str::to_owned)));
    }

    fn close(&self) {
        self.end(Ending::Close);
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.remote)
    }
}

/// Serves one connection until it ends: one task reads, dispatches, and writes.
///
/// Every await is bounded or interruptible: reads wait alongside the outbox's wake-up (which
/// kick, close and abort ring), a dispatch waiting for the session's in-flight permit gives
/// way to the end of the connection, and every write runs under the write deadline and the
/// kill token. Whatever ends the task (a return, a panic unwinding out of user code run
/// here, or the task being dropped), [`Teardown`] unregisters the session, runs its
/// session-closed callbacks once and ends the connection's state.
///
/// It runs in the connection's span (`conn`, info level: `remote`, `transport`, and `session`
/// once the handshake is done), so everything traced about the connection carries them.
pub(crate) fn serve<S, R, W>(
    ctx: Arc<ServerCtx<S>>,
    source: R,
    sink: W,
    remote: SocketAddr,
    transport: Transport,
) -> impl Future<Output = ()>
where
    S: Serializer,
    R: PacketSource,
    W: PacketSink,
{
    // Not an `async fn`: a wrapper future would keep a second copy of the arguments in every
    // connection's task.
    let span = tracing::info_span!(
        "conn",
        %remote,
        transport = transport.as_str(),
        session = tracing::field::Empty,
    );
    serve_in_span(ctx, source, sink, remote, transport).instrument(span)
}

async fn serve_in_span<S, R, W>(
    ctx: Arc<ServerCtx<S>>,
    mut source: R,
    mut sink: W,
    remote: SocketAddr,
    transport: Transport,
) where
    S: Serializer,
    R: PacketSource,
    W: PacketSink,
{
    if ctx.dropped.is_cancelled() {
        return;
    }
    let state = Arc::new(ConnState::new(
        &ctx.config,
        remote,
        transport,
        ctx.net_metrics.clone(),
    ));
    let mut teardown = Teardown {
        ctx: ctx.clone(),
        state: state.clone(),
        session: None,
        link: None,
    };
    let outbox = &state.outbox;
    let close_timeout = ctx.config.shutdown_timeout;
    let write_timeout = ctx.config.write_timeout;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut buf = BytesMut::new();

    // Before the handshake completes: small packets only, small reads.
    let max_packet = ctx.engine.max_packet_size();
    let mut codec = PacketCodec::new(ctx.config.max_handshake_size.min(max_packet));
    source.limit_reads(Some(ctx.config.max_handshake_size));
    // Boxed: once per connection, it must not make every connection's task larger.
    let mut resuming = None;
    let shaken = Box::pin(handshake(
        &ctx,
        &mut source,
        &mut sink,
        &mut batch,
        &mut buf,
        &mut codec,
        &state,
        remote,
        &mut resuming,
    ))
    .await;
    if let Err(failure) = shaken {
        if let Some(Resuming::Resumed { link, .. }) = resuming {
            link.unclaim();
        }
        state.cause("handshake failed");
        match &failure {
            HandshakeFailure::Quiet(reason) => tracing::debug!(%remote, reason, "handshake failed"),
            HandshakeFailure::Refused(reason) => {
                if state.report() {
                    tracing::info!(%remote, reason, "handshake failed: closing connection");
                }
            }
        }
        let reason = failure.into_reason();
        state.end(Ending::ProtocolError(reason));
        close_early(&mut sink, &state, &mut teardown, batch).await;
        return;
    }
    codec = PacketCodec::new(max_packet);
    source.limit_reads(None);

    let (session, link) = match resuming {
        None => (ctx.engine.open_session(state.clone()), None),
        Some(resuming) => match open_resumable(&ctx, &state, resuming) {
            Some((session, link)) => (session, Some(link)),
            None => {
                // The claimed session ended while this connection shook hands.
                state.end(Ending::Kick(Some("session ended".into())));
                close_early(&mut sink, &state, &mut teardown, batch).await;
                return;
            }
        },
    };
    ctx.register(&session, &state);
    teardown.session = Some(session.clone());
    teardown.link = link.clone();
    tracing::Span::current().record("session", session.id());
    if ctx.dropped.is_cancelled() {
        // The server was dropped while this connection shook hands.
        state.abort();
    } else if ctx.shutting_down.is_cancelled() {
        // Shutdown took its list of sessions before this one was registered.
        session.kick_with_reason(Some("server shutting down"));
    }
    tracing::debug!(%remote, session = session.id(), "session opened");

    // The peer left on purpose (a WebSocket close frame, or a stream's FIN; see
    // `PacketSource::said_goodbye`): its session is not kept for it.
    let mut goodbye = false;
    let reason: Option<String> = 'conn: loop {
        // Everything already buffered first (pipelined packets).
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    state.mark_heard();
                    match packet.kind {
                        PacketType::Data => {
                            if let Some(m) = &state.metrics {
                                m.traffic(transport).messages_in.inc();
                            }
                            let dispatched = {
                                let mut data =
                                    std::pin::pin!(ctx.engine.handle_data(&session, packet.body));
                                // Usually done at once; waiting (for the session's in-flight
                                // permit) gives way to the end of the connection.
                                match poll_fn(|cx| Poll::Ready(data.as_mut().poll(cx))).await {
                                    Poll::Ready(r) => r,
                                    Poll::Pending => tokio::select! {
                                        biased;
                                        r = data => r,
                                        () = state.ended() => break 'conn None,
                                    },
                                }
                            };
                            if let Err(e) = dispatched {
                                break 'conn Some(e.to_string());
                            }
                            // A long pipelined burst: write replies as they pile up rather than
                            // after the whole burst, so the queue never fills from our side.
                            if outbox.half_full()
                                && !flush(&mut sink, &mut batch, &state, write_timeout).await
                            {
                                break 'conn None;
                            }
                        }
                        PacketType::Heartbeat => {}
                        other => break 'conn Some(format!("unexpected {other:?} packet")),
                    }
                }
                Ok(None) => break,
                Err(e) => break 'conn Some(e.to_string()),
            }
        }
        // Replies our own handlers produced just now: write them without a wake-up.
        if !outbox.is_empty() && !flush(&mut sink, &mut batch, &state, write_timeout).await {
            break None;
        }
        // From here until the select returns, packets queued by other tasks wake us.
        outbox.set_parked(true);
        if !outbox.is_empty() {
            outbox.set_parked(false);
            continue;
        }
        tokio::select! {
            biased;
            _ = outbox.woken() => {
                if state.closing.load(Ordering::Acquire) {
                    break None; // ended or aborted: close_out flushes what is queued
                }
                if !flush(&mut sink, &mut batch, &state, write_timeout).await {
                    break None;
                }
            }
            r = source.read_into(&mut buf) => match r {
                Ok(0) => {
                    state.cause("client closed");
                    goodbye = source.said_goodbye();
                    break None;
                }
                Ok(n) => state.heard_bytes(n),
                Err(e) if vanished(&e) => {
                    // The network, not the peer's protocol: a drop.
                    state.cause("read error");
                    tracing::debug!(%remote, error = %e, "read failed");
                    break None;
                }
                Err(e) => {
                    state.cause("read error");
                    break Some(e.to_string());
                }
            },
        }
        outbox.set_parked(false);
    };
    if let Some(reason) = &reason {
        if state.report() {
            tracing::info!(%remote, session = session.id(), reason, "protocol error: closing connection");
        }
        state.end(Ending::ProtocolError(reason.clone()));
    } else {
        state.end(Ending::Close);
    }
    if let Some(link) = &link {
        // A dropped connection (not a protocol error, not the server's kick or close, not
        // shutdown) suspends its session.
        let drop = reason.is_none()
            && !goodbye
            && !ctx.shutting_down.is_cancelled()
            && !ctx.dropped.is_cancelled();
        match link.detach(&state, drop) {
            Detached::Suspended(suspension) => {
                teardown.session = None;
                ctx.unregister(&session, &state);
                tracing::debug!(%remote, session = session.id(), cause = state.cause.get().copied().unwrap_or(""), "session suspended");
                session.suspend();
                tokio::spawn(crate::resume::watch(
                    ctx.clone(),
                    session.clone(),
                    link.clone(),
                    suspension,
                ));
            }
            Detached::NotCurrent => {
                teardown.session = None;
                ctx.unregister(&session, &state);
            }
            Detached::Close => {}
        }
    }
    teardown.close_session();
    // Boxed: the end of a connection must not make every connection's task larger.
    Box::pin(close_out(
        &mut sink,
        &state,
        close_timeout,
        write_timeout,
        batch,
    ))
    .await;
    teardown.finished();
    tracing::debug!(%remote, session = session.id(), "session closed");
}

/// The end of a connection that never served its session (the handshake failed, or the session
/// it resumed ended meanwhile): what is queued, the ending, then the teardown. Boxed: the end
/// of a connection must not make every connection's task larger.
async fn close_early<S: Serializer, W: PacketSink>(
    sink: &mut W,
    state: &ConnState,
    teardown: &mut Teardown<S>,
    batch: Vec<Bytes>,
) {
    let config = &teardown.ctx.config;
    let (close_timeout, write_timeout) = (config.shutdown_timeout, config.write_timeout);
    Box::pin(close_out(sink, state, close_timeout, write_timeout, batch)).await;
    teardown.finished();
}

/// The end of a connection that cannot be skipped: held by the connection's task, it does on
/// drop whatever the task did not get to (a panic unwinding out of user code run on the task,
/// or the task dropped by a runtime shutting down): the session is unregistered and its
/// session-closed callbacks run (once), the connection's state is ended (nothing more is
/// queued; a waiting producer sees it closed) and its queue released.
struct Teardown<S: Serializer> {
    ctx: Arc<ServerCtx<S>>,
    state: Arc<ConnState>,
    /// The registered session, until it has been closed (or suspended).
    session: Option<Session<S>>,
    /// Its link, when the session can be resumed.
    link: Option<Arc<ResumeLink>>,
}

impl<S: Serializer> Teardown<S> {
    /// Unregisters the session and runs its session-closed callbacks.
    fn close_session(&mut self) {
        if let Some(session) = self.session.take() {
            self.ctx.unregister(&session, &self.state);
            if let Some(link) = self.link.take() {
                if link.detach(&self.state, false) == Detached::NotCurrent {
                    return; // another connection serves it now
                }
                if let Some(resumer) = &self.ctx.resumer {
                    resumer.forget(&link);
                }
            }
            // Never let a panic out of here: this also runs in `drop`, maybe while unwinding.
            let closed = std::panic::catch_unwind(AssertUnwindSafe(|| session.closed()));
            if closed.is_err() {
                tracing::error!(session = session.id(), "a session-closed callback panicked");
            }
        }
    }

    /// The connection ended normally (its close was sent, or abandoned within its bound).
    fn finished(&mut self) {
        self.close_session();
        self.state.kill.cancel();
    }
}

impl<S: Serializer> Drop for Teardown<S> {
    fn drop(&mut self) {
        self.close_session();
        if let Some(m) = &self.state.metrics {
            m.disconnected(self.state.cause.get().copied().unwrap_or("aborted"));
        }
        if !self.state.kill.is_cancelled() {
            tracing::debug!(remote = %self.state.remote, "connection task ended abruptly");
            self.state.abort();
        }
        drop(self.state.outbox.close());
    }
}

const MAX_BATCH: usize = 256;

/// Whether a read error means the connection is gone (reset, aborted, timed out) rather than
/// that the peer broke the protocol.
fn vanished(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut | NotConnected
    )
}

/// Writes everything queued; false when the connection must stop (write error, write
/// deadline passed, or kill).
async fn flush<W: PacketSink>(
    sink: &mut W,
    batch: &mut Vec<Bytes>,
    state: &ConnState,
    write_timeout: Duration,
) -> bool {
    let progress = Progress::default();
    loop {
        state.outbox.take(batch, MAX_BATCH);
        if batch.is_empty() {
            return true;
        }
        if let Some(m) = &state.metrics {
            let traffic = m.traffic(state.transport);
            traffic.messages_out.inc_by(batch.len() as u64);
            let bytes: usize = batch.iter().map(Bytes::len).sum();
            traffic.bytes_out.inc_by(bytes as u64);
        }
        let send = sink.send_batch_tracked(batch, &progress);
        let r = bounded_write(send, &progress, write_timeout, Some(&state.kill)).await;
        batch.clear();
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(remote = %state.remote, error = %e, "write failed");
                state.cause("write error");
                state.abort();
                return false;
            }
            Err(Stalled::Killed) => return false,
            Err(Stalled::TimedOut) => {
                state.stalled(write_timeout);
                return false;
            }
        }
    }
}

/// Graceful end: what is queued, then the kick, then close (bounded by `close_timeout` in all,
/// and by the write deadline); nothing when killed.
async fn close_out<W: PacketSink>(
    sink: &mut W,
    state: &ConnState,
    close_timeout: Duration,
    write_timeout: Duration,
    mut batch: Vec<Bytes>,
) {
    batch.clear();
    batch.extend(state.outbox.close());
    if state.kill.is_cancelled() {
        return;
    }
    let ending = state
        .ending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or(Ending::Close);
    let mut error = None;
    match ending {
        Ending::Kick(reason) => {
            if let Some(m) = &state.metrics {
                m.kicked(reason.as_deref().unwrap_or("none"));
            }
            tracing::debug!(reason = reason.as_deref().unwrap_or(""), "kicked");
            // Always a JSON object, `{}` without a reason: go-nano's own JS client (starx)
            // parses the Kick body as JSON unguarded and throws on an empty one.
            let body = reason
                .map(|r| serde_json::json!({ "reason": r }).to_string())
                .unwrap_or_else(|| "{}".to_owned());
            if let Ok(p) = Packet::new(PacketType::Kick, body.into_bytes()).encode() {
                batch.push(p);
            }
        }
        Ending::ProtocolError(reason) => error = Some(reason),
        Ending::Close => {}
    }
    let progress = Progress::default();
    let close = async {
        if !batch.is_empty() {
            sink.send_batch_tracked(&batch, &progress).await?;
        }
        sink.shutdown_tracked(error, &progress).await
    };
    let bounded = bounded_write(close, &progress, write_timeout, Some(&state.kill));
    match tokio::time::timeout(close_timeout, bounded).await {
        Ok(Err(Stalled::TimedOut)) => state.stalled(write_timeout),
        Err(_) => tracing::debug!(remote = %state.remote, "close timeout"),
        Ok(_) => {}
    }
    state.kill.cancel();
}

/// The session of a connection whose server resumes sessions: a fresh one on a new link, or
/// the claimed one, with what it missed queued. `None` when the claimed session ended
/// meanwhile.
fn open_resumable<S: Serializer>(
    ctx: &ServerCtx<S>,
    state: &Arc<ConnState>,
    resuming: Resuming<S>,
) -> Option<(Session<S>, Arc<ResumeLink>)> {
    let resumer = ctx.resumer.as_ref()?;
    match resuming {
        Resuming::Fresh { token } => {
            let link = resumer.link(state.clone(), token);
            let session = ctx.engine.open_session(link.clone());
            resumer.insert(token, &session, &link);
            Some((session, link))
        }
        Resuming::Resumed {
            session,
            link,
            received,
        } => match link.attach(state, received) {
            Ok(replayed) => {
                tracing::debug!(
                    session = session.id(),
                    received,
                    replayed,
                    "session resumed"
                );
                session.resume();
                Some((session, link))
            }
            Err(_) => None,
        },
    }
}

/// Why a handshake did not complete.
enum HandshakeFailure {
    /// The peer left, timed out, or the server stopped it: traced at debug level.
    Quiet(String),
    /// The peer broke the protocol or was refused: traced once at info level.
    Refused(String),
}

impl HandshakeFailure {
    fn into_reason(self) -> String {
        match self {
            HandshakeFailure::Quiet(r) | HandshakeFailure::Refused(r) => r,
        }
    }
}

/// Reads the Handshake, answers it (written at once), and waits for the HandshakeAck.
#[allow(clippy::too_many_arguments)]
async fn handshake<S: Serializer, R: PacketSource, W: PacketSink>(
    ctx: &ServerCtx<S>,
    source: &mut R,
    sink: &mut W,
    batch: &mut Vec<Bytes>,
    buf: &mut BytesMut,
    codec: &mut PacketCodec,
    state: &ConnState,
    remote: SocketAddr,
    resuming: &mut Option<Resuming<S>>,
) -> Result<(), HandshakeFailure> {
    use HandshakeFailure::{Quiet, Refused};
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    let mut answered = false;
    loop {
        while let Some(packet) = codec
            .decode(buf)
            .map_err(|e| Refused(format!("before the handshake: {e}")))?
        {
            match (packet.kind, answered) {
                (PacketType::Handshake, false) => {
                    let (code, body, decided) = ctx.handshake_response(&packet.body, remote);
                    *resuming = decided;
                    let packet = Packet::new(PacketType::Handshake, body)
                        .encode()
                        .map_err(|e| Refused(e.to_string()))?;
                    state.send(packet).map_err(|e| Refused(e.to_string()))?;
                    if code != 200 {
                        return Err(Refused(format!("handshake refused with code {code}")));
                    }
                    if !flush(sink, batch, state, ctx.config.write_timeout).await {
                        return Err(Quiet("write failed during handshake".into()));
                    }
                    answered = true;
                }
                (PacketType::HandshakeAck, true) => return Ok(()),
                (PacketType::Heartbeat, _) => {}
                (kind, _) => {
                    return Err(Refused(format!(
                        "{kind:?} packet before the handshake completed"
                    )))
                }
            }
        }
        tokio::select! {
            r = timeout_at(deadline, source.read_into(buf)) => match r {
                Err(_) => return Err(Quiet("handshake timeout".into())),
                Ok(Ok(0)) => return Err(Quiet("closed during handshake".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Quiet(e.to_string())),
            },
            _ = state.kill.cancelled() => return Err(Quiet("killed during handshake".into())),
            _ = ctx.dropped.cancelled() => return Err(Quiet("server dropped".into())),
        }
    }
}

/// Parses a client handshake body into what a validator sees.
pub(crate) fn parse_handshake(
    body: &[u8],
    remote: SocketAddr,
) -> Result<HandshakeRequest, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    Ok(HandshakeRequest {
        sys: v.get("sys").cloned().unwrap_or_default(),
        user: v.get("user").cloned().unwrap_or_default(),
        remote,
    })
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
