//! Server-to-server calls: [`Node::call`] and friends, and the throwaway session a called
//! handler runs on.
//!
//! A call is a request without a client: the handler gets a session of its own (id 0, no uid)
//! whose response goes back to the caller; pushes, kicks and closes on it go nowhere. Calls
//! may reach internal routes (`#[handler(internal)]`), which clients cannot.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{Message, MessageType, PacketType, HEADER_LEN};
use nano_core::{Decode, Encode, Engine, Error, Link, Origin, SendError, Serializer};
use tokio::sync::oneshot;

use super::picker::PickContext;
use super::{lock, Node, State};
use crate::link::{proto, NodeLink};

/// Where the answer of a call goes.
type Reply = Box<dyn FnOnce(Result<Bytes, Error>) + Send>;

/// The link of a call's session: its one response goes to the caller.
pub(crate) struct CallLink<S> {
    reply: Mutex<Option<Reply>>,
    _serializer: PhantomData<fn() -> S>,
}

impl<S> CallLink<S> {
    pub(crate) fn new(reply: Option<Reply>) -> Self {
        CallLink {
            reply: Mutex::new(reply),
            _serializer: PhantomData,
        }
    }
}

impl<S: Serializer> Link for CallLink<S> {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        if packet.len() < HEADER_LEN || packet[0] != PacketType::Data as u8 {
            return Ok(());
        }
        let Ok(msg) = Message::decode(packet.slice(HEADER_LEN..), None) else {
            return Ok(());
        };
        if msg.kind != MessageType::Response {
            tracing::debug!(route = ?msg.route, "push on a call's session dropped");
            return Ok(());
        }
        if let Some(reply) = lock(&self.reply).take() {
            if msg.error {
                reply(Err(S::decode_error(&msg.payload).unwrap_or_else(|e| e)));
            } else {
                reply(Ok(msg.payload));
            }
        }
        Ok(())
    }

    fn kick(&self, _reason: Option<&str>) {}

    fn close(&self) {}

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// Runs a call on this node's engine: `reply` gets the handler's answer (`None`: a notify).
pub(crate) fn run_here<S: Serializer>(
    engine: &Engine<S>,
    route: String,
    payload: Bytes,
    reply: Option<Reply>,
) {
    let is_request = reply.is_some();
    let session = engine.open_session_with_id(0, Arc::new(CallLink::<S>::new(reply)));
    let msg = if is_request {
        Message::request(1, route, payload)
    } else {
        Message::notify(route, payload)
    };
    if let Err(e) = engine.dispatch_detached(&session, msg, Origin::Node) {
        tracing::debug!(error = %e, "call refused");
    }
}

