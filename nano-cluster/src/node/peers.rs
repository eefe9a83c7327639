//! The other members of the cluster as discovery reports them, each with its node link.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use nano_core::Serializer;
use tokio::sync::watch;

use super::State;
use crate::link::{LinkState, NodeLink};
use crate::{Change, Member, Watch};

/// A member and the link to it.
#[derive(Clone)]
pub(crate) struct Peer {
    pub member: Member,
    pub link: NodeLink,
}

/// The members other than this node, by id (sorted, so pickers see a stable order).
pub(crate) struct Peers {
    by_id: RwLock<BTreeMap<Arc<str>, Peer>>,
    /// Bumped on every change, for [`Peers::wait_for_service`].
    version: watch::Sender<u64>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            by_id: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
        }
    }
}

impl Peers {
    pub fn members(&self) -> Vec<Member> {
        self.read().values().map(|p| p.member.clone()).collect()
    }

    /// Every member now.
    pub fn all(&self) -> Vec<Peer> {
        self.read().values().cloned().collect()
    }

    /// The link to member `id`, if it is a member now (the hot path: no member record copied).
    pub fn link(&self, id: &str) -> Option<NodeLink> {
        self.read().get(id).map(|p| p.link.clone())
    }

    /// The peer `id`, if it is a member now.
    pub fn get(&self, id: &str) -> Option<Peer> {
        self.read().get(id).cloned()
    }

    /// The members hosting `service`, sorted by id.
    pub fn hosting(&self, service: &str) -> Vec<Peer> {
        self.read()
            .values()
            .filter(|p| p.member.hosts(service))
            .cloned()
            .collect()
    }

    fn insert(&self, id: Arc<str>, peer: Peer) {
        self.write().insert(id, peer);
        self.version.send_modify(|v| *v += 1);
    }

    fn remove(&self, id: &str) -> Option<Peer> {
        let gone = self.write().remove(id);
        self.version.send_modify(|v| *v += 1);
        gone
    }

    /// Waits until `n` members hosting `service` are known with their links up, at most
    /// `within`.
    pub async fn wait_for_service(&self, service: &str, n: usize, within: Duration) -> bool {
        let mut members = self.version.subscribe();
        let wait = async {
            loop {
                members.borrow_and_update();
                // Subscribed before looking, so no change between the two is missed.
                let mut states: Vec<_> = self
                    .hosting(service)
                    .iter()
                    .map(|p| p.link.watch_state())
                    .collect();
                let mut up = 0;
                for s in &mut states {
                    if *s.borrow_and_update() == LinkState::Up {
                        up += 1;
                    }
                }
                if up >= n {
                    return;
                }
                if states.is_empty() {
                    if members.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } else {
                    // `select_all` needs at least one future: there is one per state here.
                    let link_changed = futures_util::future::select_all(
                        states.iter_mut().map(|s| Box::pin(s.changed())),
                    );
                    tokio::select! {
                        _ = members.changed() => {}
                        _ = link_changed => {}
                    }
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Waits until `pred` holds for the member list, at most `within`.
    pub async fn wait_until(&self, within: Duration, pred: impl Fn(&[Member]) -> bool) -> bool {
        let mut members = self.version.subscribe();
        let wait = async {
            loop {
                members.borrow_and_update();
                if pred(&self.members()) {
                    return;
                }
                if members.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Waits until member `id` is known with its link up, at most `within`.
    pub async fn wait_for_peer(&self, id: &str, within: Duration) -> bool {
        let mut members = self.version.subscribe();
        let wait = async {
            loop {
                members.borrow_and_update();
                if let Some(peer) = self.get(id) {
                    let mut state = peer.link.watch_state();
                    if *state.borrow_and_update() == LinkState::Up {
                        return;
                    }
                    tokio::select! {
                        _ = members.changed() => {}
                        _ = state.changed() => {}
                    }
                } else if members.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, Peer>> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Arc<str>, Peer>> {
        self.by_id.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Follows discovery until it ends (or the node is gone): links to every member that joins,
/// forgets every member that leaves (closing the sessions a gate that left held here).
pub(crate) async fn watch<S: Serializer>(state: Weak<State<S>>, mut changes: Watch) {
    while let Some(change) = changes.next().await {
        let Some(state) = state.upgrade() else { return };
        match change {
            Change::Insert(id, member) if id.as_str() != &*state.id => {
                let Ok(addr) = member.address.parse::<SocketAddr>() else {
                    tracing::warn!(node = %state.id, peer = %id, address = %member.address, "member address is not ip:port; ignored");
                    continue;
                };
                let Some(service) = state.service.get() else {
                    continue;
                };
                let link = service.link_to(id.as_str(), addr);
                tracing::info!(node = %state.id, peer = %id, %addr, services = ?member.services, "member joined");
                state
                    .peers
                    .insert(id.as_str().into(), Peer { member, link });
            }
            Change::Insert(..) => {}
            Change::Remove(id) => {
                if state.peers.remove(id.as_str()).is_some() {
                    tracing::info!(node = %state.id, peer = %id, "member left");
                }
                if let Some(service) = state.service.get() {
                    service.forget(id.as_str());
                }
                state.gate.member_left(id.as_str());
                state.backend.gate_left(id.as_str());
            }
            Change::LeaseLost => {
                tracing::warn!(node = %state.id, "cluster lease lost; re-registering");
            }
            Change::Registered => {
                tracing::info!(node = %state.id, "registered in the cluster");
            }
        }
    }
}
