//! [`Etcd`]: discovery through etcd v3 (feature `etcd`).
//!
//! Each node is the key `<prefix>/<node id>`, whose value is the [`Member`] as JSON, attached
//! to a lease the node keeps alive. The watch task reads the prefix (the initial view) and
//! watches it from the revision after that read; when the watch breaks or is cancelled (etcd
//! restarted, history compacted) it reads again and resumes, keeping the last view meanwhile.
//! When the lease is lost (lapsed, revoked) the lease task grants a new one and writes the key
//! again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions,
};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::backoff::Backoff;
use super::view::{self, ViewTx};
use super::{BoxFuture, Discovery, DiscoveryConfig, DiscoveryError, Member, NodeId, Watch};

/// Discovery through etcd: this node registered under a key prefix, the others watched there.
/// Cheap to clone (an `Arc`).
///
/// # Examples
///
/// ```no_run
/// use nano_cluster::{Discovery, DiscoveryConfig, Etcd, Member};
/// # async fn demo() -> Result<(), nano_cluster::DiscoveryError> {
/// let me = Member::new("chat-1", "10.0.0.7:34580").service("RoomService");
/// let discovery =
///     Etcd::connect(&["http://127.0.0.1:2379"], "/nano/chat", me, DiscoveryConfig::default())
///         .await?;
/// println!("{:?}", discovery.members());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    local: Member,
    key: String,
    view: ViewTx,
    client: Client,
    lease: Arc<Mutex<Option<i64>>>,
    rpc_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Etcd {
    /// Connects to etcd at `endpoints` (URLs such as `http://127.0.0.1:2379`), registers `me`
    /// as `<prefix>/<node id>` and watches the prefix. Returns once the client is set up:
    /// registration and the watch run in the background and retry with backoff while etcd is
    /// unreachable; watch for [`Change::Registered`](super::Change).
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidMember`] when `me` breaks a rule (a `/` in its id included);
    /// [`DiscoveryError::Etcd`] when the endpoints are invalid.
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        prefix: &str,
        me: Member,
        config: DiscoveryConfig,
    ) -> Result<Self, DiscoveryError> {
        me.validate().map_err(DiscoveryError::InvalidMember)?;
        if me.id.as_str().contains('/') {
            return Err(DiscoveryError::InvalidMember(format!(
                "node id {} contains '/'",
                me.id
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.rpc_timeout())
            // Notice an etcd that vanished without closing its connections.
            .with_keep_alive(config.keepalive_interval(), config.rpc_timeout())
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options)).await?;
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let key = format!("{dir}{}", me.id);
        let view = view::channel();
        let lease = Arc::new(Mutex::new(None));
        let tasks = Tasks {
            client: client.clone(),
            me: me.clone(),
            dir,
            key: key.clone(),
            config: config.clone(),
            view: view.clone(),
        };
        let tasks = vec![
            tokio::spawn(tasks.clone().lease_loop(Arc::clone(&lease))),
            tokio::spawn(tasks.watch_loop()),
        ];
        Ok(Etcd {
            inner: Arc::new(Inner {
                local: me,
                key,
                view,
                client,
                lease,
                rpc_timeout: config.rpc_timeout(),
                tasks,
            }),
        })
    }

    /// This node's key (`<prefix>/<node id>`).
    pub fn key(&self) -> &str {
        &self.inner.key
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        view::update(&self.view, |v| v.closed = true);
    }
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("node", &self.inner.local.id)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl Discovery for Etcd {
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
            for task in &self.inner.tasks {
                task.abort();
            }
            let lease = self
                .inner
                .lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let result = match lease {
                // Revoking the lease deletes the key.
                Some(id) => {
                    let mut client = self.inner.client.clone();
                    match timeout(self.inner.rpc_timeout, client.lease_revoke(id)).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(DiscoveryError::from(e)),
                        Err(_) => Err(DiscoveryError::Timeout("lease revoke")),
                    }
                }
                None => Ok(()),
            };
            view::update(&self.inner.view, |v| {
                v.registered = false;
                v.closed = true;
            });
            result
        })
    }
}

/// What the background tasks share.
#[derive(Clone)]
struct Tasks {
    client: Client,
    me: Member,
    /// `<prefix>/`
    dir: String,
    key: String,
    config: DiscoveryConfig,
    view: ViewTx,
}

impl Tasks {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_min, self.config.backoff_max)
    }

    fn set_registered(&self, registered: bool) {
        view::update(&self.view, |v| v.registered = registered);
    }

    /// Grants a lease and writes this node's key with it.
    async fn register(&self, client: &mut Client) -> Result<(i64, Duration), DiscoveryError> {
        let ttl_secs = self.config.ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = client.lease_grant(ttl_secs, None).await?;
        let value = serde_json::to_vec(&self.me)
            .map_err(|e| DiscoveryError::InvalidMember(format!("cannot encode as JSON: {e}")))?;
        let put = PutOptions::new().with_lease(granted.id());
        client.put(self.key.as_str(), value, Some(put)).await?;
        Ok((
            granted.id(),
            Duration::from_secs(granted.ttl().max(1) as u64),
        ))
    }

    /// Registers (retrying with backoff), keeps the lease alive; again whenever it is lost.
    async fn lease_loop(self, current: Arc<Mutex<Option<i64>>>) {
        let mut backoff = self.backoff();
        let mut client = self.client.clone();
        let mut failures = 0u32;
        loop {
            let (lease, ttl) = match timeout(self.config.rpc_timeout(), self.register(&mut client))
                .await
            {
                Ok(Ok(granted)) => granted,
                Ok(Err(e)) => {
                    failures += 1;
                    if super::backoff::worth_a_warning(failures) {
                        tracing::warn!(node = %self.me.id, error = %e, failures, "cannot register in etcd; retrying");
                    } else {
                        tracing::debug!(node = %self.me.id, error = %e, "etcd register failed; retrying");
                    }
                    backoff.wait().await;
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    if super::backoff::worth_a_warning(failures) {
                        tracing::warn!(node = %self.me.id, failures, "etcd register timed out; retrying");
                    } else {
                        tracing::debug!(node = %self.me.id, "etcd register timed out; retrying");
                    }
                    backoff.wait().await;
                    continue;
                }
            };
            failures = 0;
            backoff.reset();
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
            self.set_registered(true);
            tracing::info!(node = %self.me.id, key = %self.key, lease, "registered in etcd");
            self.keep_alive(&mut client, lease, ttl).await;
            *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.set_registered(false);
        }
    }

    /// Keeps `lease` alive; returns when etcd says it is gone, or when it could not be renewed
    /// for a TTL.
    async fn keep_alive(&self, client: &mut Client, lease: i64, ttl: Duration) {
        let interval = (ttl / self.config.keepalives_per_ttl.max(1)).max(Duration::from_millis(10));
        let rpc_timeout = self.config.rpc_timeout();
        let mut backoff = self.backoff();
        let mut renewed = Instant::now();
        loop {
            if let Ok(Ok((mut keeper, mut responses))) =
                timeout(rpc_timeout, client.lease_keep_alive(lease)).await
            {
                loop {
                    let round = async {
                        keeper.keep_alive().await?;
                        responses.message().await
                    };
                    match timeout(rpc_timeout, round).await {
                        Ok(Ok(Some(response))) if response.ttl() > 0 => {
                            renewed = Instant::now();
                            backoff.reset();
                            self.set_registered(true);
                        }
                        Ok(Ok(Some(_))) => {
                            tracing::info!(node = %self.me.id, "etcd lease gone; registering again");
                            return;
                        }
                        _ => break,
                    }
                    tokio::time::sleep(interval).await;
                }
            }
            if renewed.elapsed() >= ttl {
                // etcd counted the TTL from a renewal no later than ours: the lease is gone
                // there (an unknown lease is answered with an error, not a TTL of 0).
                tracing::warn!(node = %self.me.id, "etcd lease not renewed for a TTL: lost");
                return;
            }
            backoff.wait().await;
        }
    }

    /// Reads the prefix, then watches it from the next revision; again when the watch breaks.
    async fn watch_loop(self) {
        let mut backoff = self.backoff();
        let mut client = self.client.clone();
        let rpc_timeout = self.config.rpc_timeout();
        loop {
            let read = client.get(self.dir.as_str(), Some(GetOptions::new().with_prefix()));
            let revision = match timeout(rpc_timeout, read).await {
                Ok(Ok(response)) => {
                    let members: BTreeMap<NodeId, Member> = response
                        .kvs()
                        .iter()
                        .filter_map(|kv| self.parse(kv))
                        .collect();
                    view::update(&self.view, |v| v.members = members);
                    response.header().map(|h| h.revision()).unwrap_or(0)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "etcd read failed; keeping the last view");
                    backoff.wait().await;
                    continue;
                }
                Err(_) => {
                    tracing::debug!("etcd read timed out; keeping the last view");
                    backoff.wait().await;
                    continue;
                }
            };
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let (_watcher, mut stream) =
                match timeout(rpc_timeout, client.watch(self.dir.as_str(), Some(options))).await {
                    Ok(Ok(watch)) => watch,
                    _ => {
                        tracing::debug!("etcd watch failed; keeping the last view");
                        backoff.wait().await;
                        continue;
                    }
                };
            backoff.reset();
            while let Ok(Some(response)) = stream.message().await {
                if response.canceled() {
                    tracing::info!(
                        reason = response.cancel_reason(),
                        "etcd watch cancelled; reading again"
                    );
                    break;
                }
                let mut puts = Vec::new();
                let mut deletes = Vec::new();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    match event.event_type() {
                        EventType::Put => puts.extend(self.parse(kv)),
                        EventType::Delete => deletes.extend(self.id_of(kv)),
                    }
                }
                view::update(&self.view, |v| {
                    for id in deletes {
                        v.members.remove(&id);
                    }
                    v.members.extend(puts);
                });
            }
            backoff.wait().await;
        }
    }

    /// The node id a key names, if it is one of ours.
    fn id_of(&self, kv: &KeyValue) -> Option<NodeId> {
        let key = kv.key_str().ok()?;
        let id = key.strip_prefix(&self.dir)?;
        (!id.is_empty() && !id.contains('/')).then(|| NodeId::from(id))
    }

    /// A member from a key and its JSON value; `None` (traced) for anything malformed.
    fn parse(&self, kv: &KeyValue) -> Option<(NodeId, Member)> {
        let id = self.id_of(kv)?;
        let member: Member = match serde_json::from_slice(kv.value()) {
            Ok(member) => member,
            Err(e) => {
                tracing::warn!(node = %id, error = %e, "malformed member in etcd; skipped");
                return None;
            }
        };
        if member.id != id {
            tracing::warn!(node = %id, claimed = %member.id, "member id differs from its key; skipped");
            return None;
        }
        if let Err(reason) = member.validate() {
            tracing::warn!(node = %id, %reason, "invalid member in etcd; skipped");
            return None;
        }
        Some((id, member))
    }
}
