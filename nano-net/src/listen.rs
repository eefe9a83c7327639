//! Listeners: binding, the accept loops with their connection limit, per-IP limits and
//! backoff, the PROXY header on listeners that expect one, and turning an accepted socket
//! (plain, TLS, WebSocket) into an agent.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nano_core::Serializer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent;
use crate::ctx::ServerCtx;
use crate::heartbeat;
use crate::http::{self, HttpSide};
use crate::listener::Listener;
use crate::per_ip::{IpGuard, PerIp};
use crate::proxy;
use crate::server::{ConnTracker, Server, Transport};
use crate::tls::TlsConfig;
use crate::transport::{StreamSink, StreamSource, TcpSource};
use crate::ws::{self, Upgraded};

/// Binds every listener and spawns its accept loop.
pub(crate) async fn bind<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    specs: Vec<Listener>,
    http: Arc<HttpSide>,
) -> io::Result<Server<S>> {
    let stop = CancellationToken::new();
    let conns = Arc::new(ConnTracker {
        limit: Arc::new(Semaphore::new(ctx.config.max_connections)),
        max: ctx.config.max_connections,
        all_done: tokio::sync::Notify::new(),
    });
    // One table for the whole server: a client's connections count together on every port.
    let per_ip = PerIp::new(&ctx.config.per_ip);
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    for spec in specs {
        let transport = spec.transport();
        let listener = TcpListener::bind(&spec.addr).await?;
        let local = listener.local_addr()?;
        tracing::info!(%local, ?transport, proxy_protocol = spec.proxy_protocol, "listening");
        addrs.push((transport, local));
        let http = spec.ws_path.map(|path| {
            Arc::new(HttpSide {
                ws_path: path,
                allowed_origins: http.allowed_origins.clone(),
                handlers: http.handlers.clone(),
                max_ws_payload: http.max_ws_payload,
            })
        });
        let edge = Edge {
            proxy: spec.proxy_protocol.then(|| {
                Arc::new(ProxyEdge {
                    timeout: ctx.config.handshake_timeout,
                    per_ip: per_ip.clone(),
                })
            }),
            per_ip: per_ip.clone(),
        };
        tasks.spawn(accept_loop(
            listener,
            ctx.clone(),
            spec.tls,
            http,
            edge,
            stop.clone(),
            conns.clone(),
        ));
    }
    if let Some(period) = ctx.config.heartbeat {
        tasks.spawn(heartbeat::sweeper(ctx.clone(), period, stop.clone()));
    }
    Ok(Server {
        ctx,
        addrs,
        stop_accepting: stop,
        accept_tasks: tasks,
        conns,
        per_ip,
        admin: None,
    })
}

/// What a listener does at its edge, before its transport: the PROXY header (when it expects
/// one) and the per-IP limits (when set).
struct Edge {
    proxy: Option<Arc<ProxyEdge>>,
    per_ip: Option<Arc<PerIp>>,
}

/// A PROXY-protocol listener's edge, run on the connection's task.
struct ProxyEdge {
    timeout: Duration,
    per_ip: Option<Arc<PerIp>>,
}

impl ProxyEdge {
    /// Reads the header (bounded by the handshake timeout), then applies the per-IP limits to
    /// the client it names. `None`: the connection must close (the reason is traced).
    async fn enter(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        done: &mut ConnDone,
    ) -> Option<SocketAddr> {
        let read = tokio::time::timeout(self.timeout, proxy::read_header(stream, peer));
        let remote = match read.await {
            Ok(Ok(remote)) => remote,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "PROXY header refused: closing");
                return None;
            }
            Err(_) => {
                tracing::info!(%peer, "PROXY header timeout: closing");
                return None;
            }
        };
        if let Some(per_ip) = &self.per_ip {
            done.ip = Some(per_ip.admit(remote.ip()).ok()?);
        }
        Some(remote)
    }
}

