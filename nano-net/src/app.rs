//! The application builder: components, serializer, listeners, settings; then run.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use nano_core::{Component, EngineBuilder, Json, Pipeline, RateLimit, Serializer};

use crate::config::{FullQueuePolicy, HandshakeRefusal, HandshakeRequest, ServerConfig};
use crate::ctx::ServerCtx;
use crate::http::{HttpHandler, HttpRequest, HttpResponse, HttpSide};
use crate::listen::bind;
use crate::listener::Listener;
use crate::per_ip::ConnectionRate;
use crate::server::Server;
use crate::tls::TlsConfig;

/// Starts building an application with the JSON serializer.
///
/// # Examples
///
/// ```no_run
/// # struct Room;
/// # impl Room { fn new() -> Self { Room } }
/// # fn demo(room: impl nano_core::Component<Serializer = nano_core::Json>) -> std::io::Result<()> {
/// nano_net::app()
///     .component(room)
///     .websocket("127.0.0.1:3250", "/nano")
///     .tcp("127.0.0.1:3251")
///     .run() // blocks until Ctrl-C / SIGTERM, then shuts down gracefully
/// # }
/// ```
pub fn app() -> App<Json> {
    App::new()
}

/// Starts building an application with serializer `S` (e.g. [`Protobuf`](nano_core::Protobuf)).
/// The serializer comes first because components, pipelines and extensions are typed by it:
/// there is no way to change it later, so no setting can be lost to a change.
///
/// # Examples
///
/// ```no_run
/// # fn demo(handler: impl nano_core::Component<Serializer = nano_core::Protobuf>) -> std::io::Result<()> {
/// use nano_core::Protobuf;
///
/// nano_net::app_with(Protobuf)
///     .component(handler)
///     .push_routes(["pong"])
///     .tcp("127.0.0.1:3250")
///     .run()
/// # }
/// ```
pub fn app_with<S: Serializer>(_serializer: S) -> App<S> {
    App::new()
}

/// An application being configured. `S` is its serializer.
pub struct App<S = Json> {
    engine: EngineBuilder<S>,
    config: ServerConfig,
    listeners: Vec<Listener>,
    http: Vec<HttpHandler>,
    /// Whether the metrics are on (they are whenever there is an admin listener).
    metrics: bool,
    /// The admin listener's address.
    admin: Option<String>,
}

impl<S: Serializer> Default for App<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Serializer> App<S> {
    /// An empty application.
    pub fn new() -> Self {
        App {
            engine: EngineBuilder::new(),
            config: ServerConfig::default(),
            listeners: Vec::new(),
            http: Vec::new(),
            metrics: false,
            admin: None,
        }
    }

    /// Registers a component on the shared logic scheduler.
    #[must_use]
    pub fn component<C: Component<Serializer = S>>(mut self, component: C) -> Self {
        self.engine = self.engine.component(component);
        self
    }

    /// Registers a component on its own named scheduler (components on different schedulers
    /// run in parallel).
    #[must_use]
    pub fn component_on<C: Component<Serializer = S>>(
        mut self,
        component: C,
        scheduler: &str,
    ) -> Self {
        self.engine = self.engine.component_on(component, scheduler);
        self
    }

    /// Registers a component under another name (routes `name.Handler`) on the scheduler
    /// named `scheduler`: several instances of one component type, each running in parallel.
    #[must_use]
    pub fn component_named<C: Component<Serializer = S>>(
        mut self,
        component: C,
        name: &str,
        scheduler: &str,
    ) -> Self {
        self.engine = self.engine.component_named(component, name, scheduler);
        self
    }

    /// Adds pipeline interceptors.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::{Envelope, Session};
    ///
    /// // Refuse every message until the session is bound to a user, except the login.
    /// let app = nano_net::app().pipeline(|p| {
    ///     p.inbound.push_back(|s: &Session, m: &Envelope<'_>| {
    ///         if s.uid().is_some() || m.route == Some("Auth.Login") {
    ///             Ok(())
    ///         } else {
    ///             Err(nano_core::Error::forbidden("log in first"))
    ///         }
    ///     });
    /// });
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn pipeline(mut self, f: impl FnOnce(&mut Pipeline<S>)) -> Self {
        f(self.engine.pipeline_mut());
        self
    }

