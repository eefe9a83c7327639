//! The accepting side of node links: the tonic `Node` service, and a server on the cluster
//! listen address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{Stream, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::conn::{self, Conn};
use super::proto;
use super::{dials, BindError, LinkConfig, LinkHandler, LinkState, NodeLink};

/// The `nano.link.v1.Node` service: accepts the links peers dial to this node.
///
/// [`NodeServer`] runs it on its own listener; to serve it next to other gRPC services on the
/// same address, add [`LinkService::grpc`] to a tonic router instead.
///
/// Each peer gets one [`NodeLink`] handle, kept across its reconnections: a peer dialing again
/// replaces its previous stream (whose pending requests are answered with `NANO-503`).
#[derive(Clone)]
pub struct LinkService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    local_id: Arc<str>,
    config: LinkConfig,
    handler: Arc<dyn LinkHandler>,
    peers: Mutex<HashMap<Arc<str>, NodeLink>>,
    shutdown: CancellationToken,
}

impl LinkService {
    /// The service of node `local_id`; frames from peers go to `handler`.
    pub fn new(
        local_id: impl Into<Arc<str>>,
        config: LinkConfig,
        handler: impl LinkHandler,
    ) -> Self {
        LinkService {
            inner: Arc::new(ServiceInner {
                local_id: local_id.into(),
                config,
                handler: Arc::new(handler),
                peers: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The tonic service, with the message limits of the [`LinkConfig`].
    pub fn grpc(&self) -> proto::node_server::NodeServer<LinkService> {
        let max = self.inner.config.max_message_bytes;
        proto::node_server::NodeServer::new(self.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// The link to peer `node_id` listening on `addr`, made on first use, following the
    /// one-link-per-pair rule: when this node has the lower id it dials `addr` (and keeps
    /// redialing); otherwise the link is the one the peer dials, `Down` until it does. Either
    /// way the same handle is returned for the peer from then on (a dialed link whose address
    /// changed is closed and dialed anew). Frames the peer sends go to this service's handler.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when it dials.
    pub fn link_to(&self, node_id: &str, addr: SocketAddr) -> NodeLink {
        let inner = &self.inner;
        let mut peers = self.lock_peers();
        if let Some(link) = peers.get(node_id) {
            match link.addr() {
                Some(old) if old != addr => link.close(),
                _ => return link.clone(),
            }
        }
        let peer: Arc<str> = node_id.into();
        let link = if dials(&inner.local_id, node_id) {
            NodeLink::dial_inner(
                inner.local_id.clone(),
                Some(peer.clone()),
                addr,
                inner.config.clone(),
                inner.handler.clone(),
            )
        } else {
            NodeLink::accepted(
                inner.local_id.clone(),
                peer.clone(),
                inner.config.clone(),
                inner.handler.clone(),
            )
        };
        if inner.shutdown.is_cancelled() {
            link.close();
        } else {
            peers.insert(peer, link.clone());
        }
        link
    }

    /// The link of peer `node_id`: one that dialed this node, or one made by
    /// [`link_to`](Self::link_to).
    pub fn peer(&self, node_id: &str) -> Option<NodeLink> {
        self.lock_peers().get(node_id).cloned()
    }

    /// Every peer's link (dialed by this node or by the peer).
    pub fn peers(&self) -> Vec<NodeLink> {
        self.lock_peers().values().cloned().collect()
    }

    /// Closes and forgets the link of a peer that left the cluster (its pending requests are
    /// answered with `NANO-503`); if it dials again, it gets a new [`NodeLink`]. Returns
    /// whether the peer was known.
    pub fn forget(&self, node_id: &str) -> bool {
        let link = self.lock_peers().remove(node_id);
        link.map(|l| l.close()).is_some()
    }

    /// Refuses new links and closes every link, accepted or dialed (their pending requests,
    /// on both sides, are answered with `NANO-503`).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let peers: Vec<NodeLink> = self.lock_peers().drain().map(|(_, l)| l).collect();
        for link in peers {
            link.close();
        }
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<Arc<str>, NodeLink>> {
        self.inner.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn accept(&self, mut inbound: Streaming<proto::Frames>) -> Result<LinkStream, Status> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(Status::unavailable("node shutting down"));
        }
        let first = tokio::time::timeout(inner.config.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello in time"))??
            .ok_or_else(|| Status::invalid_argument("stream ended before its Hello"))?;
        let first_frames = first.frames.len();
        let (hello, rest) = conn::split_hello(first).map_err(Status::failed_precondition)?;
        let peer: Arc<str> = hello.node_id.into();
        if !dials(&peer, &inner.local_id) {
            tracing::warn!(%peer, local = %inner.local_id, "node link refused: the lower id dials");
            return Err(Status::failed_precondition(format!(
                "node {peer} may not dial node {}: the node with the lower id dials",
                inner.local_id
            )));
        }
        let link = {
            let mut peers = self.lock_peers();
            if inner.shutdown.is_cancelled() {
                return Err(Status::unavailable("node shutting down"));
            }
            match peers.get(&peer) {
                Some(link) if link.state() != LinkState::Closed => link.clone(),
                // New, or closed by its owner and dialing again: a new handle.
                _ => {
                    let link = NodeLink::accepted(
                        inner.local_id.clone(),
                        peer.clone(),
                        inner.config.clone(),
                        inner.handler.clone(),
                    );
                    peers.insert(peer.clone(), link.clone());
                    link
                }
            }
        };
        let counters = link.counters();
        counters.count_received(first_frames);
        let (conn, outbound) = Conn::new(&inner.config, counters.clone());
        conn.send(conn::hello(&inner.local_id))
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if !link.attach(conn.clone()) {
            return Err(Status::unavailable("node shutting down"));
        }
        tracing::debug!(%peer, "node link accepted");
        tokio::spawn(conn::read_loop(conn, link, inbound, rest, counters));
        Ok(Box::pin(outbound.map(Ok)))
    }
}

type LinkStream = Pin<Box<dyn Stream<Item = Result<proto::Frames, Status>> + Send>>;

#[tonic::async_trait]
impl proto::node_server::Node for LinkService {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<proto::Frames>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        self.accept(request.into_inner()).await.map(Response::new)
    }
}

/// A node's link server: listens on the cluster listen address and accepts the links of peers
/// (the nodes with lower ids), handing their frames to a [`LinkHandler`].
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use nano_cluster::link::{LinkConfig, NoHandler, NodeServer};
///
/// let server = NodeServer::bind("127.0.0.1:0".parse()?, "gate-2", LinkConfig::default(), NoHandler).await?;
/// println!("cluster links on {}", server.local_addr());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct NodeServer {
    service: LinkService,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for NodeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeServer")
            .field("local_id", &self.service.inner.local_id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl NodeServer {
    /// Listens on `addr` (port 0 picks a free port) and serves links from now on.
    ///
    /// # Errors
    ///
    /// [`BindError`] when the address cannot be bound (in use, not local, no permission),
    /// naming the address.
    pub async fn bind(
        addr: SocketAddr,
        local_id: impl Into<Arc<str>>,
        config: LinkConfig,
        handler: impl LinkHandler,
    ) -> Result<NodeServer, BindError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        let service = LinkService::new(local_id, config, handler);
        Self::serve(listener, service, None).map_err(|source| BindError { addr, source })
    }

    /// Serves `service` (and, for a cluster's master node, the discovery master next to it)
    /// on a listener bound already.
    pub(crate) fn serve(
        listener: tokio::net::TcpListener,
        service: LinkService,
        master: Option<
            crate::proto::nano::discovery::v1::master_server::MasterServer<crate::MasterService>,
        >,
    ) -> std::io::Result<NodeServer> {
        let local_addr = listener.local_addr()?;
        let stop = service.inner.shutdown.clone();
        // Ends (dropping the listener, so the port is free again) once the service shuts down.
        let incoming = futures_util::stream::unfold((listener, stop), |(listener, stop)| async {
            let accepted = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                r = listener.accept() => r,
            };
            let stream = accepted.map(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                stream
            });
            Some((stream, (listener, stop)))
        });
        let config = &service.inner.config;
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout));
        let router = server
            .add_service(service.grpc())
            .add_optional_service(master);
        let task = tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "node link server failed");
            }
        });
        tracing::info!(%local_addr, "listening for node links");
        Ok(NodeServer {
            service,
            local_addr,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service, for its peers' links.
    pub fn service(&self) -> &LinkService {
        &self.service
    }

    /// The link of a peer (see [`LinkService::peer`]).
    pub fn peer(&self, node_id: &str) -> Option<NodeLink> {
        self.service.peer(node_id)
    }

    /// The link to peer `node_id` at `addr`, dialed or awaited by the one-link-per-pair rule
    /// (see [`LinkService::link_to`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(gate_addr: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    /// use nano_cluster::link::{LinkConfig, NoHandler, NodeServer};
    ///
    /// let node = NodeServer::bind("127.0.0.1:0".parse()?, "backend-1", LinkConfig::default(), NoHandler).await?;
    /// // "backend-1" < "gate-1": this node dials; the gate would wait for it instead.
    /// let gate = node.link_to("gate-1", gate_addr);
    /// # let _ = gate; Ok(()) }
    /// ```
    pub fn link_to(&self, node_id: &str, addr: SocketAddr) -> NodeLink {
        self.service.link_to(node_id, addr)
    }

    /// Closes and forgets a peer's link (see [`LinkService::forget`]).
    pub fn forget(&self, node_id: &str) -> bool {
        self.service.forget(node_id)
    }

    /// Stops listening and closes every accepted link at once: the peers see their streams
    /// end, and every request in flight either way is answered with `NANO-503`. Returns once
    /// the listener is closed (the address can be bound again).
    pub async fn shutdown(self) {
        self.service.shutdown();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "node link server task failed");
        }
    }
}
