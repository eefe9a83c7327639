//! A cluster node inside a nano application: the [`Cluster`] settings and the [`Node`] they
//! build, an [`Extension`] of the application's engine.
//!
//! Any node can hold client listeners (a *gate*), components (a *backend*) or both, with the
//! same `nano::app()` builder. A gate forwards every message whose service it does not host to
//! a member that does (picked once per session and service, then sticky); the backend runs the
//! handler on a stand-in session whose push, response, kick, close and bind travel back over
//! the node link to the gate, which delivers them to the client.
//!
//! | module | job |
//! |---|---|
//! | `mod` | [`Cluster`] settings, [`Node`]: start (listen, register, watch) and stop |
//! | `peers` | the members from discovery, by id, with their links |
//! | `gate` | forwarding client messages, delivering what backends send back |
//! | `backend` | stand-in sessions for the clients of gates, and the link that answers through their gate |
//! | `call` | server-to-server calls ([`Node::call`], [`Node::notify`]) and the session a called handler runs on |
//! | `login` | one session per uid across gates: [`MultiLogin`] |
//! | `inbound` | the [`LinkHandler`](crate::link::LinkHandler) that routes frames to the two |
//! | [`picker`](Picker) | which member serves a session: round-robin, random, consistent hash, yours |
//!
//! # Examples
//!
//! A gate that hosts no component and forwards everything to the backends it discovers from
//! the master at 127.0.0.1:34560:
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use nano_cluster::node::Cluster;
//!
//! let gate = Cluster::new("gate-1")
//!     .listen("127.0.0.1:34570")
//!     .master("127.0.0.1:34560")
//!     .build::<nano_core::Json>();
//! // nano::app().extension(gate).websocket("127.0.0.1:34590", "/nano").run()
//! # Ok(()) }
//! ```

mod backend;
mod call;
mod gate;
mod inbound;
mod login;
mod peers;
pub mod picker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nano_core::extension::{BoxFuture, Extension, ExtensionError};
use nano_core::protocol::Message;
use nano_core::{Engine, Origin, Serializer, Session, WeakEngine};
use tokio::task::JoinHandle;

use crate::link::{LinkConfig, LinkService, NodeServer};
use crate::{Discovery, DiscoveryConfig, DiscoveryError, Embedded, Member};

pub use login::{MultiLogin, KICKED_ELSEWHERE, REFUSED_ALREADY};
pub use picker::{ConsistentHash, PickContext, Picker, Random, RoundRobin};

/// Makes this node's [`Discovery`] from its [`Member`] record (its id, its bound cluster
/// address and the services it hosts), for [`Cluster::discovery_with`].
pub type DiscoveryFactory = Box<
    dyn FnOnce(Member) -> BoxFuture<'static, Result<Arc<dyn Discovery>, DiscoveryError>> + Send,
>;

enum Source {
    /// This node is the embedded master, serving discovery on its cluster address.
    Master,
    /// A member of the master at this address.
    MemberOf(String),
    /// Registered in etcd under a key prefix.
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// Anything else (etcd, a custom implementation).
    Custom(DiscoveryFactory),
}

/// The cluster settings of one node: its id, where it listens for other nodes, how it finds
/// them, and how it forwards.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_cluster::node::{Cluster, ConsistentHash};
///
/// let backend = Cluster::new("chat-1")
///     .listen("127.0.0.1:34580")
///     .master("127.0.0.1:34560")
///     .forward_deadline(Duration::from_secs(2))
///     .picker(ConsistentHash);
/// # drop(backend);
/// ```
pub struct Cluster {
    id: String,
    listen: String,
    source: Option<Source>,
    forward_deadline: Duration,
    link: LinkConfig,
    discovery: DiscoveryConfig,
    picker: Arc<dyn Picker>,
    multi_login: MultiLogin,
}

impl Cluster {
    /// A node with id `id` (unique in the cluster), listening on `127.0.0.1:0` until
    /// [`listen`](Self::listen) says otherwise. Choose its discovery with
    /// [`as_master`](Self::as_master), [`master`](Self::master) or
    /// [`discovery_with`](Self::discovery_with).
    pub fn new(id: impl Into<String>) -> Self {
        Cluster {
            id: id.into(),
            listen: "127.0.0.1:0".into(),
            source: None,
            forward_deadline: Duration::from_secs(5),
            link: LinkConfig::default(),
            discovery: DiscoveryConfig::default(),
            picker: Arc::new(RoundRobin::default()),
            multi_login: MultiLogin::default(),
        }
    }

