//! [`Embedded`]: discovery without an external service. One node is started as the master (it
//! serves the `Master` gRPC service and is a member itself); the others are members of it.
//!
//! A member runs two tasks: the lease task (register, keep alive every `ttl / 3`, register
//! again when the master answers "unknown lease" or the lease could not be renewed for a TTL)
//! and the watch task (stream the master's snapshots into this node's view; when the stream
//! breaks, keep the last view and reconnect with backoff). While a new master is still
//! relearning (its snapshots are incomplete for one TTL), the view only grows, except for the
//! nodes that master saw leave.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};

use super::backoff::Backoff;
use super::master::{MasterService, MasterState};
use super::view::{self, ViewTx};
use super::{BoxFuture, Discovery, DiscoveryConfig, DiscoveryError, Member, NodeId, Watch};
use crate::proto::nano::discovery::v1 as pb;
use pb::master_client::MasterClient;

/// Discovery through an embedded master: [`Embedded::master`] on one node,
/// [`Embedded::member`] on the others. Cheap to clone (an `Arc`).
///
/// # Examples
///
/// ```no_run
/// use nano_cluster::{Discovery, DiscoveryConfig, Embedded, Member};
/// # async fn demo() -> Result<(), nano_cluster::DiscoveryError> {
/// let config = DiscoveryConfig::default();
/// let master = Embedded::master(
///     "127.0.0.1:34560",
///     Member::new("master", "127.0.0.1:34561").service("TopicService"),
///     config.clone(),
/// )
/// .await?;
/// let chat = Embedded::member(
///     &master.master_addr().unwrap().to_string(),
///     Member::new("chat-1", "127.0.0.1:34580").service("RoomService"),
///     config,
/// )?;
/// # let _ = chat.members();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    local: Member,
    view: ViewTx,
    role: Role,
    tasks: Vec<JoinHandle<()>>,
}

enum Role {
    Master {
        /// The listener's address, when [`Embedded::master`] made one.
        addr: Option<SocketAddr>,
        state: Arc<MasterState>,
    },
    Member {
        client: MasterClient<Channel>,
        lease: Arc<Mutex<Option<u64>>>,
        rpc_timeout: Duration,
    },
}

