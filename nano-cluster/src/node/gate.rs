//! The gate's half: forward the messages of client sessions to the members hosting their
//! service, and deliver what those members send back (responses, pushes, kicks, binds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nano_core::protocol::{Message, MessageType};
use nano_core::{Error, InFlight, Origin, Serializer, Session};

use super::picker::PickContext;
use super::{lock, State};
use crate::link::{proto, LinkState, NodeLink};

/// A client session of this gate that forwarded at least one message.
struct Forwarded<S> {
    session: Session<S>,
    /// Service → the member serving it for this session (sticky).
    routes: HashMap<Arc<str>, Arc<str>>,
    /// Other members holding a stand-in of the session (reached through another member).
    holders: Vec<Arc<str>>,
    /// The session's [`state_version`](Session::state_version) last sent to each member.
    told: HashMap<Arc<str>, u64>,
}

/// The client sessions that forwarded messages, by session id.
pub(crate) struct Gate<S> {
    sessions: Mutex<HashMap<u64, Forwarded<S>>>,
}

impl<S> Default for Gate<S> {
    fn default() -> Self {
        Gate {
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Serializer> Gate<S> {
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn session(&self, id: u64) -> Option<Session<S>> {
        lock(&self.sessions).get(&id).map(|f| f.session.clone())
    }

    /// A client session closed: every member it was routed to hears of it.
    pub fn session_closed(&self, state: &State<S>, id: u64) {
        let Some(gone) = lock(&self.sessions).remove(&id) else {
            return;
        };
        let mut told: Vec<&Arc<str>> = Vec::new();
        for node in gone.routes.values().chain(&gone.holders) {
            if told.contains(&node) {
                continue;
            }
            told.push(node);
            if let Some(link) = state.peers.link(node) {
                if let Err(e) = link.session_closed(id) {
                    tracing::debug!(session = id, peer = %node, error = %e, "session close not sent");
                }
            }
        }
    }

    /// A member left: the sessions routed to it pick another on their next message.
    pub fn member_left(&self, node: &str) {
        for f in lock(&self.sessions).values_mut() {
            f.routes.retain(|_, n| &**n != node);
            f.holders.retain(|n| &**n != node);
            // If it comes back (restarted), it knows nothing of the session.
            f.told.remove(node);
        }
    }

    /// `peer` holds a stand-in of session `id`: it hears of the close too, at once if the
    /// session is gone already.
    pub fn holding(&self, peer: &NodeLink, id: u64) {
        let Some(node) = peer.peer_id() else { return };
        let known = match lock(&self.sessions).get_mut(&id) {
            Some(f) => {
                if !f.holders.contains(&node) {
                    f.holders.push(node);
                }
                true
            }
            None => false,
        };
        if !known {
            if let Err(e) = peer.session_closed(id) {
                tracing::debug!(session = id, error = %e, "session close not sent");
            }
        }
    }

    /// Pushes from a backend to sessions of this gate: encoded here, for each client as it
    /// reads routes (compressed or not).
    pub fn push(&self, push: proto::Push) {
        for id in push.session_ids {
            let Some(session) = self.session(id) else {
                continue;
            };
            if let Err(e) = session.push_raw(&push.route, &push.payload) {
                tracing::debug!(session = id, route = %push.route, error = %e, "forwarded push not delivered");
            }
        }
    }

    /// A backend (or another gate refusing a login) kicks a client session: one that
    /// forwarded, or one with a uid (`logins`).
    pub fn kick(&self, kick: proto::Kick, logins: &super::login::Logins<S>) {
        let session = self
            .session(kick.session_id)
            .or_else(|| logins.session(kick.session_id));
        if let Some(session) = session {
            let reason = (!kick.reason.is_empty()).then_some(kick.reason.as_str());
            session.kick_with_reason(reason);
        }
    }

    pub fn close(&self, close: proto::Close) {
        if let Some(session) = self.session(close.session_id) {
            session.close();
        }
    }

    pub fn bind(&self, bind: proto::Bind) {
        if let Some(session) = self.session(bind.session_id) {
            if let Err(e) = session.bind(bind.uid) {
                tracing::debug!(session = bind.session_id, error = %e, "bind from a backend refused");
            }
        }
    }

    /// The member serving `service` for client session `session` (sticky). `None` when no
    /// member hosts it.
    fn route(
        &self,
        state: &State<S>,
        session: &Session<S>,
        service: &str,
        route: &str,
    ) -> Option<(NodeLink, bool)> {
        let mut sessions = lock(&self.sessions);
        let entry = sessions.entry(session.id()).or_insert_with(|| Forwarded {
            session: session.clone(),
            routes: HashMap::new(),
            holders: Vec::new(),
            told: HashMap::new(),
        });
        let Some(link) = sticky_pick(state, &mut entry.routes, session, service, route) else {
            if entry.routes.is_empty() && entry.holders.is_empty() {
                sessions.remove(&session.id());
            }
            return None;
        };
        // The session's uid and shared data go along when the member has not seen this
        // version of them yet.
        let version = session.state_version();
        // (`sticky_pick` recorded the member for the service.)
        let stale = match entry.routes.get(service) {
            Some(node) => entry.told.insert(node.clone(), version) != Some(version),
            None => true,
        };
        Some((link, stale))
    }
}

/// The member serving `service` for `session`: the choice in `routes` while that member is
/// there, else a fresh pick among those hosting it (remembered). `None` when none does.
pub(crate) fn sticky_pick<S: Serializer>(
    state: &State<S>,
    routes: &mut HashMap<Arc<str>, Arc<str>>,
    session: &Session<S>,
    service: &str,
    route: &str,
) -> Option<NodeLink> {
    if let Some(node) = routes.get(service) {
        if let Some(link) = state.peers.link(node) {
            return Some(link);
        }
    }
    let candidates = state.peers.hosting(service);
    if candidates.is_empty() {
        return None;
    }
    let members: Vec<crate::Member> = candidates.iter().map(|p| p.member.clone()).collect();
    let uid = session.uid();
    let cx = PickContext {
        session_id: session.id(),
        uid: uid.as_deref(),
        service,
        route,
    };
    let chosen = &candidates[state.picker.pick(&cx, &members) % candidates.len()];
    routes.insert(service.into(), chosen.member.id.as_str().into());
    Some(chosen.link.clone())
}

impl<S: Serializer> State<S> {
    /// A message whose route no local component serves: forwarded to a member hosting its
    /// service, or handed back (the engine answers `NANO-404`). The session is a client's of
    /// this gate, or a stand-in this node holds for another gate's client (a session RPC from
    /// a backend's handler); the receiver answers through the session's gate either way.
    pub(crate) fn forward(
        &self,
        session: &Session<S>,
        msg: Message,
        origin: Origin,
    ) -> Result<(), Message> {
        let Some(route) = msg.route.as_deref() else {
            return Err(msg);
        };
        let service = route.split_once('.').map_or(route, |(s, _)| s);
        if self.engine().is_some_and(|e| e.hosts(service)) {
            // A local service without that method: a plain NANO-404.
            return Err(msg);
        }
        let routed = match self.backend.route(self, session, service, route) {
            // A stand-in's state goes along every time (session RPCs are rare).
            Some(stand_in) => stand_in.map(|(gate, link)| (gate, link, true)),
            None => self
                .gate
                .route(self, session, service, route)
                .map(|(link, stale)| (String::new(), link, stale)),
        };
        let Some((gate, link, stale)) = routed else {
            return Err(msg);
        };
        let snapshot = stale.then(|| snapshot(session));
        let from_node = origin == Origin::Node;
        match msg.kind {
            MessageType::Request => {
                let Some(slot) = session.try_in_flight() else {
                    session.respond_error(
                        msg.id,
                        &Error::too_many_requests("too many requests in flight"),
                    );
                    return Ok(());
                };
                let req = proto::Request {
                    session_id: session.id(),
                    session: snapshot,
                    route: route.to_owned(),
                    payload: msg.payload,
                    client_mid: msg.id,
                    gate,
                    from_node,
                    ..Default::default()
                };
                tokio::spawn(forward_request(link, req, self.forward_deadline, slot));
            }
            MessageType::Notify => {
                let notify = proto::Notify {
                    session_id: session.id(),
                    session: snapshot,
                    route: route.to_owned(),
                    payload: msg.payload,
                    gate,
                    from_node,
                };
                if let Err(e) = link.notify(notify) {
                    tracing::debug!(session = session.id(), route, error = %e, "forwarded notify dropped");
                }
            }
            _ => return Err(msg),
        }
        Ok(())
    }
}

/// What a member needs to know of a session: its uid and shared data.
pub(crate) fn snapshot<S>(session: &Session<S>) -> proto::SessionSnapshot {
    proto::SessionSnapshot {
        uid: session.uid().unwrap_or_default(),
        data: session.shared_data().into_iter().collect(),
    }
}

/// Sends a forwarded request and answers the client with the backend's answer, or with
/// `NANO-503` / `NANO-504` when there is none within the deadline. Holds the session's
/// in-flight slot until then.
async fn forward_request<S: Serializer>(
    link: NodeLink,
    req: proto::Request,
    deadline: std::time::Duration,
    slot: InFlight<S>,
) {
    let mid = req.client_mid;
    let started = tokio::time::Instant::now();
    let result: Result<Bytes, crate::link::LinkError> = async {
        if link.state() != LinkState::Up {
            link.wait_up(deadline).await?;
        }
        let left = deadline.saturating_sub(started.elapsed());
        link.request(req, left).await
    }
    .await;
    let session = slot.session();
    match result {
        Ok(payload) => session.respond_raw(mid, &payload),
        Err(e) => {
            tracing::debug!(session = session.id(), mid, error = %e, "forwarded request failed");
            session.respond_error(mid, &e.into_error());
        }
    }
}
