//! Listeners, the live-session registry and graceful shutdown.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use nano_core::{Engine, Serializer, Session};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent;
use crate::config::ServerConfig;
use crate::http::{self, HttpSide};
use crate::tls::TlsConfig;
use crate::transport::{StreamSink, StreamSource, TcpSource, WsSink, WsSource};

/// What a server's agents share.
pub(crate) struct ServerCtx<S> {
    pub engine: Engine<S>,
    pub config: ServerConfig,
    sessions: Mutex<HashMap<u64, Session<S>>>,
    /// The `sys` of the handshake response, prepared once.
    handshake_ok: Bytes,
}

impl<S: Serializer> ServerCtx<S> {
    pub fn new(engine: Engine<S>, config: ServerConfig) -> Self {
        let mut sys = engine.handshake_sys();
        if let Some(hb) = config.heartbeat {
            sys.insert("heartbeat".into(), hb.as_secs().max(1).into());
        }
        let body = serde_json::json!({ "code": 200, "sys": sys });
        ServerCtx {
            engine,
            config,
            sessions: Mutex::new(HashMap::new()),
            handshake_ok: body.to_string().into(),
        }
    }

    /// The handshake response (code, body) for a client handshake body.
    pub fn handshake_response(&self, body: &[u8], remote: SocketAddr) -> (u16, Bytes) {
        let req = match agent::parse_handshake(body, remote) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%remote, error = %e, "undecodable handshake");
                return (500, refusal(500, "undecodable handshake"));
            }
        };
        if let Some(v) = &self.config.validator {
            if let Err(refused) = v(&req) {
                tracing::info!(%remote, code = refused.code, reason = %refused.reason, "handshake refused");
                let code = if refused.code == 200 {
                    500
                } else {
                    refused.code
                };
                return (code, refusal(code, &refused.reason));
            }
        }
        (200, self.handshake_ok.clone())
    }

    pub fn register(&self, s: &Session<S>) {
        self.lock().insert(s.id(), s.clone());
    }

    pub fn unregister(&self, s: &Session<S>) {
        self.lock().remove(&s.id());
    }

    pub fn sessions(&self) -> Vec<Session<S>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session<S>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refusal(code: u16, msg: &str) -> Bytes {
    serde_json::json!({ "code": code, "msg": msg })
        .to_string()
        .into()
}

/// One listener of a server.
pub(crate) enum ListenerSpec {
    Tcp {
        addr: String,
        tls: Option<TlsConfig>,
    },
    WebSocket {
        addr: String,
        path: String,
        tls: Option<TlsConfig>,
    },
}

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

/// A running server: its addresses, its engine, and the way to stop it.
pub struct Server<S> {
    pub(crate) ctx: Arc<ServerCtx<S>>,
    pub(crate) addrs: Vec<(Transport, SocketAddr)>,
    pub(crate) stop_accepting: CancellationToken,
    pub(crate) accept_tasks: JoinSet<()>,
    pub(crate) conns: Arc<ConnTracker>,
}

/// Counts live connection tasks so shutdown can wait for them.
pub(crate) struct ConnTracker {
    pub limit: Arc<Semaphore>,
    pub max: usize,
    pub all_done: tokio::sync::Notify,
}

impl ConnTracker {
    fn active(&self) -> usize {
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

    /// The application's engine.
    pub fn engine(&self) -> &Engine<S> {
        &self.ctx.engine
    }

    /// Number of connections being served.
    pub fn connections(&self) -> usize {
        self.conns.active()
    }

    /// Number of sessions that completed the handshake and are open.
    pub fn sessions(&self) -> usize {
        self.ctx.lock().len()
    }

    /// Waits for Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        self.shutdown().await;
    }