async fn accept_loop<S: Serializer>(
    listener: TcpListener,
    ctx: Arc<ServerCtx<S>>,
    tls: Option<TlsConfig>,
    http: Option<Arc<HttpSide>>,
    edge: Edge,
    stop: CancellationToken,
    conns: Arc<ConnTracker>,
) {
    let mut backoff = Duration::from_millis(5);
    // Refusals at the connection limit are logged at most once a second (a flood must not
    // fill the log), with the number refused since the last line.
    let mut next_limit_log = tokio::time::Instant::now();
    let mut refused_unlogged: u64 = 0;
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
            refused_unlogged += 1;
            let now = tokio::time::Instant::now();
            if now >= next_limit_log {
                next_limit_log = now + Duration::from_secs(1);
                let refused = std::mem::take(&mut refused_unlogged);
                tracing::warn!(%remote, refused, "connection limit reached: refusing");
            }
            if let Some(m) = &ctx.net_metrics {
                m.rejected("max connections");
            }
            drop(stream);
            continue;
        };
        let mut done = ConnDone {
            permit: Some(permit),
            conns: conns.clone(),
            ip: None,
        };
        // Without the PROXY protocol the peer is the client: its limits apply here, at once.
        // Behind it, they apply to the client the header names, once it is read.
        if let (None, Some(per_ip)) = (&edge.proxy, &edge.per_ip) {
            match per_ip.admit(remote.ip()) {
                Ok(guard) => done.ip = Some(guard),
                Err(why) => {
                    // Counted and traced; dropping the stream closes it.
                    if let Some(m) = &ctx.net_metrics {
                        m.rejected(why.label());
                    }
                    continue;
                }
            }
        }
        let _ = stream.set_nodelay(true);
        limit_unsent(&stream);
        let ctx = ctx.clone();
        let tls = tls.clone();
        let http = http.clone();
        let proxy = edge.proxy.clone();
        // One task type per transport: each task is only as large as its own path needs (a
        // plain TCP task does not carry TLS or WebSocket state).
        match (tls, http) {
            (None, None) => tokio::spawn(async move {
                let mut stream = stream;
                let remote = match &proxy {
                    None => remote,
                    Some(p) => match p.enter(&mut stream, remote, &mut done).await {
                        Some(r) => r,
                        None => return,
                    },
                };
                tcp_connection(ctx, stream, remote).await;
                drop(done);
            }),
            (Some(tls), None) => tokio::spawn(async move {
                let mut stream = stream;
                let remote = match &proxy {
                    None => remote,
                    Some(p) => match p.enter(&mut stream, remote, &mut done).await {
                        Some(r) => r,
                        None => return,
                    },
                };
                if let Some(stream) = tls_accept(&ctx, &tls, stream, remote).await {
                    let (r, w) = tokio::io::split(stream);
                    agent::serve(
                        ctx,
                        StreamSource::new(r),
                        StreamSink(w),
                        remote,
                        Transport::TcpTls,
                    )
                    .await;
                }
                drop(done);
            }),
            (None, Some(http)) => tokio::spawn(async move {
                let mut stream = stream;
                let remote = match &proxy {
                    None => remote,
                    Some(p) => match p.enter(&mut stream, remote, &mut done).await {
                        Some(r) => r,
                        None => return,
                    },
                };
                websocket(ctx, stream, remote, &http, Transport::WebSocket).await;
                drop(done);
            }),
            (Some(tls), Some(http)) => tokio::spawn(async move {
                let mut stream = stream;
                let remote = match &proxy {
                    None => remote,
                    Some(p) => match p.enter(&mut stream, remote, &mut done).await {
                        Some(r) => r,
                        None => return,
                    },
                };
                if let Some(stream) = tls_accept(&ctx, &tls, stream, remote).await {
                    websocket(ctx, stream, remote, &http, Transport::WebSocketTls).await;
                }
                drop(done);
            }),
        };
    }
}

/// Unsent bytes the kernel holds for one connection before its writes block (and below half
/// of which a blocked write is woken): with it, a write to a peer that reads slowly makes
/// progress in steps of at most 32 KiB, so the write deadline measures the peer's reading, not
/// the size the kernel's send buffer has grown to (a third of it, up to megabytes, must drain
/// before a blocked writer is woken otherwise). It also caps what a stuck peer holds in the
/// kernel.
const MAX_UNSENT: u32 = 64 * 1024;

fn limit_unsent(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(MAX_UNSENT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, MAX_UNSENT);
}

/// Held by a connection's task: frees its place under the connection limit when it ends, and
/// tells a waiting shutdown when it was the last.
struct ConnDone {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    conns: Arc<ConnTracker>,
    /// The client's place under the per-IP limits, when they are on.
    ip: Option<IpGuard>,
}

