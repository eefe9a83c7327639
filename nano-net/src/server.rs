//! A running server: its addresses, its live connections, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use nano_core::{Engine, Serializer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ctx::ServerCtx;

/// The transport of a bound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Raw TCP.
    Tcp,
    /// TCP with TLS.
    TcpTls,
    /// WebSocket (and plain HTTP on the same port).
    WebSocket,
    /// WebSocket over TLS.
    WebSocketTls,
}

impl Transport {
    /// `"tcp"`, `"tls"`, `"websocket"` or `"wss"`: the label metrics and traces use.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::TcpTls => "tls",
            Transport::WebSocket => "websocket",
            Transport::WebSocketTls => "wss",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Transport::Tcp => 0,
            Transport::TcpTls => 1,
            Transport::WebSocket => 2,
            Transport::WebSocketTls => 3,
        }
    }
}

/// A running server: its addresses, its engine, and the way to stop it.
///
/// Dropping a `Server` without [`Server::shutdown`] stops it at once: the listeners close
/// (their ports stop accepting), the heartbeat sweeper stops, and every connection is
/// aborted (closed without flushing or a Kick; its session is unregistered and its
/// session-closed callbacks run). The engine's `before_shutdown` and `shutdown` hooks run only
/// with [`Server::shutdown`].
pub struct Server<S> {
    pub(crate) ctx: Arc<ServerCtx<S>>,
    pub(crate) addrs: Vec<(Transport, SocketAddr)>,
    pub(crate) stop_accepting: CancellationToken,
    pub(crate) accept_tasks: JoinSet<()>,
    pub(crate) conns: Arc<ConnTracker>,
    pub(crate) per_ip: Option<Arc<crate::per_ip::PerIp>>,
    /// The admin listener's address, when there is one.
    pub(crate) admin: Option<SocketAddr>,
}

/// Counts live connection tasks so shutdown can wait for them.
pub(crate) struct ConnTracker {
    pub limit: Arc<Semaphore>,
    pub max: usize,
    pub all_done: tokio::sync::Notify,
}

impl ConnTracker {
    pub(crate) fn active(&self) -> usize {
        self.max - self.limit.available_permits()
    }
}

impl<S: Serializer> Server<S> {
    /// The bound addresses with their transports.
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.addrs
    }

    /// The first bound address of `transport`.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// The admin listener's bound address ([`App::admin`](crate::App::admin)).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Every metric family in the Prometheus (OpenMetrics) text format, what the admin
    /// listener's `/metrics` serves; `None` when the metrics are off
    /// ([`App::metrics`](crate::App::metrics)).
    pub fn metrics(&self) -> Option<String> {
        self.ctx.render_metrics()
    }

    /// The application's engine.
    pub fn engine(&self) -> &Engine<S> {
        &self.ctx.engine
    }

    /// Number of connections being served.
    pub fn connections(&self) -> usize {
        self.conns.active()
    }

    /// Connections refused by the per-IP limits so far (all zero when they are off).
    pub fn per_ip_refusals(&self) -> crate::PerIpRefusals {
        self.per_ip
            .as_ref()
            .map(|t| t.refusals())
            .unwrap_or_default()
    }

    /// Number of sessions that completed the handshake and are open.
    pub fn sessions(&self) -> usize {
        self.ctx.session_count()
    }

    /// Waits for Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await;
    }

    /// Graceful shutdown: stop accepting, run `before_shutdown`, kick every session (the kick
    /// is flushed), wait for the connections to end (bounded by the configured shutdown
    /// timeout), run the session-closed callbacks, stop the extensions, then run `shutdown`. A connection whose peer
    /// does not read ends within the write timeout; any still open when the shutdown timeout
    /// passes is aborted.
    pub async fn shutdown(mut self) {
        self.stop_accepting.cancel();
        while self.accept_tasks.join_next().await.is_some() {}
        self.ctx.engine.before_shutdown().await;
        // Connections still in their handshake see this and kick themselves once registered.
        self.ctx.shutting_down.cancel();
        for s in self.ctx.sessions() {
            s.kick_with_reason(Some("server shutting down"));
        }
        if let Some(resumer) = &self.ctx.resumer {
            resumer.close_suspended();
        }
        let deadline = tokio::time::Instant::now() + self.ctx.config.shutdown_timeout;
        while self.conns.active() > 0 {
            let notified = self.conns.all_done.notified();
            if self.conns.active() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    left = self.conns.active(),
                    "shutdown timeout: connections still open"
                );
                break;
            }
        }
        for ext in self.ctx.engine.extensions() {
            ext.stop().await;
        }
        self.ctx.engine.shutdown().await;
        tracing::info!("server stopped");
    }
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.accept_tasks.abort_all();
        self.ctx.kill_all();
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