    /// The address other nodes reach this one on (node links, and discovery on the master).
    /// Port 0 picks a free port; the bound address is what the node registers.
    #[must_use]
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// This node is the embedded master: it keeps the member list, serving it on its
    /// [`listen`](Self::listen) address next to the node links.
    #[must_use]
    pub fn as_master(mut self) -> Self {
        self.source = Some(Source::Master);
        self
    }

    /// This node is a member of the embedded master at `addr` (`host:port`).
    #[must_use]
    pub fn master(mut self, addr: impl Into<String>) -> Self {
        self.source = Some(Source::MemberOf(addr.into()));
        self
    }

    /// Discovery through etcd (feature `etcd`): this node is a key under `prefix` with a lease
    /// kept alive; the others are watched under the same prefix.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nano_cluster::node::Cluster;
    ///
    /// let node = Cluster::new("chat-1").etcd(["http://127.0.0.1:2379"], "/nano/");
    /// # drop(node);
    /// ```
    #[cfg(feature = "etcd")]
    #[must_use]
    pub fn etcd(
        mut self,
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        prefix: impl Into<String>,
    ) -> Self {
        self.source = Some(Source::Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
        });
        self
    }

    /// Discovery made by `factory` from this node's member record (your own implementation).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[cfg(feature = "etcd")]
    /// # fn f() {
    /// use std::sync::Arc;
    /// use nano_cluster::{node::Cluster, Discovery, DiscoveryConfig, Etcd};
    ///
    /// let node = Cluster::new("chat-1").discovery_with(Box::new(|me| {
    ///     Box::pin(async move {
    ///         let etcd = Etcd::connect(&["http://127.0.0.1:2379"], "/nano/", me, DiscoveryConfig::default()).await?;
    ///         Ok(Arc::new(etcd) as Arc<dyn Discovery>)
    ///     })
    /// }));
    /// # drop(node); }
    /// ```
    #[must_use]
    pub fn discovery_with(mut self, factory: DiscoveryFactory) -> Self {
        self.source = Some(Source::Custom(factory));
        self
    }

    /// How long a gate waits for a backend's answer before it answers the client `NANO-504`
    /// itself (default 5 s). A backend that is down or unreachable is answered `NANO-503` at
    /// once, or at this deadline at the latest.
    #[must_use]
    pub fn forward_deadline(mut self, deadline: Duration) -> Self {
        self.forward_deadline = deadline;
        self
    }

    /// Which member serves a session's messages for a service (default [`RoundRobin`]).
    #[must_use]
    pub fn picker(mut self, picker: impl Picker) -> Self {
        self.picker = Arc::new(picker);
        self
    }

    /// What binding a uid that another session has, anywhere in the cluster, does (default
    /// [`MultiLogin::KickOlder`]).
    #[must_use]
    pub fn multi_login(mut self, policy: MultiLogin) -> Self {
        self.multi_login = policy;
        self
    }

    /// Node link limits and timings.
    #[must_use]
    pub fn link_config(mut self, config: LinkConfig) -> Self {
        self.link = config;
        self
    }

    /// Discovery lease and timing settings.
    #[must_use]
    pub fn discovery_config(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = config;
        self
    }

    /// The node, to register with the application (`nano::app().extension(node.clone())`);
    /// keep a clone to ask it about the cluster.
    pub fn build<S: Serializer>(self) -> Arc<Node<S>> {
        Arc::new(Node {
            state: Arc::new(State::new(
                self.id.clone(),
                self.forward_deadline,
                self.picker.clone(),
                self.multi_login,
            )),
            settings: Mutex::new(Some(self)),
            running: Mutex::new(None),
        })
    }
}

/// One node of a cluster, running inside an application as an [`Extension`] of its engine.
/// Made by [`Cluster::build`].
pub struct Node<S> {
    state: Arc<State<S>>,
    /// Taken by `start`.
    settings: Mutex<Option<Cluster>>,
    running: Mutex<Option<Running>>,
}

/// What a started node owns.
struct Running {
    server: NodeServer,
    discovery: Arc<dyn Discovery>,
    watch: JoinHandle<()>,
}

