//! The backend's half: a stand-in [`Session`] for each client of a gate that sent it
//! messages, whose [`Link`] sends responses, pushes, kicks, closes and binds back to the gate.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use nano_core::protocol::{Message, MessageType, PacketType, HEADER_LEN};
use nano_core::{Error, Link, Origin, SendError, Serializer, Session};

use super::{lock, State};
use crate::link::{proto, LinkError, NodeLink, Responder};

/// A stand-in session and the gate it belongs to.
struct Remote<S> {
    gate: Arc<str>,
    session: Session<S>,
    link: Arc<RemoteLink<S>>,
    /// Service → the member serving the session's RPCs from here (sticky).
    routes: HashMap<Arc<str>, Arc<str>>,
}

/// The stand-in sessions, by the gate's session id (unique across gates).
pub(crate) struct Backend<S> {
    sessions: Mutex<HashMap<u64, Remote<S>>>,
}

impl<S> Default for Backend<S> {
    fn default() -> Self {
        Backend {
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

/// Where a forwarded message runs.
enum Target<S> {
    /// A stand-in for a client of another gate, and its link.
    StandIn(Session<S>, Arc<RemoteLink<S>>),
    /// A client session of this node (the message came back to its gate).
    Local(Session<S>),
}

impl<S: Serializer> Backend<S> {
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether session `id` is a stand-in held here.
    pub fn holds(&self, id: u64) -> bool {
        lock(&self.sessions).contains_key(&id)
    }

    /// For a stand-in session: the gate it belongs to and the member serving `service` for
    /// it (sticky), `Some(None)` when none does. `None` when `session` is not a stand-in.
    #[allow(clippy::option_option)]
    pub fn route(
        &self,
        state: &State<S>,
        session: &Session<S>,
        service: &str,
        route: &str,
    ) -> Option<Option<(String, NodeLink)>> {
        let mut sessions = lock(&self.sessions);
        let remote = sessions.get_mut(&session.id())?;
        let link = super::gate::sticky_pick(state, &mut remote.routes, session, service, route);
        Some(link.map(|l| (remote.gate.to_string(), l)))
    }

    /// Where a message for session `id` from `sender` runs: on this node's own client
    /// session when `declared` (the message's gate) is this node, else on the stand-in for
    /// that gate's session, made on its first message. Its uid follows the snapshot.
    fn target(
        &self,
        state: &State<S>,
        sender: &NodeLink,
        declared: &str,
        id: u64,
        snapshot: Option<&proto::SessionSnapshot>,
    ) -> Option<Target<S>> {
        let sender_id = sender.peer_id()?;
        let gate_id: Arc<str> = if declared.is_empty() {
            sender_id.clone()
        } else {
            declared.into()
        };
        if gate_id == state.id {
            return state.gate.session(id).map(Target::Local);
        }
        let (session, link) = {
            let mut sessions = lock(&self.sessions);
            match sessions.get(&id) {
                Some(r) if r.gate == gate_id => (r.session.clone(), r.link.clone()),
                Some(r) => {
                    tracing::warn!(session = id, gate = %gate_id, owner = %r.gate, "session id claimed by two gates; message dropped");
                    return None;
                }
                None => {
                    let engine = state.engine()?;
                    let gate = if gate_id == sender_id {
                        sender.clone()
                    } else {
                        let Some(peer) = state.peers.get(&gate_id) else {
                            tracing::debug!(session = id, gate = %gate_id, "message for a session of an unknown gate dropped");
                            return None;
                        };
                        // Reached through another member: the gate must tell us of the close.
                        if let Err(e) = peer.link.holding(id) {
                            tracing::debug!(session = id, gate = %gate_id, error = %e, "holding not sent");
                        }
                        peer.link
                    };
                    let link = Arc::new(RemoteLink {
                        gate,
                        session_id: id,
                        pending: Mutex::new(HashMap::new()),
                        gate_uid: Mutex::new(None),
                        closed: AtomicBool::new(false),
                        _serializer: PhantomData,
                    });
                    let session = engine.open_session_with_id(id, link.clone());
                    sessions.insert(
                        id,
                        Remote {
                            gate: gate_id,
                            session: session.clone(),
                            link: link.clone(),
                            routes: HashMap::new(),
                        },
                    );
                    (session, link)
                }
            }
        };
        if let Some(snap) = snapshot {
            if !snap.uid.is_empty() && session.uid().as_deref() != Some(snap.uid.as_str()) {
                // Bound by the gate (or another backend): known there already.
                *lock(&link.gate_uid) = Some(snap.uid.clone());
                let _ = session.bind(snap.uid.clone());
            }
            // The snapshot is the whole shared state: what it lacks was removed.
            for (key, _) in session.shared_data() {
                if !snap.data.contains_key(&key) {
                    session.remove_shared(&key);
                }
            }
            for (key, value) in &snap.data {
                session.set_shared_raw(key.clone(), value.clone());
            }
        }
        Some(Target::StandIn(session, link))
    }

    /// A forwarded request: run on the session it is for; the response goes back through
    /// `responder`.
    pub fn request(
        &self,
        state: &State<S>,
        sender: &NodeLink,
        req: proto::Request,
        responder: Responder,
    ) {
        let Some(engine) = state.engine() else {
            return responder.respond(Err(Error::unavailable("node shutting down")));
        };
        if req.session_id == 0 {
            // A call from another node: no client behind it, internal routes reachable.
            let reply = Box::new(move |r| responder.respond(r));
            return super::call::run_here(&engine, req.route, req.payload, Some(reply));
        }
        let target = self.target(
            state,
            sender,
            &req.gate,
            req.session_id,
            req.session.as_ref(),
        );
        let (session, link) = match target {
            Some(Target::StandIn(session, link)) => (session, link),
            // Session RPCs are notifies: a request for a client of this gate has no client
            // message id to answer under.
            Some(Target::Local(_)) => {
                return responder.respond(Err(Error::bad_request(
                    "requests on behalf of a session must come from its gate",
                )))
            }
            None => return responder.respond(Err(Error::unavailable("session unknown here"))),
        };
        let origin = origin(req.from_node);
        let mid = req.client_mid;
        lock(&link.pending).insert(mid, responder);
        let msg = Message::request(mid, req.route, req.payload);
        if let Err(e) = engine.dispatch_detached(&session, msg, origin) {
            if let Some(r) = lock(&link.pending).remove(&mid) {
                r.respond(Err(Error::bad_request(e.to_string())));
            }
        }
    }

    /// A forwarded notify: run on the session it is for.
    pub fn notify(&self, state: &State<S>, sender: &NodeLink, n: proto::Notify) {
        let Some(engine) = state.engine() else { return };
        if n.session_id == 0 {
            return super::call::run_here(&engine, n.route, n.payload, None);
        }
        let session = match self.target(state, sender, &n.gate, n.session_id, n.session.as_ref()) {
            Some(Target::StandIn(session, _) | Target::Local(session)) => session,
            None => return,
        };
        let msg = Message::notify(n.route, n.payload);
        if let Err(e) = engine.dispatch_detached(&session, msg, origin(n.from_node)) {
            tracing::debug!(session = n.session_id, error = %e, "forwarded notify refused");
        }
    }

    /// The gate says its client session is gone: the stand-in closes (callbacks run once).
    pub fn session_closed(&self, gate: &NodeLink, id: u64) {
        let gone = {
            let mut sessions = lock(&self.sessions);
            match sessions.get(&id) {
                Some(r) if Some(&r.gate) == gate.peer_id().as_ref() => sessions.remove(&id),
                _ => None,
            }
        };
        if let Some(r) = gone {
            r.link.closed.store(true, Ordering::Release);
            r.session.closed();
        }
    }

    /// A gate left the cluster: every session it held here closes.
    pub fn gate_left(&self, gate: &str) {
        let gone: Vec<Remote<S>> = {
            let mut sessions = lock(&self.sessions);
            let ids: Vec<u64> = sessions
                .iter()
                .filter(|(_, r)| &*r.gate == gate)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        if !gone.is_empty() {
            tracing::info!(
                gate,
                sessions = gone.len(),
                "gate left: closing its sessions"
            );
        }
        for r in gone {
            r.link.closed.store(true, Ordering::Release);
            r.session.closed();
        }
    }

    /// The node stops: every stand-in closes.
    pub fn close_all(&self) {
        let gone: Vec<Remote<S>> = lock(&self.sessions).drain().map(|(_, r)| r).collect();
        for r in gone {
            r.link.closed.store(true, Ordering::Release);
            r.session.closed();
        }
    }

    /// A session closed here (kicked or closed by a handler, or one of the above).
    pub fn forget(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }
}

/// Where a stand-in session's packets go: back to its gate, over the node link. Responses
/// answer the gate's pending request; pushes become `Push` frames the gate encodes for its
/// client.
pub(crate) struct RemoteLink<S> {
    gate: NodeLink,
    session_id: u64,
    /// The gate's requests waiting for their handler, by client message id.
    pending: Mutex<HashMap<u64, Responder>>,
    /// The uid the gate knows (so binding it again is not echoed back).
    gate_uid: Mutex<Option<String>>,
    closed: AtomicBool,
    _serializer: PhantomData<fn() -> S>,
}

impl<S> RemoteLink<S> {
    /// The message in a data packet a session queued; `None` (traced) for anything else.
    fn message(&self, packet: &Bytes) -> Option<Message> {
        // A session sends whole data packets (push, response) on its link.
        if packet.len() < HEADER_LEN || packet[0] != PacketType::Data as u8 {
            return None;
        }
        match Message::decode(packet.slice(HEADER_LEN..), None) {
            Ok(msg) => Some(msg),
            Err(e) => {
                tracing::warn!(session = self.session_id, error = %e, "undecodable packet from a stand-in session");
                None
            }
        }
    }
}

impl<S: Serializer> Link for RemoteLink<S> {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let Some(msg) = self.message(&packet) else {
            return Ok(());
        };
        match msg.kind {
            MessageType::Response => {
                let Some(responder) = lock(&self.pending).remove(&msg.id) else {
                    return Ok(());
                };
                if msg.error {
                    let err = S::decode_error(&msg.payload).unwrap_or_else(|e| e);
                    responder.respond(Err(err));
                } else {
                    responder.respond(Ok(msg.payload));
                }
                Ok(())
            }
            MessageType::Push => {
                let route = msg.route.as_deref().unwrap_or("").to_owned();
                self.gate
                    .push(route, msg.payload, vec![self.session_id])
                    .map_err(send_error)
            }
            _ => Ok(()),
        }
    }

    /// Every stand-in of one gate shares the gate's link: a broadcast to them is one push.
    fn fanout_key(&self) -> Option<usize> {
        Some(self.gate.identity())
    }

    fn send_many(&self, packet: Bytes, sessions: Vec<u64>) -> Result<(), SendError> {
        let Some(msg) = self.message(&packet) else {
            return Ok(());
        };
        if msg.kind != MessageType::Push {
            return Ok(());
        }
        let route = msg.route.as_deref().unwrap_or("").to_owned();
        self.gate
            .push(route, msg.payload, sessions)
            .map_err(send_error)
    }

    fn kick(&self, reason: Option<&str>) {
        if let Err(e) = self.gate.kick(self.session_id, reason) {
            tracing::debug!(session = self.session_id, error = %e, "kick not sent to the gate");
        }
    }

    fn close(&self) {
        if let Err(e) = self.gate.close_session(self.session_id) {
            tracing::debug!(session = self.session_id, error = %e, "close not sent to the gate");
        }
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn bound(&self, uid: &str) {
        let mut known = lock(&self.gate_uid);
        if known.as_deref() == Some(uid) {
            return;
        }
        *known = Some(uid.to_owned());
        if let Err(e) = self.gate.bind(self.session_id, uid) {
            tracing::debug!(session = self.session_id, error = %e, "bind not sent to the gate");
        }
    }
}

fn origin(from_node: bool) -> Origin {
    if from_node {
        Origin::Node
    } else {
        Origin::Client
    }
}

fn send_error(e: LinkError) -> SendError {
    match e {
        LinkError::QueueFull(_) => SendError::Full,
        _ => SendError::Closed,
    }
}
