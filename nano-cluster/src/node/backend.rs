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

impl<S: Serializer> Backend<S> {
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The stand-in for session `id` of `gate`, made on its first message; its uid follows
    /// the gate's snapshot.
    fn session(
        &self,
        state: &State<S>,
        gate: &NodeLink,
        id: u64,
        snapshot: Option<&proto::SessionSnapshot>,
    ) -> Option<(Session<S>, Arc<RemoteLink<S>>)> {
        let gate_id = gate.peer_id()?;
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
                    let link = Arc::new(RemoteLink {
                        gate: gate.clone(),
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
        }
        Some((session, link))
    }

    /// A forwarded request: run on the stand-in session; its response goes back through
    /// `responder`.
    pub fn request(
        &self,
        state: &State<S>,
        gate: &NodeLink,
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
        let Some((session, link)) = self.session(state, gate, req.session_id, req.session.as_ref())
        else {
            return responder.respond(Err(Error::unavailable("session unknown here")));
        };
        let mid = req.client_mid;
        lock(&link.pending).insert(mid, responder);
        let msg = Message::request(mid, req.route, req.payload);
        if let Err(e) = engine.dispatch_detached(&session, msg, Origin::Client) {
            if let Some(r) = lock(&link.pending).remove(&mid) {
                r.respond(Err(Error::bad_request(e.to_string())));
            }
        }
    }

    /// A forwarded notify: run on the stand-in session.
    pub fn notify(&self, state: &State<S>, gate: &NodeLink, n: proto::Notify) {
        let Some(engine) = state.engine() else { return };
        if n.session_id == 0 {
            return super::call::run_here(&engine, n.route, n.payload, None);
        }
        let Some((session, _)) = self.session(state, gate, n.session_id, n.session.as_ref()) else {
            return;
        };
        let msg = Message::notify(n.route, n.payload);
        if let Err(e) = engine.dispatch_detached(&session, msg, Origin::Client) {
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

fn send_error(e: LinkError) -> SendError {
    match e {
        LinkError::QueueFull(_) => SendError::Full,
        _ => SendError::Closed,
    }
}