impl Drop for ConnDone {
    fn drop(&mut self) {
        drop(self.ip.take());
        drop(self.permit.take());
        if self.conns.active() == 0 {
            self.conns.all_done.notify_waiters();
        }
    }
}

fn tcp_connection<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    stream: TcpStream,
    remote: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    let (r, w) = stream.into_split();
    agent::serve(
        ctx,
        TcpSource::new(r),
        StreamSink(w),
        remote,
        Transport::Tcp,
    )
}

async fn tls_accept<S>(
    ctx: &ServerCtx<S>,
    tls: &TlsConfig,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio::time::timeout(ctx.config.handshake_timeout, tls.acceptor.accept(stream));
    let accepted = tokio::select! {
        r = accept => r,
        () = ctx.dropped.cancelled() => return None,
    };
    match accepted {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake failed");
            if let Some(m) = &ctx.net_metrics {
                m.rejected("tls handshake");
            }
            None
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timeout");
            None
        }
    }
}

async fn websocket<S, IO>(
    ctx: Arc<ServerCtx<S>>,
    stream: IO,
    remote: SocketAddr,
    http: &HttpSide,
    transport: Transport,
) where
    S: Serializer,
    IO: Upgraded,
{
    // Boxed: the HTTP phase is over once upgraded, so it must not stay in this future.
    let accept = tokio::time::timeout(
        ctx.config.handshake_timeout,
        Box::pin(http::accept(stream, http)),
    );
    let accepted = tokio::select! {
        r = accept => r,
        () = ctx.dropped.cancelled() => return,
    };
    match accepted {
        Ok(Ok(http::Accepted::WebSocket(stream, leftover))) => {
            let (read, write) = stream.into_halves();
            let (source, sink) = ws::pair(read, write, leftover, http.max_ws_payload);
            let source = source.with_write_timeout(ctx.config.write_timeout);
            agent::serve(ctx, source, sink, remote, transport).await;
        }
        Ok(Ok(http::Accepted::Done)) => {}
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "http error"),
        Err(_) => tracing::info!(%remote, "http request head timeout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_future<F>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's task lives as long as the connection: its future is the bulk of an idle
    /// connection's memory, so it must stay small (each transport has its own task type, so the
    /// plain TCP path is not burdened by TLS or WebSocket state).
    #[tokio::test]
    async fn connection_tasks_stay_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let conn = tcp_connection(ctx(), stream, remote);
        let tcp_size = size_of_future(&conn);
        assert!(
            size_of_future(&conn) <= 2048,
            "connection task: {}",
            size_of_future(&conn)
        );
        drop(client);

        // A WebSocket connection keeps only the upgraded stream's agent, not the HTTP phase.
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let side = HttpSide {
            ws_path: "/nano".into(),
            allowed_origins: None,
            handlers: Vec::new(),
            max_ws_payload: 1 << 16,
        };
        let ws = websocket(ctx(), stream, remote, &side, Transport::WebSocket);
        assert!(
            size_of_future(&ws) <= 2048,
            "websocket task: {}",
            size_of_future(&ws)
        );

        // The PROXY header is read into a heap buffer.
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut stream, remote) = listener.accept().await.unwrap();
        let edge = ProxyEdge {
            timeout: Duration::from_secs(1),
            per_ip: None,
        };
        let mut done = ConnDone {
            permit: None,
            conns: Arc::new(ConnTracker {
                limit: Arc::new(Semaphore::new(1)),
                max: 1,
                all_done: tokio::sync::Notify::new(),
            }),
            ip: None,
        };
        let enter = edge.enter(&mut stream, remote, &mut done);
        // Smaller than the phase after it, with which it shares the task's storage: a task
        // is no larger for the PROXY phase its listener may run (nor when it runs none).
        assert!(
            size_of_future(&enter) < tcp_size,
            "PROXY phase: {} (TCP connection: {tcp_size})",
            size_of_future(&enter)
        );
    }

    fn ctx() -> Arc<ServerCtx<nano_core::Json>> {
        let engine = nano_core::EngineBuilder::<nano_core::Json>::new()
            .build()
            .unwrap();
        Arc::new(ServerCtx::new(
            engine,
            crate::config::ServerConfig::default(),
        ))
    }
}