impl<S: Serializer> Node<S> {
    /// Calls `route` on a node hosting its service (this one when it does, else one picked
    /// among the members) and decodes the reply, within the node's forward deadline.
    /// Internal routes are reachable. From a handler, spawn it
    /// ([`Context::spawn`](nano_core::Context::spawn)) and answer with a deferred
    /// [`Responder`](nano_core::Responder).
    ///
    /// # Errors
    ///
    /// The handler's error as it returned it; `NANO-404` when no node hosts the service or
    /// the route; `NANO-503` when the node is unreachable; `NANO-504` past the deadline;
    /// `NANO-400` when the reply does not decode as `T`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(node: std::sync::Arc<nano_cluster::node::Node<nano_core::Json>>) -> nano_core::Result<()> {
    /// let online: u32 = node.call("TopicService.Stats", &()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<T: Decode<S>>(
        &self,
        route: &str,
        value: &(impl Encode<S> + ?Sized),
    ) -> Result<T, Error> {
        self.call_within(route, value, self.state.forward_deadline)
            .await
    }

    /// [`call`](Self::call) with its own deadline.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn call_within<T: Decode<S>>(
        &self,
        route: &str,
        value: &(impl Encode<S> + ?Sized),
        deadline: Duration,
    ) -> Result<T, Error> {
        let payload = encode(value)?;
        let reply = match self.state.here_or_there(route)? {
            Target::Here(engine) => call_here(&engine, route, payload, deadline).await?,
            Target::There(link) => call_there(&link, route, payload, deadline).await?,
        };
        T::decode(&reply)
    }

    /// [`call`](Self::call) on the member `node` (or this node, by its own id).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); `NANO-404` when `node` is not a member.
    pub async fn call_on<T: Decode<S>>(
        &self,
        node: &str,
        route: &str,
        value: &(impl Encode<S> + ?Sized),
    ) -> Result<T, Error> {
        let payload = encode(value)?;
        let deadline = self.state.forward_deadline;
        let reply = match self.state.node_target(node)? {
            Target::Here(engine) => call_here(&engine, route, payload, deadline).await?,
            Target::There(link) => call_there(&link, route, payload, deadline).await?,
        };
        T::decode(&reply)
    }

    /// Sends `route` a message without reply, on a node hosting its service.
    ///
    /// # Errors
    ///
    /// `NANO-404` when no node hosts the service, `NANO-503` when the message cannot be
    /// queued. A message queued can still be lost with its node.
    pub fn notify(&self, route: &str, value: &(impl Encode<S> + ?Sized)) -> Result<(), Error> {
        let payload = encode(value)?;
        match self.state.here_or_there(route)? {
            Target::Here(engine) => {
                run_here(&engine, route.to_owned(), payload, None);
                Ok(())
            }
            Target::There(link) => link
                .notify(proto::Notify {
                    route: route.to_owned(),
                    payload,
                    from_node: true,
                    ..Default::default()
                })
                .map_err(|e| e.into_error()),
        }
    }
}

enum Target<S> {
    Here(Engine<S>),
    There(NodeLink),
}

impl<S: Serializer> State<S> {
    fn here_or_there(&self, route: &str) -> Result<Target<S>, Error> {
        let engine = self
            .engine()
            .ok_or_else(|| Error::unavailable("node stopped"))?;
        let service = route.split_once('.').map_or(route, |(s, _)| s);
        if engine.hosts(service) {
            return Ok(Target::Here(engine));
        }
        let candidates = self.peers.hosting(service);
        if candidates.is_empty() {
            return Err(Error::not_found(format!("no node hosts {service}")));
        }
        let members: Vec<crate::Member> = candidates.iter().map(|p| p.member.clone()).collect();
        let cx = PickContext {
            session_id: 0,
            uid: None,
            service,
            route,
        };
        let i = self.picker.pick(&cx, &members) % candidates.len();
        Ok(Target::There(candidates[i].link.clone()))
    }

    fn node_target(&self, node: &str) -> Result<Target<S>, Error> {
        if node == &*self.id {
            return self
                .engine()
                .map(Target::Here)
                .ok_or_else(|| Error::unavailable("node stopped"));
        }
        self.peers
            .get(node)
            .map(|p| Target::There(p.link))
            .ok_or_else(|| Error::not_found(format!("no member {node}")))
    }
}

fn encode<S>(value: &(impl Encode<S> + ?Sized)) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    value.encode(&mut buf)?;
    Ok(buf.freeze())
}

async fn call_here<S: Serializer>(
    engine: &Engine<S>,
    route: &str,
    payload: Bytes,
    deadline: Duration,
) -> Result<Bytes, Error> {
    let (tx, rx) = oneshot::channel();
    let reply: Reply = Box::new(move |r| {
        let _ = tx.send(r);
    });
    run_here(engine, route.to_owned(), payload, Some(reply));
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::internal("the call was dropped without an answer")),
        Err(_) => Err(Error::deadline_exceeded(format!(
            "no answer within {deadline:?}"
        ))),
    }
}

async fn call_there(
    link: &NodeLink,
    route: &str,
    payload: Bytes,
    deadline: Duration,
) -> Result<Bytes, Error> {
    let started = tokio::time::Instant::now();
    if link.state() != crate::link::LinkState::Up {
        link.wait_up(deadline).await.map_err(|e| e.into_error())?;
    }
    let req = proto::Request {
        route: route.to_owned(),
        payload,
        from_node: true,
        ..Default::default()
    };
    link.request(req, deadline.saturating_sub(started.elapsed()))
        .await
        .map_err(|e| e.into_error())
}