    /// Graceful shutdown: stop accepting, run `before_shutdown`, kick every session (the kick
    /// is flushed), wait for the connections to end (bounded by the configured shutdown
    /// timeout), run the session-closed callbacks and `shutdown`.
    pub async fn shutdown(mut self) {
        self.stop_accepting.cancel();
        while self.accept_tasks.join_next().await.is_some() {}
        self.ctx.engine.before_shutdown().await;
        for s in self.ctx.sessions() {
            s.kick_with_reason(Some("server shutting down"));
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
        self.ctx.engine.shutdown().await;
        tracing::info!("server stopped");
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

/// Binds every listener and spawns its accept loop.
pub(crate) async fn bind<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    specs: Vec<ListenerSpec>,
    http: Arc<HttpSide>,
) -> io::Result<Server<S>> {
    let stop = CancellationToken::new();
    let conns = Arc::new(ConnTracker {
        limit: Arc::new(Semaphore::new(ctx.config.max_connections)),
        max: ctx.config.max_connections,
        all_done: tokio::sync::Notify::new(),
    });
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    for spec in specs {
        let (addr, ws, tls) = match spec {
            ListenerSpec::Tcp { addr, tls } => (addr, None, tls),
            ListenerSpec::WebSocket { addr, path, tls } => (addr, Some(path), tls),
        };
        let listener = TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        let transport = match (&ws, &tls) {
            (None, None) => Transport::Tcp,
            (None, Some(_)) => Transport::TcpTls,
            (Some(_), None) => Transport::WebSocket,
            (Some(_), Some(_)) => Transport::WebSocketTls,
        };
        tracing::info!(%local, ?transport, "listening");
        addrs.push((transport, local));
        let http = ws.map(|path| {
            Arc::new(HttpSide {
                ws_path: path,
                allowed_origins: http.allowed_origins.clone(),
                handlers: http.handlers.clone(),
                ws_config: http.ws_config,
            })
        });
        tasks.spawn(accept_loop(
            listener,
            ctx.clone(),
            tls,
            http,
            stop.clone(),
            conns.clone(),
        ));
    }
    Ok(Server {
        ctx,
        addrs,
        stop_accepting: stop,
        accept_tasks: tasks,
        conns,
    })
}

async fn accept_loop<S: Serializer>(
    listener: TcpListener,
    ctx: Arc<ServerCtx<S>>,
    tls: Option<TlsConfig>,
    http: Option<Arc<HttpSide>>,
    stop: CancellationToken,
    conns: Arc<ConnTracker>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = conns.limit.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached: refusing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let http = http.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            connection(ctx, stream, remote, tls, http).await;
            drop(permit);
            if conns.active() == 0 {
                conns.all_done.notify_waiters();
            }
        });
    }
}

async fn connection<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<TlsConfig>,
    http: Option<Arc<HttpSide>>,
) {
    match (tls, http) {
        (None, None) => {
            let (r, w) = stream.into_split();
            agent::serve(ctx, TcpSource(r), StreamSink(w), remote).await;
        }
        (Some(tls), None) => {
            let Some(stream) = tls_accept(&ctx, &tls, stream, remote).await else {
                return;
            };
            let (r, w) = tokio::io::split(stream);
            agent::serve(ctx, StreamSource(r), StreamSink(w), remote).await;
        }
        (None, Some(http)) => websocket(ctx, stream, remote, &http).await,
        (Some(tls), Some(http)) => {
            if let Some(stream) = tls_accept(&ctx, &tls, stream, remote).await {
                websocket(ctx, stream, remote, &http).await;
            }
        }
    }
}

async fn tls_accept<S>(
    ctx: &ServerCtx<S>,
    tls: &TlsConfig,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(ctx.config.handshake_timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timeout");
            None
        }
    }
}

async fn websocket<S, IO>(ctx: Arc<ServerCtx<S>>, stream: IO, remote: SocketAddr, http: &HttpSide)
where
    S: Serializer,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let accepted =
        tokio::time::timeout(ctx.config.handshake_timeout, http::accept(stream, http)).await;
    match accepted {
        Ok(Ok(http::Accepted::WebSocket(ws))) => {
            let (sink, source) = (*ws).split();
            agent::serve(ctx, WsSource(source), WsSink(sink), remote).await;
        }
        Ok(Ok(http::Accepted::Done)) => {}
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "http error"),
        Err(_) => tracing::info!(%remote, "http request head timeout"),
    }
}
