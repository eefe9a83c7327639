//! Reconnecting to resume the session, when the server offers it (see the server's
//! `nano_net::Resume`): a lost connection (not a Kick) is dialled again with backoff until
//! the grace period the server announced is over (and [`PAST_GRACE`] more); the handshake presents the session's token
//! and how many Data packets the client read. Resumed: requests the server never got are sent
//! again, what it sent meanwhile follows. Refused: the session is new, pending requests fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{MessageType, PacketCodec, PacketType};
use tokio::time::Instant;

use super::conn::{lock, ConnCtl, Inner, ReadHalf, WriteHalf};
use super::{ClientError, ClientEvent, ConnectionEvent, HandshakeInfo};

/// The first wait before dialling again, doubled after each failed try up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// How long past the grace period the client goes on dialling: an outage longer than the grace
/// ends on a new session ([`ConnectionEvent::NewSession`]) rather than on a closed client.
const PAST_GRACE: Duration = Duration::from_secs(10);

/// A connection whose handshake is done.
pub(crate) struct Connected {
    pub r: ReadHalf,
    pub w: WriteHalf,
    pub codec: PacketCodec,
    pub buf: BytesMut,
    pub info: HandshakeInfo,
}

/// Dials the server again and shakes hands with `resume` as the handshake's `sys.resume`.
pub(crate) trait Redial: Send + Sync + 'static {
    fn redial(
        &self,
        resume: serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<Connected, ClientError>> + Send>>;
}

/// What the client needs to resume its session.
#[derive(Clone)]
pub(crate) struct Resumable {
    /// The session's current token.
    pub token: String,
    /// How long the server keeps the session after the connection drops.
    pub grace: Duration,
    pub redial: Arc<dyn Redial>,
    /// Whether the client sends heartbeats.
    pub heartbeat: bool,
}

impl Resumable {
    /// From a handshake answer that offers resume (`sys.resume` with a token and a grace).
    pub fn offered(info: &HandshakeInfo, redial: Arc<dyn Redial>, heartbeat: bool) -> Option<Self> {
        let (token, grace) = offer(info)?;
        Some(Resumable {
            token,
            grace,
            redial,
            heartbeat,
        })
    }
}

/// The token and grace period a handshake answer offers.
fn offer(info: &HandshakeInfo) -> Option<(String, Duration)> {
    let resume = info.raw.get("sys")?.get("resume")?;
    let token = resume.get("token")?.as_str()?.to_owned();
    let grace = resume.get("grace")?.as_f64()?;
    let grace = Duration::try_from_secs_f64(grace).ok()?;
    Some((token, grace))
}

/// Reconnects after connection `lost` ended with `cause`; ends the client with `cause` when
/// the grace period passes or the server refuses the handshake.
pub(crate) async fn reconnect(
    inner: Arc<Inner>,
    lost: ConnCtl,
    resumable: Resumable,
    cause: ClientEvent,
) {
    let deadline = Instant::now() + resumable.grace + PAST_GRACE;
    // The writer hands the queue back once it let go of its socket.
    tokio::select! {
        () = lost.writer_done.cancelled() => {}
        () = inner.shutdown.cancelled() => {
            if lost.writer_done.is_cancelled() {
                inner.writer_done.cancel(); // no writer is left to say so
            }
            return;
        }
    }
    let Some(mut rx) = lock(&inner.rx_slot).take() else {
        inner.finish(cause);
        return;
    };
    let mut delay = FIRST_DELAY;
    loop {
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!("no server within the grace period: giving up");
            break;
        }
        let wait = jitter(delay).min(deadline - now);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.shutdown.cancelled() => {
                inner.writer_done.cancel();
                return;
            }
        }
        delay = (delay * 2).min(MAX_DELAY);
        let received = inner.received.load(Ordering::Relaxed);
        let resume = serde_json::json!({ "token": resumable.token, "received": received });
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(
            left.min(inner.request_timeout),
            resumable.redial.redial(resume),
        )
        .await;
        let c = match attempt {
            Ok(Ok(c)) => c,
            Ok(Err(e @ ClientError::Handshake { .. })) => {
                tracing::debug!(error = %e, "the server refused the handshake: not reconnecting");
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reconnect failed: trying again");
                continue;
            }
            Err(_) => continue,
        };
        let answer = c
            .info
            .raw
            .get("sys")
            .and_then(|s| s.get("resume"))
            .cloned()
            .unwrap_or_default();
        let resumed = answer.get("resumed").and_then(serde_json::Value::as_bool) == Some(true);
        *lock(&inner.resume) = offer(&c.info).map(|(token, grace)| Resumable {
            token,
            grace,
            ..resumable.clone()
        });
        // What waited in the queue: requests go again from the pending map (below), the rest
        // follows them.
        let mut queued = Vec::new();
        while let Ok(p) = rx.try_recv() {
            if !is_request(&p) {
                queued.push(p);
            }
        }
        let again = if resumed {
            let last = answer
                .get("last_request")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let pending = lock(&inner.pending);
            let mut again: Vec<(u64, Bytes)> = pending
                .map
                .iter()
                .filter(|(id, _)| **id > last)
                .map(|(id, (_, p))| (*id, p.clone()))
                .collect();
            again.sort_unstable_by_key(|(id, _)| *id);
            again
        } else {
            // A new session: what the old one waited for will not come.
            let lost = std::mem::take(&mut lock(&inner.pending).map);
            drop(lost);
            inner.received.store(0, Ordering::Relaxed);
            queued.clear();
            Vec::new()
        };
        let heartbeat = c.info.heartbeat.filter(|_| resumable.heartbeat);
        tracing::debug!(resumed, resent = again.len(), "reconnected");
        inner.spawn_tasks(c.r, c.w, rx, c.codec, c.buf, heartbeat);
        for p in again.into_iter().map(|(_, p)| p).chain(queued) {
            if inner.enqueue(p).await.is_err() {
                return;
            }
        }
        inner.tell(if resumed {
            ConnectionEvent::Resumed
        } else {
            ConnectionEvent::NewSession
        });
        return;
    }
    inner.finish(cause);
    inner.writer_done.cancel();
}

/// Whether an encoded packet is a request (a Data packet whose message type is Request).
fn is_request(packet: &[u8]) -> bool {
    packet.len() > 4
        && packet[0] == PacketType::Data as u8
        && (packet[4] >> 1) & 0x07 == MessageType::Request as u8
}

/// `d` give or take a quarter, so that clients cut at once do not all come back at once.
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(0) % 1000;
    d.mul_f64(0.75 + f64::from(r) / 2000.0)
}
