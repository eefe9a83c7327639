//! What every connection of a server shares: the engine, the settings, the live sessions and
//! the prepared handshake response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nano_core::{Engine, Serializer, Session};

use crate::admin::metrics::NetMetrics;
use crate::agent::{self, ConnState};
use crate::config::{HandshakeRequest, ServerConfig};
use crate::resume::Resuming;

/// What a server's agents share.
pub(crate) struct ServerCtx<S> {
    pub engine: Engine<S>,
    pub config: ServerConfig,
    conns: Mutex<HashMap<u64, Registered<S>>>,
    /// Cancelled when graceful shutdown starts.
    pub shutting_down: tokio_util::sync::CancellationToken,
    /// Cancelled when the server is dropped: every connection stops at once.
    pub dropped: tokio_util::sync::CancellationToken,
    /// The handshake response, prepared once ...
    handshake_ok: Bytes,
    /// ... and its `sys`, which a server resuming sessions completes per connection.
    handshake_sys: serde_json::Map<String, serde_json::Value>,
    /// The resumable sessions, when the server resumes sessions.
    pub resumer: Option<crate::resume::Resumer<S>>,
    /// The transport's metrics, when they are on.
    pub net_metrics: Option<Arc<NetMetrics>>,
    /// When the server started (wall clock) ...
    pub started_at: std::time::SystemTime,
    /// ... and on the monotonic clock.
    pub started: std::time::Instant,
}

impl<S: Serializer> ServerCtx<S> {
    pub fn new(engine: Engine<S>, mut config: ServerConfig) -> Self {
        let mut sys = engine.handshake_sys();
        if sys.contains_key("dict") {
            // The same dictionary in pomelo 2.x's form, for clients that read only that.
            sys.extend(engine.dictionary().pomelo_sys());
        }
        // The handshake announces whole seconds; the sweeper must run at what was announced,
        // or clients heartbeating at the announced interval are kicked.
        config.heartbeat = config.heartbeat.map(announced_heartbeat);
        if let Some(hb) = config.heartbeat {
            sys.insert("heartbeat".into(), hb.as_secs().into());
        }
        let body = serde_json::json!({ "code": 200, "sys": sys });
        let resumer = config
            .resume
            .as_ref()
            .map(|r| crate::resume::Resumer::new(r, &config));
        ServerCtx {
            resumer,
            handshake_sys: sys,
            engine,
            config,
            conns: Mutex::new(HashMap::new()),
            shutting_down: tokio_util::sync::CancellationToken::new(),
            dropped: tokio_util::sync::CancellationToken::new(),
            handshake_ok: body.to_string().into(),
            net_metrics: None,
            started_at: std::time::SystemTime::now(),
            started: std::time::Instant::now(),
        }
    }

