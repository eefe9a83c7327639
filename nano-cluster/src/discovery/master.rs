//! The embedded master: the registry of members and their leases, the reaper that drops
//! lapsed leases, and the gRPC `Master` service members call.
//!
//! The registry publishes its member list as the master node's own [`View`]; every gRPC
//! `Watch` stream sends that list as a full snapshot, first and after each change. A freshly
//! started master marks its snapshots incomplete for one TTL (the longest a live member needs
//! to notice the restart and register again), so watchers add but do not remove meanwhile,
//! except the nodes this master itself saw leave.

// tonic's service methods answer `Result<_, Status>` (a large error); the helpers here do too.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::view::{self, ViewTx};
use super::{DiscoveryConfig, Member, NodeId};
use crate::proto::nano::discovery::v1 as pb;

/// Shortest and longest lease TTL a member may ask for.
const MIN_TTL: Duration = Duration::from_millis(100);
const MAX_TTL: Duration = Duration::from_secs(300);

struct Entry {
    member: Member,
    /// `None` for the master node itself, which holds no lease.
    lease: Option<u64>,
    ttl: Duration,
    deadline: Instant,
}

struct Registry {
    entries: BTreeMap<NodeId, Entry>,
    leases: HashMap<u64, NodeId>,
    next_lease: u64,
    /// Until settled: the nodes seen leaving (at most `max_members`).
    gone: BTreeSet<NodeId>,
}

/// What the service, the reaper and the master node's handle share.
pub(crate) struct MasterState {
    registry: Mutex<Registry>,
    /// The master node's own view: the registry's member list.
    pub view: ViewTx,
    /// Wakes the reaper when a deadline may have moved earlier.
    wake: Notify,
    /// Snapshots are complete from then on.
    settled_at: Instant,
    /// Set when the master stops: every call is refused and every watch ends.
    pub stop: watch::Sender<bool>,
    max_members: usize,
}

impl MasterState {
    /// A registry holding `me` (the master node, leaseless).
    pub fn new(me: Member, config: &DiscoveryConfig) -> Arc<Self> {
        let now = Instant::now();
        let mut entries = BTreeMap::new();
        entries.insert(
            me.id.clone(),
            Entry {
                member: me,
                lease: None,
                ttl: Duration::ZERO,
                deadline: now,
            },
        );
        let state = Arc::new(MasterState {
            registry: Mutex::new(Registry {
                entries,
                leases: HashMap::new(),
                // Random start: a restarted master never recognises an old master's leases.
                next_lease: super::backoff::random() | 1,
                gone: BTreeSet::new(),
            }),
            view: view::channel(),
            wake: Notify::new(),
            settled_at: now + config.ttl,
            stop: watch::Sender::new(false),
            max_members: config.max_members,
        });
        state.publish(&state.lock());
        state
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means a panic elsewhere mid-update; the map is still consistent
        // enough to serve (every update is a single insert or remove).
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, registry: &Registry) {
        let members: BTreeMap<NodeId, Member> = registry
            .entries
            .iter()
            .map(|(id, e)| (id.clone(), e.member.clone()))
            .collect();
        view::update(&self.view, |v| {
            v.members = members;
            v.registered = true;
        });
    }

    fn stopped(&self) -> Result<(), Status> {
        if *self.stop.borrow() {
            Err(Status::unavailable("master stopping"))
        } else {
            Ok(())
        }
    }