impl Embedded {
    /// Starts this node as the master: listens on `listen` (`host:port`; port 0 picks a free
    /// one, see [`master_addr`](Self::master_addr)) and registers `me` in its own list.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::Bind`] when the address is busy or cannot be listened on, at once;
    /// [`DiscoveryError::InvalidMember`] when `me` breaks a rule.
    pub async fn master(
        listen: &str,
        me: Member,
        config: DiscoveryConfig,
    ) -> Result<Self, DiscoveryError> {
        me.validate().map_err(DiscoveryError::InvalidMember)?;
        let bind_err = |source| DiscoveryError::Bind {
            addr: listen.to_owned(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let (state, reaper) = Self::master_state(&me, &config);
        let service = pb::master_server::MasterServer::new(MasterService(Arc::clone(&state)));
        let mut stopped = state.stop.subscribe();
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
        let serve = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "discovery master server failed");
            }
        });
        tracing::info!(%addr, node = %me.id, "discovery master listening");
        Ok(Embedded {
            inner: Arc::new(Inner {
                local: me,
                view: state.view.clone(),
                role: Role::Master {
                    addr: Some(addr),
                    state,
                },
                tasks: vec![reaper, serve],
            }),
        })
    }

    /// The registry with `me` in it, and its reaper running.
    fn master_state(me: &Member, config: &DiscoveryConfig) -> (Arc<MasterState>, JoinHandle<()>) {
        let state = MasterState::new(me.clone(), config);
        let reaper = tokio::spawn(Arc::clone(&state).reaper());
        (state, reaper)
    }

    /// This node as the master, with its gRPC service returned to be served on a tonic server
    /// of your own (e.g. next to the node's link service, on one cluster port) rather than on
    /// a listener of its own. Members join it at that server's address.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidMember`] when `me` breaks a rule.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the lease reaper is spawned on it).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use nano_cluster::{DiscoveryConfig, Embedded, Member};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let me = Member::new("master", "127.0.0.1:34560").service("TopicService");
    /// let (discovery, service) = Embedded::master_service(me, DiscoveryConfig::default())?;
    /// tonic::transport::Server::builder()
    ///     .add_service(service)
    ///     // .add_service(the node's other services)
    ///     .serve("127.0.0.1:34560".parse()?)
    ///     .await?;
    /// # drop(discovery); Ok(()) }
    /// ```
    pub fn master_service(
        me: Member,
        config: DiscoveryConfig,
    ) -> Result<(Self, pb::master_server::MasterServer<MasterService>), DiscoveryError> {
        me.validate().map_err(DiscoveryError::InvalidMember)?;
        let (state, reaper) = Self::master_state(&me, &config);
        let service = pb::master_server::MasterServer::new(MasterService(Arc::clone(&state)));
        let embedded = Embedded {
            inner: Arc::new(Inner {
                local: me,
                view: state.view.clone(),
                role: Role::Master { addr: None, state },
                tasks: vec![reaper],
            }),
        };
        Ok((embedded, service))
    }

    /// Joins the cluster whose master listens on `master` (`host:port`). Returns at once:
    /// registration, keep-alive and the watch run in the background and retry with backoff
    /// while the master is unreachable; watch for [`Change::Registered`](super::Change).
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidAddress`] for an address that is not `host:port`;
    /// [`DiscoveryError::InvalidMember`] when `me` breaks a rule.
    pub fn member(
        master: &str,
        me: Member,
        config: DiscoveryConfig,
    ) -> Result<Self, DiscoveryError> {
        me.validate().map_err(DiscoveryError::InvalidMember)?;
        let invalid = || DiscoveryError::InvalidAddress(master.to_owned());
        if master.contains("://") || !master.contains(':') {
            return Err(invalid());
        }
        let endpoint = Endpoint::from_shared(format!("http://{master}"))
            .map_err(|_| invalid())?
            .connect_timeout(config.rpc_timeout())
            .tcp_nodelay(true)
            // Notice a master that vanished without closing its connections.
            .http2_keep_alive_interval(config.keepalive_interval())
            .keep_alive_timeout(config.rpc_timeout())
            .keep_alive_while_idle(true);
        let client = MasterClient::new(endpoint.connect_lazy());
        let view = view::channel();
        let lease = Arc::new(Mutex::new(None));
        let kick = Arc::new(Notify::new());
        let member = MemberTasks {
            client: client.clone(),
            me: me.clone(),
            config: config.clone(),
            view: view.clone(),
            kick: Arc::clone(&kick),
        };
        let tasks = vec![
            tokio::spawn(member.clone().lease_loop(Arc::clone(&lease))),
            tokio::spawn(member.watch_loop()),
        ];
        Ok(Embedded {
            inner: Arc::new(Inner {
                local: me,
                view,
                role: Role::Member {
                    client,
                    lease,
                    rpc_timeout: config.rpc_timeout(),
                },
                tasks,
            }),
        })
    }

    /// The address the master listens on (`None` for a member, and for a master from
    /// [`master_service`](Self::master_service), served elsewhere).
    pub fn master_addr(&self) -> Option<SocketAddr> {
        match &self.inner.role {
            Role::Master { addr, .. } => *addr,
            Role::Member { .. } => None,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Role::Master { state, .. } = &self.role {
            state.stop.send_replace(true);
        }
        for task in &self.tasks {
            task.abort();
        }
        view::update(&self.view, |v| v.closed = true);
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match &self.inner.role {
            Role::Master {
                addr: Some(addr), ..
            } => format!("master on {addr}"),
            Role::Master { addr: None, .. } => "master".to_owned(),
            Role::Member { .. } => "member".to_owned(),
        };
        f.debug_struct("Embedded")
            .field("node", &self.inner.local.id)
            .field("role", &role)
            .finish_non_exhaustive()
    }
}

impl Discovery for Embedded {
    fn local(&self) -> &Member {
        &self.inner.local
    }

    fn members(&self) -> Vec<Member> {
        view::members(&self.inner.view)
    }

    fn is_registered(&self) -> bool {
        view::registered(&self.inner.view)
    }

    fn watch(&self) -> Watch {
        Watch::new(&self.inner.view)
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), DiscoveryError>> {
        Box::pin(async move {
            let result = match &self.inner.role {
                Role::Master { state, .. } => {
                    // Leave the list, then stop: each watch stream sends that last snapshot
                    // before it ends, the server then shuts down gracefully, the reaper ends.
                    state.leave(&self.inner.local.id);
                    state.stop.send_replace(true);
                    Ok(())
                }
                Role::Member {
                    client,
                    lease,
                    rpc_timeout,
                } => {
                    for task in &self.inner.tasks {
                        task.abort();
                    }
                    let lease = lease.lock().unwrap_or_else(|e| e.into_inner()).take();
                    match lease {
                        Some(lease_id) => {
                            let mut client = client.clone();
                            let call = client.deregister(pb::DeregisterRequest { lease_id });
                            match tokio::time::timeout(*rpc_timeout, call).await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err(status)) => Err(DiscoveryError::from(status)),
                                Err(_) => Err(DiscoveryError::Timeout("deregister")),
                            }
                        }
                        None => Ok(()),
                    }
                }
            };
            view::update(&self.inner.view, |v| {
                v.registered = false;
                v.closed = true;
            });
            result
        })
    }
}

/// What a member's background tasks share.
#[derive(Clone)]
struct MemberTasks {
    client: MasterClient<Channel>,
    me: Member,
    config: DiscoveryConfig,
    view: ViewTx,
    /// Asks the lease task to check its lease now (the watch stream broke or came back).
    kick: Arc<Notify>,
}

impl MemberTasks {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_min, self.config.backoff_max)
    }

    fn set_registered(&self, registered: bool) {
        view::update(&self.view, |v| v.registered = registered);
    }

    /// Registers (retrying with backoff), then keeps the lease alive; again whenever it is lost.
    async fn lease_loop(self, current: Arc<Mutex<Option<u64>>>) {
        let rpc_timeout = self.config.rpc_timeout();
        let mut backoff = self.backoff();
        let mut client = self.client.clone();
        let mut failures = 0u32;
        loop {
            let request = pb::RegisterRequest {
                member: Some(pb::Member::from(&self.me)),
                ttl_ms: self.config.ttl.as_millis() as u64,
            };
            let granted = match tokio::time::timeout(rpc_timeout, client.register(request)).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    failures += 1;
                    if super::backoff::worth_a_warning(failures) {
                        tracing::warn!(node = %self.me.id, %status, failures, "cannot register with the master; retrying");
                    } else {
                        tracing::debug!(node = %self.me.id, %status, "register failed; retrying");
                    }
                    backoff.wait().await;
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    if super::backoff::worth_a_warning(failures) {
                        tracing::warn!(node = %self.me.id, failures, "register with the master timed out; retrying");
                    } else {
                        tracing::debug!(node = %self.me.id, "register timed out; retrying");
                    }
                    backoff.wait().await;
                    continue;
                }
            };
            failures = 0;
            backoff.reset();
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(granted.lease_id);
            self.set_registered(true);
            tracing::info!(node = %self.me.id, lease = granted.lease_id, "registered with the master");
            let ttl = Duration::from_millis(granted.ttl_ms).max(Duration::from_millis(100));
            let interval =
                (ttl / self.config.keepalives_per_ttl.max(1)).max(Duration::from_millis(10));
            self.keep_alive(&mut client, granted.lease_id, ttl, interval)
                .await;
            *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.set_registered(false);
        }
    }

    /// Keeps `lease` alive; returns when the master no longer knows it.
    async fn keep_alive(
        &self,
        client: &mut MasterClient<Channel>,
        lease_id: u64,
        ttl: Duration,
        interval: Duration,
    ) {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.kick.notified() => {}
            }
            let call = client.keep_alive(pb::KeepAliveRequest { lease_id });
            match tokio::time::timeout(self.config.rpc_timeout(), call).await {
                Ok(Ok(response)) if response.get_ref().known => {
                    renewed = Instant::now();
                    self.set_registered(true);
                }
                Ok(Ok(_)) => {
                    tracing::info!(node = %self.me.id, "master does not know our lease; registering again");
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    if renewed.elapsed() >= ttl && self.view.borrow().registered {
                        tracing::warn!(node = %self.me.id, "lease not renewed for a TTL: lost");
                        self.set_registered(false);
                    }
                }
            }
        }
    }

    /// Streams the master's snapshots into the view; keeps the last view while disconnected.
    async fn watch_loop(self) {
        let mut backoff = self.backoff();
        let mut client = self.client.clone();
        loop {
            let call = client.watch(pb::WatchRequest {});
            match tokio::time::timeout(self.config.rpc_timeout(), call).await {
                Ok(Ok(response)) => {
                    let mut stream = response.into_inner();
                    let mut first = true;
                    while let Ok(Some(snapshot)) = stream.message().await {
                        if first {
                            first = false;
                            backoff.reset();
                            // The master may be a new one: let the lease task check at once.
                            self.kick.notify_one();
                        }
                        self.apply(snapshot);
                    }
                    tracing::debug!(node = %self.me.id, "master watch stream ended; keeping the last view");
                    self.kick.notify_one();
                }
                Ok(Err(status)) => {
                    tracing::debug!(node = %self.me.id, %status, "watch failed; retrying");
                }
                Err(_) => tracing::debug!(node = %self.me.id, "watch timed out; retrying"),
            }
            backoff.wait().await;
        }
    }

    fn apply(&self, snapshot: pb::Snapshot) {
        let mut members = std::collections::BTreeMap::<NodeId, Member>::new();
        for m in snapshot.members {
            match Member::try_from(m) {
                Ok(member) => {
                    members.insert(member.id.clone(), member);
                }
                Err(reason) => tracing::warn!(%reason, "master sent an invalid member; skipped"),
            }
        }
        view::update(&self.view, |v| {
            if snapshot.complete {
                v.members = members;
            } else {
                v.members.extend(members);
                for id in snapshot.removed {
                    v.members.remove(&NodeId::from(id));
                }
            }
        });
    }
}