    /// The handshake response (code, body) for a client handshake body; with session resume
    /// on, what it decided for the session too (see [`crate::resume`]).
    pub fn handshake_response(
        &self,
        body: &[u8],
        remote: SocketAddr,
    ) -> (u16, Bytes, Option<Resuming<S>>) {
        let req = match agent::parse_handshake(body, remote) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%remote, error = %e, "undecodable handshake");
                return (500, refusal(500, "undecodable handshake"), None);
            }
        };
        let (code, body) = self.validate(&req, remote);
        if code != 200 {
            return (code, body, None);
        }
        let Some((resuming, answer)) = self.resumer.as_ref().and_then(|r| r.begin(&req.sys)) else {
            return (code, body, None);
        };
        if let (Some(m), Some(_)) = (&self.net_metrics, req.sys.get("resume")) {
            m.resume(answer["resumed"] == true);
        }
        let mut sys = self.handshake_sys.clone();
        sys.insert("resume".into(), answer);
        let body = serde_json::json!({ "code": 200, "sys": sys });
        (200, body.to_string().into(), Some(resuming))
    }

    /// Runs the handshake validator: (200, the prepared response) or the refusal.
    fn validate(&self, req: &HandshakeRequest, remote: SocketAddr) -> (u16, Bytes) {
        if let Some(v) = &self.config.validator {
            // The validator is user code on the connection's task: a panic in it refuses this
            // one handshake (code 500), like a handler's panic fails one request.
            match std::panic::catch_unwind(AssertUnwindSafe(|| v(req))) {
                Ok(Ok(())) => {}
                Ok(Err(refused)) => {
                    tracing::info!(%remote, code = refused.code, reason = %refused.reason, "handshake refused");
                    let code = if refused.code == 200 {
                        500
                    } else {
                        refused.code
                    };
                    return (code, refusal(code, &refused.reason));
                }
                Err(p) => {
                    let panic = p
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("panic");
                    tracing::error!(%remote, panic, "handshake validator panicked");
                    return (500, refusal(500, "handshake validation failed"));
                }
            }
        }
        (200, self.handshake_ok.clone())
    }

    /// Registers a session that completed its handshake, with its connection.
    pub fn register(&self, s: &Session<S>, conn: &Arc<ConnState>) {
        let entry = Registered {
            session: s.clone(),
            conn: conn.clone(),
            silent_sweeps: 0,
        };
        self.lock().insert(s.id(), entry);
    }

    /// Unregisters a session, unless another connection serves it now (it was resumed).
    pub fn unregister(&self, s: &Session<S>, conn: &Arc<ConnState>) {
        let mut conns = self.lock();
        if conns
            .get(&s.id())
            .is_some_and(|r| Arc::ptr_eq(&r.conn, conn))
        {
            conns.remove(&s.id());
        }
    }

    /// The open sessions.
    pub fn sessions(&self) -> Vec<Session<S>> {
        self.lock().values().map(|r| r.session.clone()).collect()
    }

    /// The open sessions with their connections.
    pub fn connections(&self) -> Vec<(Session<S>, Arc<ConnState>)> {
        self.lock()
            .values()
            .map(|r| (r.session.clone(), r.conn.clone()))
            .collect()
    }

    /// Open sessions by transport ([`Transport::index`](crate::server::Transport) order).
    pub fn clients_per_transport(&self) -> [usize; 4] {
        let mut per_transport = [0usize; 4];
        for r in self.lock().values() {
            per_transport[r.conn.transport().index()] += 1;
        }
        per_transport
    }

    /// Every metric family rendered, with the gauges read now; `None` when metrics are off.
    pub fn render_metrics(&self) -> Option<String> {
        if let Some(m) = &self.net_metrics {
            let per_transport = self.clients_per_transport();
            let suspended = self.resumer.as_ref().map_or(0, |r| r.suspended().len());
            m.refresh(per_transport, per_transport.iter().sum(), suspended);
        }
        self.engine.render_metrics()
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered<S>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S> ServerCtx<S> {
    /// Stops every connection at once (the server was dropped): those shaking hands see
    /// `dropped`, the registered ones are aborted.
    pub(crate) fn kill_all(&self) {
        self.dropped.cancel();
        let conns: Vec<Arc<ConnState>> = {
            let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.values().map(|r| r.conn.clone()).collect()
        };
        for c in conns {
            c.abort();
        }
    }
}

/// The heartbeat interval as the handshake announces it: whole seconds, rounded up (at least
/// one), with a warning when that changes the configured interval.
fn announced_heartbeat(hb: std::time::Duration) -> std::time::Duration {
    let secs = hb.as_secs() + u64::from(hb.subsec_nanos() > 0);
    let announced = std::time::Duration::from_secs(secs.max(1));
    if announced != hb {
        tracing::warn!(
            configured = ?hb,
            announced = ?announced,
            "the handshake announces the heartbeat in whole seconds: rounded up"
        );
    }
    announced
}

/// An open session and its connection, as the heartbeat sweeper sees it.
pub(crate) struct Registered<S> {
    pub session: Session<S>,
    pub conn: Arc<ConnState>,
    /// Sweeps in a row that found no packet from the peer.
    pub silent_sweeps: u32,
}

fn refusal(code: u16, msg: &str) -> Bytes {
    serde_json::json!({ "code": code, "msg": msg })
        .to_string()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sub_second_heartbeat_is_announced_and_swept_in_whole_seconds() {
        for (configured, announced) in [
            (Duration::from_millis(500), 1),
            (Duration::from_millis(1500), 2),
            (Duration::from_secs(2), 2),
            (Duration::from_nanos(1), 1),
        ] {
            let engine = nano_core::EngineBuilder::<nano_core::Json>::new()
                .build()
                .unwrap();
            let config = ServerConfig {
                heartbeat: Some(configured),
                ..ServerConfig::default()
            };
            let ctx = ServerCtx::new(engine, config);
            // What the sweeper runs at (listen.rs reads ctx.config) ...
            assert_eq!(ctx.config.heartbeat, Some(Duration::from_secs(announced)));
            // ... is what the handshake tells the client.
            let (code, body, _) = ctx.handshake_response(b"{}", ([127, 0, 0, 1], 1).into());
            assert_eq!(code, 200);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["sys"]["heartbeat"], announced, "{configured:?}");
        }
    }
}