    /// Adds push routes to the route dictionary.
    ///
    /// # Examples
    ///
    /// ```
    /// let app = nano_net::app().push_routes(["onMessage", "onMembers"]);
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn push_routes<I: IntoIterator<Item = impl Into<String>>>(mut self, routes: I) -> Self {
        self.engine = self.engine.push_routes(routes);
        self
    }

    /// Offer the route dictionary in the handshake (default true).
    #[must_use]
    pub fn route_compression(mut self, on: bool) -> Self {
        self.engine = self.engine.route_compression(on);
        self
    }

    /// Largest packet body accepted or sent (default 64 KiB); larger headers are refused.
    #[must_use]
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.engine = self.engine.max_packet_size(bytes);
        self
    }

    /// Limits each session's message rate (token bucket: an average rate and a burst); over
    /// it, a request gets `NANO-429` and a notify is dropped, or the session is kicked with
    /// the reason `"rate limit"` (see [`nano_core::OverLimit`]). Default: no limit.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nano_core::{OverLimit, RateLimit};
    ///
    /// # fn demo() -> std::io::Result<()> {
    /// nano_net::app()
    ///     .rate_limit(RateLimit::new(100.0, 200).on_exceed(OverLimit::Kick))
    ///     .tcp("127.0.0.1:3250")
    ///     .run()
    /// # }
    /// ```
    #[must_use]
    pub fn rate_limit(mut self, limit: impl Into<Option<RateLimit>>) -> Self {
        self.engine = self.engine.rate_limit(limit);
        self
    }

    /// Heartbeat interval (default 30 s); `None` disables heartbeats and the liveness check.
    /// The handshake announces whole seconds: a fractional interval is rounded up to the next
    /// second (with a warning at start), and the server sweeps at that announced interval.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let app = nano_net::app().heartbeat(Some(Duration::from_secs(10)));
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.config.heartbeat = interval.filter(|d| !d.is_zero());
        self
    }

    /// Resumes sessions whose connection drops (off by default): the session waits `resume`'s
    /// grace period for its client, keeping its uid, data and groups, and what is sent to it
    /// meanwhile (bounded, see [`Resume::buffer`](crate::Resume::buffer)); a client that
    /// comes back with its token gets the same session, the missed packets replayed in order,
    /// once. The handshake carries the token; nano's Rust client and `nano.js` reconnect and
    /// resume on their own, and clients that know nothing of it go on as before. A session the
    /// server kicks or closes is not suspended. Components see it with
    /// [`Context::on_session_suspended`](nano_core::Context::on_session_suspended) and
    /// [`on_session_resumed`](nano_core::Context::on_session_resumed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let app = nano_net::app().resume(Duration::from_secs(30));
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn resume(mut self, resume: impl Into<crate::Resume>) -> Self {
        self.config.resume = Some(resume.into());
        self
    }

    /// Time allowed from accept to HandshakeAck (default 10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.config.handshake_timeout = t;
        self
    }

    /// Maximum connections served at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// Packets queued per connection (default 1024).
    #[must_use]
    pub fn send_queue(mut self, n: usize) -> Self {
        self.config.send_queue = n.max(1);
        self
    }

    /// Bytes queued per connection (default 1 MiB) before the full-queue policy applies, as
    /// for the packet bound of [`App::send_queue`].
    #[must_use]
    pub fn send_queue_bytes(mut self, n: usize) -> Self {
        self.config.send_queue_bytes = n.max(1);
        self
    }

    /// Closes a connection whose writes accept no byte for `t` (default 5 s): a client that
    /// stops reading is let go. Progress (the socket accepting bytes) restarts the clock.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let app = nano_net::app().write_timeout(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.config.write_timeout = t.max(Duration::from_millis(1));
        self
    }

    /// Largest packet body accepted before the handshake completes (default 4 KiB, at least
    /// 64 bytes): a Handshake over it is refused and the connection closed, and a peer that
    /// has not shaken hands holds no more buffer than about this.
    #[must_use]
    pub fn max_handshake_size(mut self, bytes: usize) -> Self {
        self.config.max_handshake_size = bytes.max(64);
        self
    }

    /// What to do when a connection's send queue is full.
    #[must_use]
    pub fn on_full_queue(mut self, policy: FullQueuePolicy) -> Self {
        self.config.on_full_queue = policy;
        self
    }

    /// Time allowed for graceful shutdown (default 5 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.config.shutdown_timeout = t;
        self
    }

    /// Accepts WebSocket upgrades only from these `Origin`s (browser pages of other sites are
    /// refused with 403). Clients that send no `Origin` (not browsers) are always accepted.
    #[must_use]
    pub fn allowed_origins<I: IntoIterator<Item = impl Into<String>>>(
        mut self,
        origins: I,
    ) -> Self {
        self.config.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Validates client handshakes; a refusal is answered with its code, then the connection
    /// closes.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_net::HandshakeRefusal;
    ///
    /// // Only clients of version 1.x (pomelo's 501 "version not supported" otherwise).
    /// let app = nano_net::app().handshake_validator(|req| {
    ///     let version = req.sys["version"].as_str().unwrap_or("");
    ///     if version.starts_with("1.") {
    ///         Ok(())
    ///     } else {
    ///         Err(HandshakeRefusal { code: 501, reason: "version not supported".into() })
    ///     }
    /// });
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn handshake_validator(
        mut self,
        f: impl Fn(&HandshakeRequest) -> Result<(), HandshakeRefusal> + Send + Sync + 'static,
    ) -> Self {
        self.config.validator = Some(Arc::new(f));
        self
    }

    /// Listens for raw TCP clients (shorthand for `listen(Listener::tcp(addr))`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo() -> std::io::Result<()> {
    /// nano_net::app().tcp("127.0.0.1:3250").websocket("127.0.0.1:3251", "/nano").run()
    /// # }
    /// ```
    #[must_use]
    pub fn tcp(self, addr: impl Into<String>) -> Self {
        self.listen(Listener::tcp(addr))
    }

    /// Listens for TCP clients over TLS.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use nano_net::TlsConfig;
    /// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
    /// nano_net::app().tcp_tls("0.0.0.0:3250", tls).run()?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn tcp_tls(self, addr: impl Into<String>, tls: TlsConfig) -> Self {
        self.listen(Listener::tcp(addr).tls(tls))
    }

    /// Listens for WebSocket clients on `path`; other paths get plain HTTP (see
    /// [`App::http_handler`]).
    #[must_use]
    pub fn websocket(self, addr: impl Into<String>, path: impl Into<String>) -> Self {
        self.listen(Listener::websocket(addr, path))
    }

    /// Listens for WebSocket clients over TLS (`wss://`).
    #[must_use]
    pub fn websocket_tls(
        self,
        addr: impl Into<String>,
        path: impl Into<String>,
        tls: TlsConfig,
    ) -> Self {
        self.listen(Listener::websocket(addr, path).tls(tls))
    }

    /// Adds a listener with its options (TLS, PROXY protocol); see [`Listener`].
    ///
    /// ```no_run
    /// # fn demo() -> std::io::Result<()> {
    /// use nano_net::Listener;
    /// nano_net::app()
    ///     .listen(Listener::tcp("0.0.0.0:3250").proxy_protocol())
    ///     .run()
    /// # }
    /// ```
    #[must_use]
    pub fn listen(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Caps the connections served at once per client address (IPv4 address, IPv6 /64),
    /// across all listeners; more are closed at once. Off by default (see
    /// [`PerIpLimits`](crate::PerIpLimits) for why). Behind a PROXY-protocol listener the
    /// client is the one the header names.
    ///
    /// # Examples
    ///
    /// ```
    /// let app = nano_net::app()
    ///     .max_connections_per_ip(50)
    ///     .connection_rate_per_ip(5.0, 20);
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn max_connections_per_ip(mut self, n: u32) -> Self {
        self.config.per_ip.max_connections = Some(n.max(1));
        self
    }

    /// Limits how fast one client address opens connections: a token bucket of `burst`
    /// connections refilled at `per_second`; connections over the rate are closed at once.
    /// Off by default.
    #[must_use]
    pub fn connection_rate_per_ip(mut self, per_second: f64, burst: u32) -> Self {
        self.config.per_ip.rate = Some(ConnectionRate { per_second, burst });
        self
    }

    /// How many client addresses the per-IP limits track at once (default 65 536); a new
    /// client finding the table full (after idle entries are swept) is refused.
    #[must_use]
    pub fn per_ip_table_size(mut self, n: usize) -> Self {
        self.config.per_ip.max_tracked = n.max(1);
        self
    }

    /// Answers plain HTTP requests on the WebSocket ports (go-nano's `WithHTTPHandler`). The
    /// handlers run on tokio's blocking pool (they may read files; a panic answers 500).
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_net::HttpResponse;
    ///
    /// let app = nano_net::app()
    ///     .http_handler(|req| (req.path == "/health").then(|| HttpResponse::ok("text/plain", "ok")))
    ///     .websocket("127.0.0.1:3250", "/nano");
    /// # drop(app);
    /// ```
    #[must_use]
    pub fn http_handler(
        mut self,
        f: impl Fn(&HttpRequest) -> Option<HttpResponse> + Send + Sync + 'static,
    ) -> Self {
        self.http.push(Arc::new(f));
        self
    }

    /// Serves the files of `dir` under the URL prefix `prefix` on the WebSocket ports.
    #[must_use]
    pub fn http_static(mut self, prefix: &str, dir: impl Into<std::path::PathBuf>) -> Self {
        self.http.push(crate::http::static_dir(prefix, dir));
        self
    }

    /// Serves files embedded in the binary on the WebSocket ports (see [`crate::embedded`]).
    #[must_use]
    pub fn http_embedded(mut self, files: &'static [(&'static str, &'static [u8])]) -> Self {
        self.http.push(crate::http::embedded(files));
        self
    }

    /// Adds an [`Extension`](nano_core::extension::Extension): started after the engine,
    /// offered the messages whose route no local component serves, stopped once the
    /// connections ended at shutdown. A cluster node (`nano-cluster`) is one.
    ///
    /// # Examples
    ///
    /// A cluster gate (see `nano_cluster::node::Cluster`):
    ///
    /// ```text
    /// let gate = Cluster::new("gate-1").master("127.0.0.1:34560").build::<Json>();
    /// nano::app().extension(gate).websocket("127.0.0.1:34590", "/nano").run()
    /// ```
    #[must_use]
    pub fn extension(mut self, extension: Arc<dyn nano_core::extension::Extension<S>>) -> Self {
        self.engine = self.engine.extension(extension);
        self
    }

    /// Serves the admin endpoints on `addr`, an address of their own (never a client port;
    /// keep it private, e.g. on 127.0.0.1): `/metrics` in the Prometheus text format, the
    /// monitor page `/debug/nano/node`, and its data `/debug/nano/node.json`. Turns the
    /// [`metrics`](Self::metrics) on. [`Server::admin_addr`] is the bound address (port 0
    /// picks a free one).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let server = nano_net::app()
    ///     .websocket("127.0.0.1:3250", "/nano")
    ///     .admin("127.0.0.1:9250")
    ///     .start()
    ///     .await?;
    /// println!("monitor: http://{}/debug/nano/node", server.admin_addr().unwrap());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn admin(mut self, addr: impl Into<String>) -> Self {
        self.admin = Some(addr.into());
        self.metrics = true;
        self
    }

    /// Turns the metrics on or off (default off; on with an [`admin`](Self::admin)
    /// listener): handler response times by route, queueing delay, messages and bytes,
    /// connections, kicks and disconnects, read with [`Server::metrics`] or on the admin
    /// listener's `/metrics`.
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on || self.admin.is_some();
        self
    }

    /// The application's API as clients see it (routes, kinds, codes, payload types and
    /// schemas, declared pushes; see [`nano_core::api`]), without serving anything.
    ///
    /// # Errors
    ///
    /// As [`App::start`]: duplicate routes.
    pub fn api(self) -> io::Result<nano_core::api::Api> {
        let engine = self
            .engine
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(engine.api())
    }

    /// Writes the application's API into `dir` (created if missing), for client developers:
    /// `api.json` (the description), and typed client stubs over `nano.js`: `api.js` and its
    /// TypeScript declarations `api.d.ts` (see [`nano_core::api::typescript`]). Returns the
    /// API written.
    ///
    /// # Errors
    ///
    /// As [`App::api`], or when the files cannot be written.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let dir = std::env::temp_dir().join(format!("nano-api-doc-{}", std::process::id()));
    /// let api = nano_net::app().push_routes(["onTick"]).export_api(&dir)?;
    /// assert!(dir.join("api.d.ts").exists());
    /// # assert!(api.routes.is_empty());
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub fn export_api(self, dir: impl AsRef<std::path::Path>) -> io::Result<nano_core::api::Api> {
        let dir = dir.as_ref();
        let api = self.api()?;
        let stubs = nano_core::api::typescript::generate(&api);
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("api.json"), api.to_json() + "\n")?;
        std::fs::write(dir.join("api.js"), stubs.js)?;
        std::fs::write(dir.join("api.d.ts"), stubs.dts)?;
        Ok(api)
    }

    /// Builds the application, binds every listener and starts serving; returns at once.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// Binding failures, duplicate routes, an extension that cannot start.
    pub async fn start(self) -> io::Result<Server<S>> {
        let admin = match &self.admin {
            Some(addr) => Some(crate::admin::bind(addr).await?),
            None => None,
        };
        let mut builder = self.engine;
        let mut net_metrics = None;
        if self.metrics {
            let mut registry = nano_core::metrics::prometheus_client::registry::Registry::default();
            net_metrics = Some(Arc::new(crate::admin::metrics::NetMetrics::register(
                &mut registry,
            )));
            builder = builder.metrics(registry);
        }
        let engine = builder
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let max_packet = engine.max_packet_size();
        engine.start().await;
        for ext in engine.extensions() {
            if let Err(e) = ext.start(&engine).await {
                engine.shutdown().await;
                return Err(io::Error::other(e));
            }
        }
        let mut ctx = ServerCtx::new(engine, self.config.clone());
        ctx.net_metrics = net_metrics;
        let ctx = Arc::new(ctx);
        // Frames carry whole packets (a couple of them at most, from our clients); a larger
        // frame or fragmented message ends the connection.
        let max_ws_payload = 2 * (max_packet + 4);
        let http = Arc::new(HttpSide {
            ws_path: String::new(),
            allowed_origins: self.config.allowed_origins.clone(),
            handlers: self.http,
            max_ws_payload,
        });
        let mut server = bind(ctx, self.listeners, http).await?;
        if let Some((listener, local)) = admin {
            tracing::info!(%local, "admin listening");
            let facts = Arc::new(crate::admin::NodeFacts {
                name: app_name(),
                listeners: server.addrs.clone(),
            });
            server.admin = Some(local);
            server.accept_tasks.spawn(crate::admin::serve(
                listener,
                server.ctx.clone(),
                facts,
                server.stop_accepting.clone(),
            ));
        }
        Ok(server)
    }

    /// Runs the application on a new multi-threaded tokio runtime until Ctrl-C or SIGTERM,
    /// then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// As [`App::start`], or when the runtime cannot be created.
    pub fn run(self) -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let server = self.start().await?;
            server.run_until_signal().await;
            Ok(())
        })
    }
}

/// The application's name on the monitor page: its binary's.
fn app_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "nano".to_owned())
}