    fn register(&self, member: Member, ttl: Duration) -> Result<(u64, Duration), Status> {
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let mut reg = self.lock();
        match reg.entries.get(&member.id) {
            Some(Entry { lease: None, .. }) => {
                return Err(Status::already_exists(format!(
                    "node id {} is the master's own",
                    member.id
                )))
            }
            Some(_) => {}
            None if reg.entries.len() >= self.max_members => {
                return Err(Status::resource_exhausted("too many members"))
            }
            None => {}
        }
        let lease = reg.next_lease;
        reg.next_lease = reg.next_lease.wrapping_add(2);
        let id = member.id.clone();
        let old = reg.entries.insert(
            id.clone(),
            Entry {
                member,
                lease: Some(lease),
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        // A node registering again (it restarted, or lost its lease) replaces its old entry.
        if let Some(old_lease) = old.and_then(|e| e.lease) {
            reg.leases.remove(&old_lease);
        }
        reg.leases.insert(lease, id.clone());
        reg.gone.remove(&id);
        self.publish(&reg);
        drop(reg);
        self.wake.notify_one();
        tracing::debug!(node = %id, lease, ?ttl, "member registered");
        Ok((lease, ttl))
    }

    fn keep_alive(&self, lease: u64) -> bool {
        let mut reg = self.lock();
        let Some(id) = reg.leases.get(&lease).cloned() else {
            return false;
        };
        match reg.entries.get_mut(&id) {
            Some(entry) => {
                entry.deadline = Instant::now() + entry.ttl;
                true
            }
            None => false,
        }
    }

    fn deregister(&self, lease: u64) {
        let mut reg = self.lock();
        if let Some(id) = reg.leases.remove(&lease) {
            reg.entries.remove(&id);
            self.left(&mut reg, &id);
            self.publish(&reg);
            tracing::debug!(node = %id, "member deregistered");
        }
    }

    /// The master node leaves its own list (graceful shutdown), so watchers see it go.
    pub fn leave(&self, id: &NodeId) {
        let mut reg = self.lock();
        if reg.entries.get(id).is_some_and(|e| e.lease.is_none()) {
            reg.entries.remove(id);
            self.left(&mut reg, id);
            self.publish(&reg);
        }
    }

    fn settled(&self) -> bool {
        Instant::now() >= self.settled_at
    }

    /// Remembers, until settled, that `id` left.
    fn left(&self, reg: &mut Registry, id: &NodeId) {
        if !self.settled() && reg.gone.len() < self.max_members {
            reg.gone.insert(id.clone());
        }
    }

    /// Drops lapsed leases; returns when the next one may lapse.
    fn reap(&self, now: Instant) -> Option<Instant> {
        let mut reg = self.lock();
        let lapsed: Vec<(NodeId, u64)> = reg
            .entries
            .iter()
            .filter_map(|(id, e)| {
                e.lease
                    .filter(|_| e.deadline <= now)
                    .map(|l| (id.clone(), l))
            })
            .collect();
        for (id, lease) in &lapsed {
            reg.entries.remove(id);
            reg.leases.remove(lease);
            self.left(&mut reg, id);
            tracing::info!(node = %id, "member lease lapsed");
        }
        if !lapsed.is_empty() {
            self.publish(&reg);
        }
        reg.entries
            .values()
            .filter(|e| e.lease.is_some())
            .map(|e| e.deadline)
            .min()
    }

    /// Drops lapsed leases until the master stops. Also re-publishes once when the settling
    /// period ends, so watchers receive their first complete snapshot.
    pub async fn reaper(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut settled = false;
        loop {
            let now = Instant::now();
            let next_lapse = self.reap(now);
            if !settled && now >= self.settled_at {
                settled = true;
                self.lock().gone.clear();
                self.view.send_modify(|_| {});
            }
            let next = match (next_lapse, settled) {
                (Some(t), false) => Some(t.min(self.settled_at)),
                (None, false) => Some(self.settled_at),
                (t, true) => t,
            };
            let wait = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The member list as watchers receive it (read from the registry itself, so members and
    /// `removed` agree).
    fn snapshot(&self) -> pb::Snapshot {
        let reg = self.lock();
        let complete = self.settled();
        pb::Snapshot {
            members: reg
                .entries
                .values()
                .map(|e| pb::Member::from(&e.member))
                .collect(),
            complete,
            removed: if complete {
                Vec::new()
            } else {
                reg.gone.iter().map(|id| id.as_str().to_owned()).collect()
            },
        }
    }
}

/// The embedded master's gRPC service, for serving it on a tonic server of your own (next to
/// the node's other services) instead of the one [`Embedded::master`](super::Embedded::master)
/// starts; see [`Embedded::master_service`](super::Embedded::master_service). Once its
/// [`Embedded`](super::Embedded) handle is gone, it refuses every call and ends every watch.
pub struct MasterService(pub(crate) Arc<MasterState>);

impl std::fmt::Debug for MasterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterService").finish_non_exhaustive()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::master_server::Master for MasterService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.0.stopped()?;
        let req = request.into_inner();
        let member = req
            .member
            .ok_or_else(|| Status::invalid_argument("no member"))
            .and_then(|m| Member::try_from(m).map_err(Status::invalid_argument))?;
        let (lease_id, ttl) = self.0.register(member, Duration::from_millis(req.ttl_ms))?;
        Ok(Response::new(pb::RegisterResponse {
            lease_id,
            ttl_ms: ttl.as_millis() as u64,
        }))
    }

    async fn keep_alive(
        &self,
        request: Request<pb::KeepAliveRequest>,
    ) -> Result<Response<pb::KeepAliveResponse>, Status> {
        self.0.stopped()?;
        let known = self.0.keep_alive(request.into_inner().lease_id);
        Ok(Response::new(pb::KeepAliveResponse { known }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        self.0.stopped()?;
        self.0.deregister(request.into_inner().lease_id);
        Ok(Response::new(pb::DeregisterResponse {}))
    }

    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.0.stopped()?;
        let state = Arc::clone(&self.0);
        let views = state.view.subscribe();
        let stop = state.stop.subscribe();
        // A snapshot first, then one per change; when the master stops, a last one (it may
        // carry the master leaving), then the end.
        let stream = futures_util::stream::unfold(
            (state, views, stop, true, false),
            |(state, mut views, mut stop, first, done)| async move {
                if done {
                    return None;
                }
                let mut last = false;
                if !first {
                    tokio::select! {
                        biased;
                        changed = views.changed() => changed.ok()?,
                        _ = stop.wait_for(|s| *s) => last = true,
                    }
                }
                views.mark_unchanged();
                Some((Ok(state.snapshot()), (state, views, stop, false, last)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
