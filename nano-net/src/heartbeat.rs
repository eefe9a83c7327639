//! Heartbeats and liveness, for every connection of a server at once.
//!
//! One sweeper task per server wakes once per heartbeat interval. For each open session it
//! looks at one flag its connection sets when a packet arrives: heard → the count of silent
//! sweeps starts over; silent for two sweeps in a row (about two intervals) → the session is
//! kicked; otherwise it is sent a heartbeat. A connection's own task never touches a timer, so
//! serving a packet costs no timer bookkeeping and an idle connection holds no timer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nano_core::protocol::Packet;
use nano_core::{Link, Serializer};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::ctx::ServerCtx;

/// Sweeps in a row without a packet after which a session is kicked.
const SILENT_SWEEPS: u32 = 2;

/// Sweeps every `period` until `stop` is cancelled.
pub(crate) async fn sweeper<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    period: Duration,
    stop: CancellationToken,
) {
    let Ok(heartbeat) = Packet::heartbeat().encode() else {
        tracing::error!("cannot encode a heartbeat packet: heartbeats disabled");
        return;
    };
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {
                sweep(&ctx, &heartbeat);
            }
        }
    }
}

/// One heartbeat round; returns how many sessions were kicked for silence.
pub(crate) fn sweep<S: Serializer>(ctx: &ServerCtx<S>, heartbeat: &Bytes) -> usize {
    let mut alive = Vec::new();
    let mut silent = Vec::new();
    {
        // Only bookkeeping under the registry lock; sends and kicks happen after it.
        let mut conns = ctx.lock();
        alive.reserve(conns.len());
        for r in conns.values_mut() {
            if r.conn.is_closing() {
                // Kicked, closed or aborted already, and still writing its last bytes (within
                // the write deadline): no heartbeat, no second kick.
                continue;
            }
            r.silent_sweeps = if r.conn.take_heard() {
                0
            } else {
                r.silent_sweeps + 1
            };
            if r.silent_sweeps >= SILENT_SWEEPS {
                silent.push((r.session.clone(), r.conn.clone()));
            } else {
                alive.push(r.conn.clone());
            }
        }
    }
    for conn in alive {
        // A full queue follows the server's full-queue policy, as any other packet does.
        let _ = conn.send(heartbeat.clone());
    }
    for (session, conn) in &silent {
        if conn.report() {
            tracing::info!(
                session = session.id(),
                remote = %conn.remote(),
                reason = "heartbeat timeout",
                "heartbeat timeout: kicking"
            );
        }
        if ctx.resumer.is_some() {
            // The connection is dead, not the session: it waits for its client to resume it.
            conn.drop_silent();
        } else {
            session.kick_with_reason(Some("heartbeat timeout"));
        }
    }
    silent.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ConnState;
    use crate::config::ServerConfig;
    use nano_core::protocol::PacketType;

    fn ctx() -> Arc<ServerCtx<nano_core::Json>> {
        let engine = nano_core::EngineBuilder::<nano_core::Json>::new()
            .build()
            .unwrap();
        Arc::new(ServerCtx::new(engine, ServerConfig::default()))
    }

    #[tokio::test]
    async fn silent_sessions_are_kicked_on_the_second_silent_sweep() {
        let ctx = ctx();
        let hb = Packet::heartbeat().encode().unwrap();
        let quiet = Arc::new(ConnState::for_test());
        let chatty = Arc::new(ConnState::for_test());
        let quiet_session = ctx.engine.open_session(quiet.clone());
        let chatty_session = ctx.engine.open_session(chatty.clone());
        ctx.register(&quiet_session, &quiet);
        ctx.register(&chatty_session, &chatty);

        // Both start as heard: the first sweep only sends heartbeats.
        assert_eq!(sweep(&ctx, &hb), 0);
        for conn in [&quiet, &chatty] {
            let sent = conn.queued();
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0][0], PacketType::Heartbeat as u8);
            assert!(!conn.is_closing());
        }
        // One silent sweep is tolerated.
        chatty.mark_heard();
        assert_eq!(sweep(&ctx, &hb), 0);
        assert!(!quiet.is_closing());
        // The second silent sweep in a row kicks; the peer that spoke stays.
        chatty.mark_heard();
        assert_eq!(sweep(&ctx, &hb), 1);
        assert!(quiet.is_closing(), "the silent peer is kicked");
        assert!(!chatty.is_closing(), "the peer that spoke stays");
        chatty.queued();
        quiet.queued();

        // A kicked connection still writing its last bytes is left alone: no heartbeat, no
        // second kick (nor a second log line).
        for _ in 0..3 {
            chatty.mark_heard();
            assert_eq!(sweep(&ctx, &hb), 0, "kicked once only");
            assert!(
                quiet.queued().is_empty(),
                "no heartbeat to a closing connection"
            );
            assert_eq!(chatty.queued().len(), 1);
        }
    }
}
