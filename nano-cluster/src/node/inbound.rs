//! Frames from peers, routed to the gate's or the backend's half of this node.

use std::sync::Weak;

use nano_core::{Error, Serializer};

use super::State;
use crate::link::{Inbound as Frame, LinkHandler, NodeLink};

/// The node's [`LinkHandler`]. Holds the node weakly: the links must not keep it alive.
pub(crate) struct Inbound<S>(pub(crate) Weak<State<S>>);

impl<S: Serializer> LinkHandler for Inbound<S> {
    fn on_inbound(&self, peer: &NodeLink, frame: Frame) {
        let Some(state) = self.0.upgrade() else {
            if let Frame::Request(_, responder) = frame {
                responder.respond(Err(Error::unavailable("node stopped")));
            }
            return;
        };
        match frame {
            // Sent by gates to this node as a backend.
            Frame::Request(req, responder) => state.backend.request(&state, peer, req, responder),
            Frame::Notify(n) => state.backend.notify(&state, peer, n),
            Frame::SessionClosed(s) => state.backend.session_closed(peer, s.session_id),
            // Sent by backends to this node as a gate.
            Frame::Push(p) => state.gate.push(p),
            Frame::Kick(k) => state.gate.kick(k, &state.logins),
            Frame::Close(c) => state.gate.close(c),
            Frame::Bind(b) => state.gate.bind(b),
            Frame::Holding(h) => state.gate.holding(peer, h.session_id),
            Frame::UidBound(u) => state.logins.bound_elsewhere(peer, &u.uid, u.session_id),
        }
    }
}