/// The state the node's parts share: the gate's and the backend's tables, the members.
pub(crate) struct State<S> {
    pub(crate) id: Arc<str>,
    pub(crate) forward_deadline: Duration,
    pub(crate) picker: Arc<dyn Picker>,
    pub(crate) engine: OnceLock<WeakEngine<S>>,
    pub(crate) service: OnceLock<LinkService>,
    pub(crate) peers: peers::Peers,
    pub(crate) gate: gate::Gate<S>,
    pub(crate) backend: backend::Backend<S>,
    pub(crate) logins: login::Logins<S>,
}

impl<S: Serializer> State<S> {
    fn new(
        id: String,
        forward_deadline: Duration,
        picker: Arc<dyn Picker>,
        multi_login: MultiLogin,
    ) -> Self {
        State {
            id: id.into(),
            forward_deadline,
            picker,
            engine: OnceLock::new(),
            service: OnceLock::new(),
            peers: peers::Peers::default(),
            gate: gate::Gate::default(),
            backend: backend::Backend::default(),
            logins: login::Logins::new(multi_login),
        }
    }

    pub(crate) fn engine(&self) -> Option<Engine<S>> {
        self.engine.get().and_then(WeakEngine::upgrade)
    }
}

impl<S: Serializer> Node<S> {
    /// This node's id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// The address other nodes reach this one on, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.running).as_ref().map(|r| r.server.local_addr())
    }

    /// The other members known now, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.state.peers.members()
    }

    /// Waits until a member hosting `service` is known and its link is up, at most `within`.
    /// Returns whether one is.
    pub async fn wait_for_service(&self, service: &str, within: Duration) -> bool {
        self.state.peers.wait_for_service(service, 1, within).await
    }

    /// Waits until `n` members hosting `service` are known with their links up, at most
    /// `within`. Returns whether they are.
    pub async fn wait_for_members(&self, service: &str, n: usize, within: Duration) -> bool {
        self.state.peers.wait_for_service(service, n, within).await
    }

    /// Waits until `pred` holds for the other members (sorted by id), at most `within`.
    /// Returns whether it does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(node: std::sync::Arc<nano_cluster::node::Node<nano_core::Json>>) {
    /// use std::time::Duration;
    /// let gone = node
    ///     .wait_until(Duration::from_secs(10), |m| !m.iter().any(|m| m.id.as_str() == "chat-1"))
    ///     .await;
    /// # }
    /// ```
    pub async fn wait_until(&self, within: Duration, pred: impl Fn(&[Member]) -> bool) -> bool {
        self.state.peers.wait_until(within, pred).await
    }

    /// Waits until member `id` is known and its link is up, at most `within`. Returns whether
    /// it is.
    pub async fn wait_for_peer(&self, id: &str, within: Duration) -> bool {
        self.state.peers.wait_for_peer(id, within).await
    }

    /// The traffic on the link to peer `id` so far (`None` for an unknown peer).
    pub fn link_stats(&self, id: &str) -> Option<crate::link::LinkStats> {
        self.state.peers.link(id).map(|l| l.stats())
    }

    /// Client sessions of this gate that forwarded messages to other nodes, open now.
    pub fn forwarded_sessions(&self) -> usize {
        self.state.gate.len()
    }

    /// Stand-in sessions this backend holds for the clients of gates.
    pub fn remote_sessions(&self) -> usize {
        self.state.backend.len()
    }

    async fn start_node(&self, engine: &Engine<S>) -> Result<(), ExtensionError> {
        let Some(settings) = lock(&self.settings).take() else {
            return Err("cluster node started twice".into());
        };
        let state = &self.state;
        let _ = state.engine.set(engine.downgrade());
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen for cluster links on {}: {e}",
                    settings.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let mut me = Member::new(settings.id.clone(), addr.to_string());
        for service in engine.components() {
            me = me.service(service);
        }
        let (discovery, master): (Arc<dyn Discovery>, _) = match settings.source {
            Some(Source::Master) => {
                let (d, svc) = Embedded::master_service(me, settings.discovery)?;
                (Arc::new(d), Some(svc))
            }
            Some(Source::MemberOf(master)) => (
                Arc::new(Embedded::member(&master, me, settings.discovery)?),
                None,
            ),
            #[cfg(feature = "etcd")]
            Some(Source::Etcd { endpoints, prefix }) => (
                Arc::new(crate::Etcd::connect(&endpoints, &prefix, me, settings.discovery).await?),
                None,
            ),
            Some(Source::Custom(factory)) => (factory(me).await?, None),
            None => {
                return Err(format!(
                    "cluster node {}: no discovery (as_master, master, etcd or discovery_with)",
                    settings.id
                )
                .into())
            }
        };
        let service = LinkService::new(
            settings.id.clone(),
            settings.link,
            inbound::Inbound(Arc::downgrade(state)),
        );
        let _ = state.service.set(service.clone());
        let server = NodeServer::serve(listener, service, master)?;
        {
            let state = Arc::downgrade(state);
            engine.on_session_closed(move |session| {
                if let Some(state) = state.upgrade() {
                    state.session_closed(session);
                }
            });
        }
        {
            let state = Arc::downgrade(state);
            engine.on_session_bound(move |session, uid| {
                let Some(state) = state.upgrade() else { return };
                // Client sessions of this gate only: stand-ins and calls belong elsewhere.
                if session.id() != 0 && !state.backend.holds(session.id()) {
                    state.logins.bound(&state, session, uid);
                }
            });
        }
        let watch = tokio::spawn(peers::watch(Arc::downgrade(state), discovery.watch()));
        tracing::info!(node = %settings.id, %addr, "cluster node started");
        *lock(&self.running) = Some(Running {
            server,
            discovery,
            watch,
        });
        Ok(())
    }

    async fn stop_node(&self) {
        let Some(running) = lock(&self.running).take() else {
            return;
        };
        if let Err(e) = running.discovery.shutdown().await {
            tracing::debug!(node = %self.state.id, error = %e, "deregistration not delivered");
        }
        running.watch.abort();
        self.state.backend.close_all();
        running.server.shutdown().await;
        tracing::info!(node = %self.state.id, "cluster node stopped");
    }
}

