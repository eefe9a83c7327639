//! The per-connection agent: handshake, read loop, heartbeat, and the batched writer.
//!
//! ```text
//! socket ─read─▶ PacketCodec ─▶ Engine::handle_data ─▶ scheduler ─▶ Session ─▶ ConnLink
//!                                                                               │ bounded queue
//! socket ◀─writev/frame── writer task ◀──────────────────────────────────────────┘
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// State shared by the connection's task and the session's link.
struct ConnState {
    /// Outbound packets; its wake-up is the task's one event source besides the socket.
    outbox: Outbox,
    ending: Mutex<Option<Ending>>,
    /// Stops everything at once (abort, or closing finished).
    kill: CancellationToken,
    closing: AtomicBool,
}

impl ConnState {
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
}

/// The session's outbound path: a bounded queue drained by the writer task.
struct ConnLink {
    state: Arc<ConnState>,
    remote: SocketAddr,
    policy: FullQueuePolicy,
}

impl Link for ConnLink {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        if self.state.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        match self.state.outbox.push(packet) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::Closed),
            Err(PushError::Full) => {
                match self.policy {
                    FullQueuePolicy::Disconnect => {
                        tracing::warn!(remote = %self.remote, "send queue full: client not reading, disconnecting");
                        self.state.abort();
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
        self.state.end(Ending::Kick(reason.map(str::to_owned)));
    }

    fn close(&self) {
        self.state.end(Ending::Close);
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
    let state = Arc::new(ConnState {
        outbox: Outbox::new(ctx.config.send_queue),
        ending: Mutex::new(None),
        kill: CancellationToken::new(),
        closing: AtomicBool::new(false),
    });
    let outbox = &state.outbox;
    let link = Arc::new(ConnLink {
        state: state.clone(),
        remote,
        policy: ctx.config.on_full_queue,
    });
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
        &link,
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

    let session = ctx.engine.open_session(link.clone());
    ctx.register(&session);
    if ctx.shutting_down.is_cancelled() {
        // Shutdown took its list of sessions before this one was registered.
        session.kick_with_reason(Some("server shutting down"));
    }
    tracing::debug!(%remote, session = session.id(), "session opened");

    let heartbeat = ctx.config.heartbeat;
    // Liveness without reading the clock per packet: a packet sets `heard`; each heartbeat
    // tick clears it, and two ticks in a row without a packet (silence for 2 × interval) kick.
    let mut heard = true;
    let mut silent_ticks = 0u32;
    let mut ticker = heartbeat.map(|d| {
        let mut t = tokio::time::interval_at(Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let events = outbox.notified();
    tokio::pin!(events);
    let reason: Option<String> = 'conn: loop {
        // Everything already buffered first (pipelined packets).
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    heard = true;
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
            _ = &mut events => {
                events.set(outbox.notified());
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
            _ = tick(&mut ticker), if heartbeat.is_some() => {
                silent_ticks = if std::mem::take(&mut heard) { 0 } else { silent_ticks + 1 };
                if silent_ticks >= 2 {
                    tracing::info!(%remote, session = session.id(), "heartbeat timeout: kicking");
                    session.kick_with_reason(Some("heartbeat timeout"));
                    break None;
                }
                if let Ok(p) = Packet::heartbeat().encode() {
                    let _ = link.send(p);
                }
            }
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

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

const MAX_BATCH: usize = 256;

/// Writes everything queued; false when the connection must stop (write error or kill).
async fn flush<W: PacketSink>(sink: &mut W, batch: &mut Vec<Bytes>, state: &ConnState) -> bool {
    loop {
        state.outbox.take(batch, MAX_BATCH);
        if batch.is_empty() {
            return true;
        }
        // Biased: a write that completes at once never registers interest in the kill.
        let r = tokio::select! {
            biased;
            r = sink.send_batch(batch) => r,
            _ = state.kill.cancelled() => {
                batch.clear();
                return false;
            }
        };
        batch.clear();
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
    link: &ConnLink,
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
                    link.send(packet).map_err(|e| e.to_string())?;
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
