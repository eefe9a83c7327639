//! [`NodeLink`]: this node's handle to one peer, whichever side dialed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::conn::{self, Conn, Counters};
use super::proto::{self, frame::Kind};
use super::{LinkConfig, LinkError, LinkHandler, LinkStats};

/// Where a [`NodeLink`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected: dialing (or waiting to redial) on a dialed link, waiting for the peer to
    /// dial on an accepted one. Sends fail at once with `NANO-503`.
    Down,
    /// Connected: both `Hello`s exchanged.
    Up,
    /// Closed for good ([`NodeLink::close`], or its server shut down).
    Closed,
}

/// This node's handle to one peer: requests with deadlines, fire-and-forget frames, and the
/// state of the connection under them. Cheap to clone.
///
/// A pair of nodes keeps one link: the node with the lower id dials ([`dials`](super::dials)),
/// the other accepts it in its [`NodeServer`](super::NodeServer); both ends then use it alike.
/// A dialed link redials with exponential backoff whenever its stream is lost; an accepted one
/// is `Down` until the peer dials again. In either case the handle stays valid.
///
/// **While the link is down**, requests and sends fail at once with
/// [`LinkError::Unavailable`] (nothing is queued for later); every request in flight when the
/// stream is lost is answered with it at that moment. Sends never block: the per-connection
/// queue is bounded ([`LinkConfig::queue_capacity`]) and a send to a full queue fails with
/// [`LinkError::QueueFull`].
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use nano_cluster::link::{proto, LinkConfig, NoHandler, NodeLink};
///
/// let link = NodeLink::dial("backend-1", "127.0.0.1:34580".parse()?, LinkConfig::default(), NoHandler);
/// link.wait_up(Duration::from_secs(2)).await?;
/// let req = proto::Request {
///     route: "RoomService.JoinRoom".into(),
///     payload: b"{}".to_vec().into(),
///     ..Default::default()
/// };
/// let answer = link.request(req, Duration::from_secs(5)).await?;
/// # let _ = answer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct NodeLink {
    shared: Arc<Shared>,
}

struct Shared {
    local_id: Arc<str>,
    /// Known from the start on an accepted link, from the peer's `Hello` on a dialed one.
    peer_id: Mutex<Option<Arc<str>>>,
    /// The address dialed; `None` on an accepted link.
    addr: Option<SocketAddr>,
    conn: Mutex<Option<Arc<Conn>>>,
    state: watch::Sender<LinkState>,
    counters: Arc<Counters>,
    config: LinkConfig,
    handler: Arc<dyn LinkHandler>,
    /// Cancelled by `close`: stops the redialing.
    closed: CancellationToken,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink")
            .field("local_id", &self.shared.local_id)
            .field("peer_id", &self.peer_id())
            .field("addr", &self.shared.addr)
            .field("state", &self.state())
            .finish()
    }
}