impl<S: Serializer> State<S> {
    /// A session of this engine closed: a gate tells the backends it used; a backend forgets
    /// its stand-in.
    fn session_closed(&self, session: &Session<S>) {
        self.gate.session_closed(self, session.id());
        self.backend.forget(session.id());
        self.logins.closed(session.id());
    }
}

impl<S: Serializer> Extension<S> for Node<S> {
    fn start<'a>(&'a self, engine: &'a Engine<S>) -> BoxFuture<'a, Result<(), ExtensionError>> {
        Box::pin(self.start_node(engine))
    }

    fn forward(&self, session: &Session<S>, msg: Message, origin: Origin) -> Result<(), Message> {
        self.state.forward(session, msg, origin)
    }

    fn session_id_base(&self) -> u64 {
        session_id_base(&self.state.id)
    }

    /// The node's id and address, and each member with its services and the link's counts.
    fn describe(&self) -> Option<(&'static str, serde_json::Value)> {
        let members: Vec<serde_json::Value> = self
            .members()
            .into_iter()
            .map(|m| {
                let stats = self.link_stats(m.id.as_str());
                serde_json::json!({
                    "id": m.id.as_str(),
                    "addr": m.address,
                    "services": m.services,
                    "link_up": stats.is_some(),
                    "frames_sent": stats.as_ref().map(|s| s.frames_sent),
                    "frames_received": stats.as_ref().map(|s| s.frames_received),
                })
            })
            .collect();
        Some((
            "cluster",
            serde_json::json!({
                "id": self.id(),
                "addr": self.local_addr().map(|a| a.to_string()),
                "forwarded_sessions": self.forwarded_sessions(),
                "remote_sessions": self.remote_sessions(),
                "members": members,
            }),
        ))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.stop_node())
    }
}

/// The high bits of the session ids a node makes: 21 bits from its id (never 0) above a
/// 32-bit counter, so ids stay exact in JavaScript numbers (53 bits) and two gates' ids do
/// not collide unless their ids hash alike.
pub(crate) fn session_id_base(id: &str) -> u64 {
    let prefix = picker::fnv1a(id.as_bytes()) % ((1 << 21) - 1) + 1;
    prefix << 32
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_fit_javascript_numbers_and_differ_by_node() {
        let a = super::session_id_base("gate-1");
        let b = super::session_id_base("gate-2");
        assert_ne!(a, b);
        for base in [a, b] {
            assert!(base > 0);
            let largest = base | 0xFFFF_FFFF;
            assert!(
                largest.leading_zeros() >= 11,
                "{largest:#x} needs more than 53 bits"
            );
        }
    }
}
