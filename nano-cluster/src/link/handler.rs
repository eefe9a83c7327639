//! What a node does with the frames its peers send: the seam the gate and backend plug into.

use super::proto;
use super::{NodeLink, Responder};

/// One frame from a peer, as handed to a [`LinkHandler`].
#[derive(Debug)]
pub enum Inbound {
    /// A request to serve; answer it through the [`Responder`] (exactly once — dropping it
    /// unanswered sends a `NANO-500` error back).
    Request(proto::Request, Responder),
    /// A message without answer.
    Notify(proto::Notify),
    /// A push to deliver to one or several local sessions.
    Push(proto::Push),
    /// Kick a local session.
    Kick(proto::Kick),
    /// Close a local session.
    Close(proto::Close),
    /// A session of the peer (a gate) is gone.
    SessionClosed(proto::SessionClosed),
    /// The peer bound a uid to a local session.
    Bind(proto::Bind),
    /// The peer holds a stand-in of a local session.
    Holding(proto::Holding),
    /// The peer (a gate) bound a uid to one of its sessions.
    UidBound(proto::UidBound),
}

/// Receives what peers send over node links, for a [`NodeServer`](super::NodeServer) and for
/// links a node dialed alike.
///
/// The methods run on the link's reader task: they must not block. Queue the work (a
/// scheduler, a channel) or spawn it; a [`Responder`] may be moved anywhere and answered later.
///
/// # Examples
///
/// ```
/// use nano_cluster::link::{Inbound, LinkHandler, NodeLink};
///
/// /// Answers every request with its own payload.
/// struct Echo;
///
/// impl LinkHandler for Echo {
///     fn on_inbound(&self, _peer: &NodeLink, inbound: Inbound) {
///         if let Inbound::Request(req, responder) = inbound {
///             responder.respond(Ok(req.payload));
///         }
///     }
/// }
/// ```
pub trait LinkHandler: Send + Sync + 'static {
    /// One inbound frame from `peer`.
    fn on_inbound(&self, peer: &NodeLink, inbound: Inbound);

    /// The link to `peer` is up (both `Hello`s exchanged). Also called after each reconnect.
    fn on_connected(&self, peer: &NodeLink) {
        let _ = peer;
    }

    /// The link to `peer` went down; its pending requests have been answered with
    /// `NANO-503` already. A dialed link redials by itself.
    fn on_disconnected(&self, peer: &NodeLink) {
        let _ = peer;
    }
}

/// A handler that serves nothing: inbound requests are answered with `NANO-404`, other frames
/// are dropped. For nodes that only dial, and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHandler;

impl LinkHandler for NoHandler {
    fn on_inbound(&self, _peer: &NodeLink, inbound: Inbound) {
        if let Inbound::Request(req, responder) = inbound {
            responder.respond(Err(nano_core::Error::not_found(format!(
                "no handler for {}",
                req.route
            ))));
        }
    }
}

impl<H: LinkHandler> LinkHandler for std::sync::Arc<H> {
    fn on_inbound(&self, peer: &NodeLink, inbound: Inbound) {
        (**self).on_inbound(peer, inbound);
    }
    fn on_connected(&self, peer: &NodeLink) {
        (**self).on_connected(peer);
    }
    fn on_disconnected(&self, peer: &NodeLink) {
        (**self).on_disconnected(peer);
    }
}