impl NodeLink {
    /// Dials the peer listening on `addr` and keeps the link up from now on: the first dial
    /// starts at once, in the background; each lost or refused connection is redialed after a
    /// backoff from [`LinkConfig::backoff_min`] doubling to [`LinkConfig::backoff_max`]. Frames
    /// the peer sends go to `handler`. Wait for the link with [`wait_up`](Self::wait_up).
    ///
    /// By the cluster's rule the local id is the lower of the two (see
    /// [`dials`](super::dials)); the peer's server refuses the link otherwise, and this side
    /// keeps retrying (and tracing the refusal). Once the peer's id is known (its first
    /// `Hello`), a different node answering on `addr` is refused the same way: the link stays
    /// the link to that one node.
    ///
    /// The link redials until [`close`](Self::close)d — dropping the handles does not stop it
    /// (the owner, e.g. the router reacting to discovery, closes it when the peer leaves).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn dial(
        local_id: impl Into<Arc<str>>,
        addr: SocketAddr,
        config: LinkConfig,
        handler: impl LinkHandler,
    ) -> NodeLink {
        NodeLink::dial_inner(local_id.into(), None, addr, config, Arc::new(handler))
    }

    /// Dials `addr`, expecting node `peer_id` there (a different node answering is refused).
    pub(crate) fn dial_inner(
        local_id: Arc<str>,
        peer_id: Option<Arc<str>>,
        addr: SocketAddr,
        config: LinkConfig,
        handler: Arc<dyn LinkHandler>,
    ) -> NodeLink {
        let link = NodeLink::new(local_id, peer_id, Some(addr), config, handler);
        tokio::spawn(dial_loop(link.clone(), addr));
        link
    }

    /// The handle for a peer that dials us: `Down` until it does.
    pub(crate) fn accepted(
        local_id: Arc<str>,
        peer_id: Arc<str>,
        config: LinkConfig,
        handler: Arc<dyn LinkHandler>,
    ) -> NodeLink {
        NodeLink::new(local_id, Some(peer_id), None, config, handler)
    }

    fn new(
        local_id: Arc<str>,
        peer_id: Option<Arc<str>>,
        addr: Option<SocketAddr>,
        config: LinkConfig,
        handler: Arc<dyn LinkHandler>,
    ) -> NodeLink {
        NodeLink {
            shared: Arc::new(Shared {
                local_id,
                peer_id: Mutex::new(peer_id),
                addr,
                conn: Mutex::new(None),
                state: watch::Sender::new(LinkState::Down),
                counters: Arc::default(),
                config,
                handler,
                closed: CancellationToken::new(),
            }),
        }
    }

    /// This node's id.
    pub fn local_id(&self) -> &str {
        &self.shared.local_id
    }

    /// The peer's node id; `None` on a dialed link that has not been up yet.
    pub fn peer_id(&self) -> Option<Arc<str>> {
        lock(&self.shared.peer_id).clone()
    }

    /// The address this link dials; `None` when the peer dials us.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.shared.addr
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.shared.state.borrow()
    }

    /// A receiver of every state change, to wait for a link to go down or come back.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Waits until the link is [`Up`](LinkState::Up), at most `within`.
    ///
    /// # Errors
    ///
    /// [`LinkError::Unavailable`] when it is not up within `within`, or is closed.
    pub async fn wait_up(&self, within: Duration) -> Result<(), LinkError> {
        let mut rx = self.watch_state();
        let up = async { rx.wait_for(|s| *s != LinkState::Down).await.map(|s| *s) };
        match tokio::time::timeout(within, up).await {
            Ok(Ok(LinkState::Up)) => Ok(()),
            Ok(_) => Err(LinkError::Unavailable("link closed")),
            Err(_) => Err(LinkError::Unavailable("link not up in time")),
        }
    }

    /// Traffic counters since the link was created.
    pub fn stats(&self) -> LinkStats {
        self.shared.counters.snapshot()
    }

    /// Sends a request and waits for its answer, at most `deadline` whatever the peer does.
    ///
    /// The link assigns `req.request_id` and sets `req.deadline_ms` from `deadline`; the other
    /// fields are the caller's. Dropping the returned future forgets the request (a late answer
    /// is discarded).
    ///
    /// # Errors
    ///
    /// - [`LinkError::Remote`]: the peer answered with an error (its handler's, unchanged);
    /// - [`LinkError::DeadlineExceeded`] (`NANO-504`): no answer within `deadline`;
    /// - [`LinkError::Unavailable`] (`NANO-503`): the link is down, or the connection was lost
    ///   before the answer (reported at once, not at the deadline);
    /// - [`LinkError::QueueFull`], [`LinkError::TooLarge`]: not sent.
    pub async fn request(
        &self,
        req: proto::Request,
        deadline: Duration,
    ) -> Result<Bytes, LinkError> {
        let conn = self.conn()?;
        conn.request(req, deadline).await
    }

    /// Queues one frame of any kind, without waiting for anything.
    ///
    /// # Errors
    ///
    /// [`LinkError::Unavailable`] when the link is down, [`LinkError::QueueFull`] and
    /// [`LinkError::TooLarge`] when the frame cannot be queued. A frame queued successfully
    /// can still be lost with the connection.
    pub fn send(&self, kind: Kind) -> Result<(), LinkError> {
        self.conn()?.send(kind)
    }

    /// Sends a message without answer. See [`send`](Self::send) for the errors.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn notify(&self, notify: proto::Notify) -> Result<(), LinkError> {
        self.send(Kind::Notify(notify))
    }

    /// Sends one push for several sessions of the peer: a group broadcast sends one of these
    /// per gate, with every member that gate holds.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn push(
        &self,
        route: impl Into<String>,
        payload: Bytes,
        session_ids: Vec<u64>,
    ) -> Result<(), LinkError> {
        self.send(Kind::Push(proto::Push {
            route: route.into(),
            payload,
            session_ids,
        }))
    }

    /// Asks the peer (the session's gate) to kick a session, with an optional reason.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn kick(&self, session_id: u64, reason: Option<&str>) -> Result<(), LinkError> {
        self.send(Kind::Kick(proto::Kick {
            session_id,
            reason: reason.unwrap_or_default().to_owned(),
        }))
    }

    /// Asks the peer (the session's gate) to close a session without a Kick packet.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn close_session(&self, session_id: u64) -> Result<(), LinkError> {
        self.send(Kind::Close(proto::Close { session_id }))
    }

    /// Tells the peer (a backend) that a session of this gate is gone.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn session_closed(&self, session_id: u64) -> Result<(), LinkError> {
        self.send(Kind::SessionClosed(proto::SessionClosed { session_id }))
    }

    /// Tells the peer (the session's gate) that a uid was bound to its session.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn bind(&self, session_id: u64, uid: impl Into<String>) -> Result<(), LinkError> {
        self.send(Kind::Bind(proto::Bind {
            session_id,
            uid: uid.into(),
        }))
    }

    /// Tells the peer (the session's gate) that this node holds a stand-in of its session.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn holding(&self, session_id: u64) -> Result<(), LinkError> {
        self.send(Kind::Holding(proto::Holding { session_id }))
    }

    /// Tells the peer (another gate) that this gate bound `uid` to its session `session_id`.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn uid_bound(&self, uid: &str, session_id: u64) -> Result<(), LinkError> {
        self.send(Kind::UidBound(proto::UidBound {
            uid: uid.to_owned(),
            session_id,
        }))
    }

    /// Closes the link for good: stops redialing, ends the stream, answers the pending
    /// requests with `NANO-503`.
    pub fn close(&self) {
        self.shared.closed.cancel();
        let conn = lock(&self.shared.conn).take();
        self.shared.state.send_replace(LinkState::Closed);
        if let Some(conn) = conn {
            conn.close();
        }
    }

    /// A number that identifies this link among the live ones (its shared state's address).
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.shared).cast::<()>() as usize
    }

    /// Whether the two handles are the same link.
    pub fn same(&self, other: &NodeLink) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn handler(&self) -> &dyn LinkHandler {
        &*self.shared.handler
    }

    pub(crate) fn config(&self) -> &LinkConfig {
        &self.shared.config
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    fn conn(&self) -> Result<Arc<Conn>, LinkError> {
        match &*lock(&self.shared.conn) {
            Some(conn) => Ok(conn.clone()),
            None if self.shared.closed.is_cancelled() => Err(LinkError::Unavailable("link closed")),
            None => Err(LinkError::Unavailable("peer not connected")),
        }
    }

    /// Makes `conn` the link's connection (closing a previous one) and reports it up.
    ///
    /// Returns `false` (and closes `conn`) when the link is closed already.
    pub(crate) fn attach(&self, conn: Arc<Conn>) -> bool {
        let previous = {
            let mut slot = lock(&self.shared.conn);
            if self.shared.closed.is_cancelled() {
                drop(slot);
                conn.close();
                return false;
            }
            slot.replace(conn)
        };
        if let Some(previous) = previous {
            previous.close();
        }
        self.shared.state.send_replace(LinkState::Up);
        self.handler().on_connected(self);
        true
    }

    /// Forgets `conn` if it is still the link's connection, and reports the link down.
    pub(crate) fn detach(&self, conn: &Arc<Conn>) {
        {
            let mut slot = lock(&self.shared.conn);
            match &*slot {
                Some(current) if Arc::ptr_eq(current, conn) => *slot = None,
                _ => return,
            }
        }
        if !self.shared.closed.is_cancelled() {
            self.shared.state.send_replace(LinkState::Down);
        }
        self.handler().on_disconnected(self);
    }

    fn set_peer_id(&self, id: Arc<str>) {
        *lock(&self.shared.peer_id) = Some(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Keeps a dialed link up until it is closed.
async fn dial_loop(link: NodeLink, addr: SocketAddr) {
    let closed = link.shared.closed.clone();
    let (min, max) = (link.config().backoff_min, link.config().backoff_max);
    let mut backoff = min;
    loop {
        let attempt = tokio::select! {
            _ = closed.cancelled() => return,
            r = dial_once(&link, addr) => r,
        };
        match attempt {
            Ok(conn) => {
                backoff = min;
                let done = conn.closed();
                drop(conn);
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = done.cancelled() => {}
                }
                tracing::info!(%addr, peer = ?link.peer_id(), "node link lost, redialing");
            }
            Err(e) => tracing::debug!(%addr, error = %e, "node link dial failed"),
        }
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

/// One dial: TCP + HTTP/2, the `Link` stream, both `Hello`s; then the reader runs on its own.
async fn dial_once(link: &NodeLink, addr: SocketAddr) -> Result<Arc<Conn>, BoxError> {
    let config = link.config();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true);
    let channel = tokio::time::timeout(config.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| "connect timed out")??;
    let mut client = proto::node_client::NodeClient::new(channel)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let (conn, outbound) = Conn::new(config, link.counters());
    // Closes the half-made connection (ending its outbound stream) on every early return.
    let guard = CloseOnDrop(Some(conn.clone()));
    conn.send(conn::hello(link.local_id()))?;
    let hello_timeout = config.hello_timeout;
    let response = tokio::time::timeout(hello_timeout, client.link(outbound))
        .await
        .map_err(|_| "no answer to the link call in time")??;
    let mut inbound = response.into_inner();
    let first = tokio::time::timeout(hello_timeout, inbound.message())
        .await
        .map_err(|_| "no Hello from the peer in time")??
        .ok_or("the peer ended the stream before its Hello")?;
    let counters = link.counters();
    counters.count_received(first.frames.len());
    let (hello, rest) = conn::split_hello(first)?;
    if let Some(known) = link.peer_id() {
        if *known != *hello.node_id {
            return Err(format!(
                "expected node {known} at {addr}, found node {}",
                hello.node_id
            )
            .into());
        }
    }
    if !super::dials(link.local_id(), &hello.node_id) {
        return Err(format!(
            "node {} at {addr} must dial this node, not the other way",
            hello.node_id
        )
        .into());
    }
    let peer: Arc<str> = hello.node_id.into();
    link.set_peer_id(peer.clone());
    guard.disarm();
    if !link.attach(conn.clone()) {
        return Err("link closed".into());
    }
    tracing::debug!(%addr, %peer, "node link up");
    tokio::spawn(conn::read_loop(
        conn.clone(),
        link.clone(),
        inbound,
        rest,
        counters,
    ));
    Ok(conn)
}

struct CloseOnDrop(Option<Arc<Conn>>);

impl CloseOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.close();
        }
    }
}
