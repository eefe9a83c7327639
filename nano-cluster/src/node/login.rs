//! One session per uid across the cluster: the multi-login policy a gate enforces when a uid
//! is bound to one of its client sessions (by a handler here, or by a backend through a `Bind`
//! frame), and when another gate says it bound one (`UidBound`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nano_core::{Serializer, Session};

use super::{lock, State};
use crate::link::NodeLink;

/// What happens when a uid is bound to a session while another session, anywhere in the
/// cluster, has it.
///
/// Gates learn of each other's binds by message, so two logins of one uid on two gates at the
/// same instant can both lose (each gate applies the policy to the other's); a client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiLogin {
    /// The older session is kicked (reason `"logged in elsewhere"`). The default.
    #[default]
    KickOlder,
    /// The newer session is kicked (reason `"already logged in"`); the older one stays.
    RefuseNewer,
    /// Any number of sessions may share a uid.
    Allow,
}

/// The reason a session is kicked with when another login of its uid wins.
pub const KICKED_ELSEWHERE: &str = "logged in elsewhere";
/// The reason a newer session is kicked with under [`MultiLogin::RefuseNewer`].
pub const REFUSED_ALREADY: &str = "already logged in";

/// The gate's client sessions by uid.
pub(crate) struct Logins<S> {
    policy: MultiLogin,
    by_uid: Mutex<Index<S>>,
}

struct Index<S> {
    sessions: HashMap<Arc<str>, Session<S>>,
    uid_of: HashMap<u64, Arc<str>>,
}

impl<S: Serializer> Logins<S> {
    pub fn new(policy: MultiLogin) -> Self {
        Logins {
            policy,
            by_uid: Mutex::new(Index {
                sessions: HashMap::new(),
                uid_of: HashMap::new(),
            }),
        }
    }

    /// `uid` was bound to `session`, a client session of this gate: apply the policy here,
    /// then tell the other gates.
    pub fn bound(&self, state: &State<S>, session: &Session<S>, uid: &str) {
        if self.policy == MultiLogin::Allow {
            return;
        }
        let (loser, changed) = {
            let mut index = lock(&self.by_uid);
            let key: Arc<str> = uid.into();
            match index.sessions.get(&key) {
                Some(holder) if holder.same(session) => (None, false),
                Some(holder) if self.policy == MultiLogin::RefuseNewer && !holder.is_closed() => {
                    (Some((session.clone(), REFUSED_ALREADY)), false)
                }
                older => {
                    let older = older.cloned();
                    index.forget(session.id());
                    if let Some(older) = &older {
                        index.uid_of.remove(&older.id());
                    }
                    index.uid_of.insert(session.id(), key.clone());
                    index.sessions.insert(key, session.clone());
                    (older.map(|o| (o, KICKED_ELSEWHERE)), true)
                }
            }
        };
        if let Some((loser, reason)) = loser {
            tracing::info!(
                uid,
                session = loser.id(),
                reason,
                "multi-login: kicking a session"
            );
            loser.kick_with_reason(Some(reason));
        }
        if changed {
            for peer in state.peers.all() {
                if let Err(e) = peer.link.uid_bound(uid, session.id()) {
                    tracing::debug!(uid, peer = ?peer.link.peer_id(), error = %e, "uid bind not announced");
                }
            }
        }
    }

    /// Another gate bound `uid` to its session `session_id`.
    pub fn bound_elsewhere(&self, from: &NodeLink, uid: &str, session_id: u64) {
        let holder = {
            let mut index = lock(&self.by_uid);
            match self.policy {
                MultiLogin::Allow => None,
                MultiLogin::KickOlder => {
                    let holder = index.sessions.remove(uid);
                    if let Some(h) = &holder {
                        index.uid_of.remove(&h.id());
                    }
                    holder
                }
                MultiLogin::RefuseNewer => {
                    let held = index.sessions.get(uid).is_some_and(|h| !h.is_closed());
                    drop(index);
                    if held {
                        tracing::info!(
                            uid,
                            session = session_id,
                            "multi-login: refusing a newer login elsewhere"
                        );
                        if let Err(e) = from.kick(session_id, Some(REFUSED_ALREADY)) {
                            tracing::debug!(uid, error = %e, "refusal not sent");
                        }
                    }
                    return;
                }
            }
        };
        if let Some(older) = holder {
            tracing::info!(
                uid,
                session = older.id(),
                "multi-login: logged in on another gate; kicking"
            );
            older.kick_with_reason(Some(KICKED_ELSEWHERE));
        }
    }

    /// The client session `id`, if it has a uid.
    pub fn session(&self, id: u64) -> Option<Session<S>> {
        let index = lock(&self.by_uid);
        let uid = index.uid_of.get(&id)?;
        index.sessions.get(uid).cloned()
    }

    /// A client session closed: its uid is free again.
    pub fn closed(&self, id: u64) {
        lock(&self.by_uid).forget(id);
    }
}

impl<S> Index<S> {
    /// Drops session `id` from the index.
    fn forget(&mut self, id: u64) {
        if let Some(uid) = self.uid_of.remove(&id) {
            if self.sessions.get(&uid).is_some_and(|s| s.id() == id) {
                self.sessions.remove(&uid);
            }
        }
    }
}
