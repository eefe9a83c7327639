//! The per-connection agent: handshake, read loop, and the batched writer. (Heartbeats and the
//! liveness check are the sweeper's, in `heartbeat`.)
//!
//! ```text
//! socket ─read─▶ PacketCodec ─▶ Engine::handle_data ─▶ scheduler ─▶ Session ─▶ ConnState
//!                                                                              │ outbox
//! socket ◀─write/writev/frame── the same task, after each read or when woken ◀─┘
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{Packet, PacketCodec, PacketType};
use nano_core::{Link, SendError, Serializer};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::{FullQueuePolicy, HandshakeRequest};
use crate::ctx::ServerCtx;
use crate::outbox::{Outbox, PushError};
use crate::transport::{PacketSink, PacketSource};

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
    remote: SocketAddr,
    policy: FullQueuePolicy,
}

impl ConnState {
    fn new(send_queue: usize, remote: SocketAddr, policy: FullQueuePolicy) -> Self {
        ConnState {
            outbox: Outbox::new(send_queue),
            heard: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            ending: Mutex::new(None),
            kill: CancellationToken::new(),
            remote,
            policy,
        }
    }

    /// A connection without a socket, for unit tests of what watches it.
    #[cfg(test)]
    pub(crate) fn for_test() -> Self {
        ConnState::new(16, ([127, 0, 0, 1], 0).into(), FullQueuePolicy::Disconnect)
    }

    /// Takes what is queued (tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> Vec<Bytes> {
        let mut batch = Vec::new();
        self.outbox.take(&mut batch, usize::MAX);
        batch
    }

    /// Whether the connection is ending.
    #[cfg(test)]
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn end(&self, how: Ending) {
        let mut e = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(how);
            self.closing.store(true, Ordering::Release);
            self.outbox.wake();
        }
    }

    /// Stops the connection at once, without flushing.
    fn abort(&self) {
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
                        tracing::warn!(remote = %self.remote, "send queue full: client not reading, disconnecting");
                        self.abort();
                    }
                    FullQueuePolicy::DropAndWarn => {
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
pub(crate) async fn serve<S, R, W>(
    ctx: Arc<ServerCtx<S>>,
    mut source: R,
    mut sink: W,
    remote: SocketAddr,
) where
    S: Serializer,
    R: PacketSource,
    W: PacketSink,
{
    let state = Arc::new(ConnState::new(
        ctx.config.send_queue,
        remote,
        ctx.config.on_full_queue,
    ));
    let outbox = &state.outbox;
    let close_timeout = ctx.config.shutdown_timeout;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut buf = BytesMut::new();
    let mut codec = PacketCodec::new(ctx.engine.max_packet_size());

    match handshake(
        &ctx,
        &mut source,
        &mut sink,
        &mut batch,
        &mut buf,
        &mut codec,
        &state,
        remote,
    )
    .await
    {
        Ok(()) => {}
        Err(reason) => {
            tracing::debug!(%remote, reason, "handshake failed");
            state.end(Ending::ProtocolError(reason));
            close_out(&mut sink, &state, close_timeout, batch).await;
            return;
        }
    }

    let session = ctx.engine.open_session(state.clone());
    ctx.register(&session, &state);
    if ctx.shutting_down.is_cancelled() {
        // Shutdown took its list of sessions before this one was registered.
        session.kick_with_reason(Some("server shutting down"));
    }
    tracing::debug!(%remote, session = session.id(), "session opened");

    let reason: Option<String> = 'conn: loop {
        // Everything already buffered first (pipelined packets).
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    state.mark_heard();
                    match packet.kind {
                        PacketType::Data => {
                            if let Err(e) = ctx.engine.handle_data(&session, packet.body).await {
                                break 'conn Some(e.to_string());
                            }
                            // A long pipelined burst: write replies as they pile up rather than
                            // after the whole burst, so the queue never fills from our side.
                            if outbox.len() >= outbox.capacity() / 2
                                && !flush(&mut sink, &mut batch, &state).await
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
        if !outbox.is_empty() && !flush(&mut sink, &mut batch, &state).await {
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
                if !flush(&mut sink, &mut batch, &state).await {
                    break None;
                }
            }
            r = source.read_into(&mut buf) => match r {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.to_string()),
            },
        }
        outbox.set_parked(false);
    };
    if let Some(reason) = &reason {
        tracing::info!(%remote, session = session.id(), reason, "protocol error: closing connection");
        state.end(Ending::ProtocolError(reason.clone()));
    } else {
        state.end(Ending::Close);
    }
    session.closed();
    ctx.unregister(&session);
    close_out(&mut sink, &state, close_timeout, batch).await;
    tracing::debug!(%remote, session = session.id(), "session closed");
}

const MAX_BATCH: usize = 256;

/// Writes everything queued; false when the connection must stop (write error or kill).
async fn flush<W: PacketSink>(sink: &mut W, batch: &mut Vec<Bytes>, state: &ConnState) -> bool {
    loop {
        state.outbox.take(batch, MAX_BATCH);
        if batch.is_empty() {
            return true;
        }
        let r = {
            let mut send = std::pin::pin!(sink.send_batch(batch));
            // A write that completes at once (the usual case) never looks at the kill token.
            match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
                Poll::Ready(r) => Some(r),
                Poll::Pending => tokio::select! {
                    r = send => Some(r),
                    _ = state.kill.cancelled() => None,
                },
            }
        };
        batch.clear();
        let Some(r) = r else {
            return false;
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "write failed");
            state.abort();
            return false;
        }
    }
}

/// Graceful end: what is queued, then the kick, then close (bounded); nothing when killed.
async fn close_out<W: PacketSink>(
    sink: &mut W,
    state: &ConnState,
    close_timeout: Duration,
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
            let body = reason
                .map(|r| serde_json::json!({ "reason": r }).to_string())
                .unwrap_or_default();
            if let Ok(p) = Packet::new(PacketType::Kick, body.into_bytes()).encode() {
                batch.push(p);
            }
        }
        Ending::ProtocolError(reason) => error = Some(reason),
        Ending::Close => {}
    }
    let close = async {
        if !batch.is_empty() {
            sink.send_batch(&batch).await?;
        }
        sink.shutdown(error).await
    };
    let _ = tokio::time::timeout(close_timeout, close).await;
    state.kill.cancel();
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
) -> Result<(), String> {
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    let mut answered = false;
    loop {
        while let Some(packet) = codec.decode(buf).map_err(|e| e.to_string())? {
            match (packet.kind, answered) {
                (PacketType::Handshake, false) => {
                    let (code, body) = ctx.handshake_response(&packet.body, remote);
                    let packet = Packet::new(PacketType::Handshake, body)
                        .encode()
                        .map_err(|e| e.to_string())?;
                    state.send(packet).map_err(|e| e.to_string())?;
                    if code != 200 {
                        return Err(format!("handshake refused with code {code}"));
                    }
                    if !flush(sink, batch, state).await {
                        return Err("write failed during handshake".into());
                    }
                    answered = true;
                }
                (PacketType::HandshakeAck, true) => return Ok(()),
                (PacketType::Heartbeat, _) => {}
                (kind, _) => return Err(format!("{kind:?} packet before the handshake completed")),
            }
        }
        tokio::select! {
            r = timeout_at(deadline, source.read_into(buf)) => match r {
                Err(_) => return Err("handshake timeout".into()),
                Ok(Ok(0)) => return Err("closed during handshake".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
            },
            _ = state.kill.cancelled() => return Err("killed during handshake".into()),
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
