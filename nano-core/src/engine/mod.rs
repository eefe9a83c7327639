//! The engine: the route table, dispatch onto schedulers, and the application's lifecycle.
//!
//! Transports (nano-net, the in-memory [`testing`](crate::testing) harness) feed it decoded
//! messages; it runs the inbound pipeline, finds the handler, decodes the payload (off the
//! scheduler), and enqueues the call on the component's scheduler.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::component::BoxedPayload;
use crate::extension::Extension;
use crate::pipeline::{panic_message, Envelope};
use crate::protocol::{Dictionary, Message, MessageError, MessageType};
use crate::scheduler::{Lane, PendingScheduler, Scheduler};
use crate::session::{lock, InFlight};
use crate::shared::Shared;
use crate::{Error, Json, Link, OverLimit, RateLimit, Serializer, Session};

mod builder;
mod job;

pub use builder::EngineBuilder;
use job::{Hook, MakeJob};

/// The name of the scheduler components share unless told otherwise.
pub const DEFAULT_SCHEDULER: &str = "logic";

/// A message the protocol does not allow; the transport closes that one connection.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The message layer could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(#[from] MessageError),
    /// Clients may send only requests and notifies.
    #[error("clients may not send {0:?} messages")]
    NotFromClient(MessageType),
}

/// Where a message comes from, for the routes only some callers may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client (directly, or forwarded by a cluster gate): internal routes do not exist for
    /// it (`NANO-404`).
    Client,
    /// Another node of the cluster: every route, internal ones included.
    Node,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two components declare the same route.
    #[error("route {0} is declared twice")]
    DuplicateRoute(String),
    /// More routes than a u16 dictionary code can name.
    #[error("too many routes for the route dictionary")]
    TooManyRoutes,
}

/// A message that passed every check before its handler call: what queueing the call needs.
struct Ready {
    /// Index into the route table.
    route: usize,
    /// The request's id (`None`: a notify).
    id: Option<u64>,
    payload: BoxedPayload,
}

pub(crate) type Decoder = fn(usize, Bytes) -> Result<BoxedPayload, Error>;
pub(crate) type RunHook<S> = fn(Hook, &Scheduler, usize, &Arc<Shared<S>>) -> oneshot::Receiver<()>;

pub(crate) struct Registration<S> {
    pub(crate) name: Arc<str>,
    scheduler: usize,
    slot: usize,
    run_hook: RunHook<S>,
    /// The pushes it declares, and its payload schemas (the API description).
    pushes: &'static [crate::api::PushInfo],
    schemas: fn(&mut schemars::SchemaGenerator) -> crate::api::ComponentSchemas,
}

pub(crate) struct Route<S> {
    /// The handler's entry in its component's route table.
    info: &'static crate::HandlerInfo,
    route: Arc<str>,
    /// Callable by other cluster nodes only (`#[handler(internal)]`).
    internal: bool,
    scheduler: Scheduler,
    index: usize,
    component: usize,
    decode: Decoder,
    make_job: MakeJob<S>,
}

/// A built application: route table, schedulers, sessions' shared state. Cheap to clone.
///
/// Call [`Engine::shutdown`] to stop it with its lifecycle hooks. Dropping the last handle
/// without it still stops the schedulers (after the jobs already queued, without hooks) and
/// drops the components: nothing keeps running for an engine nobody holds.
pub struct Engine<S = Json> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    shared: Arc<Shared<S>>,
    dict: Arc<Dictionary>,
    compress: bool,
    routes: Vec<Route<S>>,
    by_name: HashMap<Arc<str>, usize>,
    by_code: HashMap<u16, usize>,
    registrations: Vec<Registration<S>>,
    handles: Vec<Scheduler>,
    pending: Mutex<Option<Vec<PendingScheduler>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The per-session message rate limit (`None`: off).
    rate_limit: Option<RateLimit>,
    /// Add-ons (a cluster): offered the messages no local route serves.
    extensions: Vec<Arc<dyn Extension<S>>>,
}

/// One handler of the route table ([`Engine::route_table`]).
#[derive(Debug, Clone, Copy)]
pub struct RouteEntry<'a> {
    /// The component (service) name.
    pub component: &'a str,
    /// The scheduler the component runs on.
    pub scheduler: &'a str,
    /// The handler: route, payload and response types, kind.
    pub handler: &'static crate::HandlerInfo,
}

/// A handle on an [`Engine`] that does not keep it alive: what an [`Extension`] keeps.
pub struct WeakEngine<S = Json> {
    inner: Weak<Inner<S>>,
}

impl<S> Clone for WeakEngine<S> {
    fn clone(&self) -> Self {
        WeakEngine {
            inner: self.inner.clone(),
        }
    }
}

impl<S> WeakEngine<S> {
    /// The engine, unless every [`Engine`] handle is gone.
    pub fn upgrade(&self) -> Option<Engine<S>> {
        self.inner.upgrade().map(|inner| Engine { inner })
    }
}

/// The last handle on an engine gone without [`Engine::shutdown`]: its schedulers stop (after
/// the jobs already queued) rather than run forever, and drop their components. No hooks run.
impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        for h in &self.handles {
            h.stop();
        }
    }
}

impl<S: Serializer> Engine<S> {
    /// Starts the schedulers and runs `init` on every component, then `after_init` on every
    /// component, in registration order. Calling it twice does nothing the second time.
    pub async fn start(&self) {
        let Some(pending) = lock(&self.inner.pending).take() else {
            return;
        };
        {
            let mut tasks = lock(&self.inner.tasks);
            for p in pending {
                tasks.push(p.start());
            }
        }
        self.run_hooks(Hook::Init, false).await;
        self.run_hooks(Hook::AfterInit, false).await;
    }

    /// Runs `before_shutdown` on every component, in reverse registration order.
    pub async fn before_shutdown(&self) {
        self.run_hooks(Hook::BeforeShutdown, true).await;
    }

    /// Runs `shutdown` on every component in reverse registration order, then stops the
    /// schedulers after the work already queued, and waits for them.
    pub async fn shutdown(&self) {
        self.run_hooks(Hook::Shutdown, true).await;
        for h in &self.inner.handles {
            h.stop();
        }
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn run_hooks(&self, hook: Hook, reverse: bool) {
        let mut regs: Vec<&Registration<S>> = self.inner.registrations.iter().collect();
        if reverse {
            regs.reverse();
        }
        for reg in regs {
            let done = (reg.run_hook)(
                hook,
                &self.inner.handles[reg.scheduler],
                reg.slot,
                &self.inner.shared,
            );
            if done.await.is_err() {
                tracing::error!(component = %reg.name, ?hook, "lifecycle hook failed");
            }
        }
    }

    /// Opens a session for a new connection whose outbound packets go to `link`.
    pub fn open_session(&self, link: Arc<dyn Link>) -> Session<S> {
        Session::new(link, self.inner.shared.clone())
    }

    /// Opens a session with an id chosen by the caller: a cluster backend's stand-in for a
    /// session some gate holds, under the gate's id. The caller keeps ids unique.
    pub fn open_session_with_id(&self, id: u64, link: Arc<dyn Link>) -> Session<S> {
        Session::with_id(id, link, self.inner.shared.clone())
    }

    /// Registers a callback run on the closing thread whenever a session closes, for whatever
    /// reason, after it left its groups. It must not block. (Components use
    /// [`Context::on_session_closed`](crate::Context::on_session_closed), which runs on their
    /// scheduler.)
    pub fn on_session_closed(&self, hook: impl Fn(&Session<S>) + Send + Sync + 'static) {
        lock(&self.inner.shared.closed_hooks).push(Arc::new(hook));
    }

    /// Registers a callback run on the binding thread whenever a uid is bound to a session
    /// ([`Session::bind`]), after it is set. It must not block. A cluster gate enforces its
    /// multi-login policy with it.
    pub fn on_session_bound(&self, hook: impl Fn(&Session<S>, &str) + Send + Sync + 'static) {
        lock(&self.inner.shared.bound_hooks).push(Arc::new(hook));
    }

    /// Registers a callback run whenever a session is suspended: its connection dropped and,
    /// the application resuming sessions, it waits for its client to come back (see
    /// [`Session::suspend`]). It must not block. (Components use
    /// [`Context::on_session_suspended`](crate::Context::on_session_suspended).)
    pub fn on_session_suspended(&self, hook: impl Fn(&Session<S>) + Send + Sync + 'static) {
        lock(&self.inner.shared.suspended_hooks).push(Arc::new(hook));
    }

    /// Registers a callback run whenever a suspended session's client came back on a new
    /// connection ([`Session::resume`]). It must not block.
    pub fn on_session_resumed(&self, hook: impl Fn(&Session<S>) + Send + Sync + 'static) {
        lock(&self.inner.shared.resumed_hooks).push(Arc::new(hook));
    }

    /// A handle that does not keep the engine alive.
    pub fn downgrade(&self) -> WeakEngine<S> {
        WeakEngine {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The extensions, in registration order.
    pub fn extensions(&self) -> &[Arc<dyn Extension<S>>] {
        &self.inner.extensions
    }

    /// The names of the services (components) this engine hosts, in registration order.
    pub fn hosts(&self, service: &str) -> bool {
        self.inner.registrations.iter().any(|r| &*r.name == service)
    }

    /// The route dictionary: every handler route and push route, with codes stable for the
    /// same set of routes.
    pub fn dictionary(&self) -> &Dictionary {
        &self.inner.dict
    }

    /// Every handler route, in registration order.
    pub fn routes(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.routes.iter().map(|r| &*r.route)
    }

    /// The component names, in registration order.
    pub fn components(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.registrations.iter().map(|r| &*r.name)
    }

    /// The route table: every handler with its component and scheduler, in registration
    /// order.
    pub fn route_table(&self) -> impl Iterator<Item = RouteEntry<'_>> + '_ {
        self.inner.routes.iter().map(|r| RouteEntry {
            component: &self.inner.registrations[r.component].name,
            scheduler: r.scheduler.name(),
            handler: r.info,
        })
    }

    /// The API clients see: every route they may call with its kind, code and payload types,
    /// every declared push, and the payload schemas (see [`crate::api`]).
    pub fn api(&self) -> crate::api::Api {
        use crate::api::{PushApi, RouteApi, TypeApi};
        let mut gen = schemars::SchemaGenerator::default();
        let mut schemas: Vec<crate::api::ComponentSchemas> = self
            .inner
            .registrations
            .iter()
            .map(|r| (r.schemas)(&mut gen))
            .collect();
        if S::NAME != <crate::Protobuf as Serializer>::NAME {
            // Message names mean nothing to other serializers (prost names `String` and the
            // numbers as wrapper messages).
            for s in &mut schemas {
                for t in s
                    .requests
                    .iter_mut()
                    .chain(&mut s.responses)
                    .chain(&mut s.pushes)
                {
                    t.message = None;
                }
            }
        }
        let dict = &self.inner.dict;
        let mut routes = Vec::new();
        for r in self.inner.routes.iter().filter(|r| !r.internal) {
            let reg = &self.inner.registrations[r.component];
            let h = r.info;
            let s = &mut schemas[r.component];
            let take = |v: &mut Vec<crate::api::TypeInfo>| {
                v.get_mut(r.index).map(std::mem::take).unwrap_or_default()
            };
            let request = take(&mut s.requests);
            let response = take(&mut s.responses);
            routes.push(RouteApi {
                route: r.route.to_string(),
                component: reg.name.to_string(),
                handler: h.name.to_owned(),
                kind: h.kind(),
                code: dict.code(&r.route),
                request: h
                    .has_payload
                    .then(|| TypeApi::new(h.payload_type, h.raw_payload, request)),
                response: TypeApi::new(h.response_type, h.raw_response, response),
            });
        }
        let mut pushes = Vec::new();
        for (reg, s) in self.inner.registrations.iter().zip(&mut schemas) {
            for (i, p) in reg.pushes.iter().enumerate() {
                pushes.push(PushApi {
                    route: p.route.to_owned(),
                    component: reg.name.to_string(),
                    code: dict.code(p.route),
                    payload: TypeApi::new(
                        p.payload_type,
                        false,
                        s.pushes.get_mut(i).map(std::mem::take).unwrap_or_default(),
                    ),
                });
            }
        }
        crate::api::Api {
            serializer: S::NAME,
            routes,
            pushes,
            definitions: gen.take_definitions(true),
        }
    }

    /// Each scheduler's name and the number of jobs waiting in its queue now.
    pub fn scheduler_queues(&self) -> Vec<(String, usize)> {
        self.inner
            .handles
            .iter()
            .map(|h| (h.name().to_owned(), h.queued()))
            .collect()
    }

    /// The metrics, when they are on ([`EngineBuilder::metrics`]).
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.inner.shared.metrics.as_ref()
    }

    /// Every metric family in the Prometheus (OpenMetrics) text format, with the gauges read
    /// now (scheduler queues, groups); `None` when the metrics are off.
    pub fn render_metrics(&self) -> Option<String> {
        let metrics = self.metrics()?;
        metrics.refresh(&self.scheduler_queues());
        Some(metrics.render())
    }

    /// The largest packet body accepted or sent.
    pub fn max_packet_size(&self) -> usize {
        self.inner.shared.max_packet_size
    }

    /// The `sys` fields of the handshake response that come from the application: `dict`
    /// (when route compression is on) and `serializer`. The transport adds `heartbeat`.
    pub fn handshake_sys(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut sys = serde_json::Map::new();
        if self.inner.compress && !self.inner.dict.is_empty() {
            sys.insert("dict".into(), self.inner.dict.to_json());
        }
        sys.insert("serializer".into(), S::NAME.into());
        sys
    }

    /// Decodes the body of a data packet and dispatches it.
    ///
    /// # Errors
    ///
    /// A [`DispatchError`] when the message is malformed or not one a client may send; the
    /// caller should close the connection.
    pub async fn handle_data(
        &self,
        session: &Session<S>,
        body: Bytes,
    ) -> Result<(), DispatchError> {
        let mut msg = Message::decode(body, Some(&self.inner.dict))?;
        session.note_route_code(&mut msg.route_code, &self.inner.dict);
        self.dispatch(session, msg).await
    }

    /// Dispatches one decoded message from a client: rate limit, pipeline, route lookup,
    /// payload decode, then the handler call is queued on its component's scheduler. Requests
    /// that fail before reaching the handler are answered with an error response here: over the
    /// rate limit `NANO-429`, and `NANO-500` when an inbound interceptor or the payload's
    /// decoder panics (the panic is caught and logged; the connection keeps serving).
    ///
    /// Waits while the session has too many messages in flight (backpressure on its reader).
    ///
    /// # Errors
    ///
    /// [`DispatchError::NotFromClient`] for responses and pushes.
    pub async fn dispatch(&self, session: &Session<S>, msg: Message) -> Result<(), DispatchError> {
        let Some(ready) = self.prepare(session, msg, Origin::Client)? else {
            return Ok(());
        };
        // The usual case takes a free permit at once. Waiting for one is rare (a session with
        // `max_inflight` messages queued), so its future is boxed: this future is part of every
        // connection's task and must stay small.
        let message = match session.try_in_flight() {
            Some(m) => m,
            None => Box::pin(session.in_flight()).await,
        };
        self.enqueue(session, ready, message);
        Ok(())
    }

    /// Like [`dispatch`](Self::dispatch), without waiting: for callers that must not block
    /// (a cluster link's reader). When the session has too many messages in flight, the call
    /// waits on a task of its own; messages that waited may then run after later ones.
    /// `origin` says whether internal routes exist for the message (see [`Origin`]).
    ///
    /// # Errors
    ///
    /// As [`dispatch`](Self::dispatch).
    pub fn dispatch_detached(
        &self,
        session: &Session<S>,
        msg: Message,
        origin: Origin,
    ) -> Result<(), DispatchError> {
        let Some(ready) = self.prepare(session, msg, origin)? else {
            return Ok(());
        };
        if let Some(message) = session.try_in_flight() {
            self.enqueue(session, ready, message);
            return Ok(());
        }
        let engine = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let message = session.in_flight().await;
            engine.enqueue(&session, ready, message);
        });
        Ok(())
    }

    /// Everything dispatch does before the handler call is queued, all of it synchronous: rate
    /// limit, pipeline, route lookup, payload decode. `None` when the message was answered (or,
    /// a notify, dropped) here.
    fn prepare(
        &self,
        session: &Session<S>,
        msg: Message,
        origin: Origin,
    ) -> Result<Option<Ready>, DispatchError> {
        let id = match msg.kind {
            MessageType::Request => {
                session.note_message_id(msg.id);
                Some(msg.id)
            }
            MessageType::Notify => None,
            other => return Err(DispatchError::NotFromClient(other)),
        };
        let route_str = msg.route.as_deref().unwrap_or("");
        // Rate limits and inbound interceptors guard against clients, not the server's own
        // calls.
        let from_client = origin == Origin::Client;
        if let (Some(limit), true) = (&self.inner.rate_limit, from_client) {
            if !Self::admit(session, limit, id, route_str) {
                return Ok(None);
            }
        }
        let inbound = &self.inner.shared.pipeline.inbound;
        if from_client && !inbound.is_empty() {
            let env = Envelope {
                kind: msg.kind,
                id: msg.id,
                route: Some(route_str),
                payload: &msg.payload,
            };
            if let Err(e) = inbound.run(session, &env) {
                tracing::debug!(session = session.id(), route = route_str, error = %e, "refused by pipeline");
                Self::fail(session, id, e);
                return Ok(None);
            }
        }
        let found = match msg.route_code {
            Some(code) => self.inner.by_code.get(&code),
            None => self.inner.by_name.get(route_str),
        }
        // An internal route does not exist for clients.
        .filter(|&&i| origin == Origin::Node || !self.inner.routes[i].internal);
        let Some(&index) = found else {
            let msg = match self.offer_extensions(session, msg, origin) {
                Ok(()) => return Ok(None),
                Err(msg) => msg,
            };
            let route_str = msg.route.as_deref().unwrap_or("");
            tracing::debug!(session = session.id(), route = route_str, "route not found");
            Self::fail(
                session,
                id,
                Error::not_found(format!("route not found: {route_str}")),
            );
            return Ok(None);
        };
        let route = &self.inner.routes[index];
        // The payload type's decoder is user code (`Deserialize`, prost): a panic in it is
        // caught like a handler's.
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (route.decode)(route.index, msg.payload)
        }));
        let payload = match decoded {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(session = session.id(), route = %route.route, error = %e, "undecodable payload");
                Self::fail(session, id, e);
                return Ok(None);
            }
            Err(p) => {
                tracing::error!(
                    session = session.id(),
                    route = %route.route,
                    panic = panic_message(p.as_ref()),
                    "payload decoder panicked"
                );
                Self::fail(session, id, Error::internal("payload decoder panicked"));
                return Ok(None);
            }
        };
        Ok(Some(Ready {
            route: index,
            id,
            payload,
        }))
    }

    /// Offers a message no local route serves to each extension in turn; hands it back when
    /// none took it. A panic in an extension is caught: the message counts as taken and a
    /// request is answered `NANO-500`.
    fn offer_extensions(
        &self,
        session: &Session<S>,
        mut msg: Message,
        origin: Origin,
    ) -> Result<(), Message> {
        for ext in &self.inner.extensions {
            let id = (msg.kind == MessageType::Request).then_some(msg.id);
            match std::panic::catch_unwind(AssertUnwindSafe(|| ext.forward(session, msg, origin))) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(back)) => msg = back,
                Err(p) => {
                    tracing::error!(
                        session = session.id(),
                        panic = panic_message(p.as_ref()),
                        "extension panicked forwarding a message"
                    );
                    Self::fail(session, id, Error::internal("extension panicked"));
                    return Ok(());
                }
            }
        }
        Err(msg)
    }

    /// Queues a prepared handler call on its component's scheduler.
    fn enqueue(&self, session: &Session<S>, ready: Ready, mut message: InFlight<S>) {
        let Ready { route, id, payload } = ready;
        if self.inner.shared.metrics.is_some() {
            message.observe(route, id.is_some());
        }
        let route = &self.inner.routes[route];
        let slot = self.inner.registrations[route.component].slot;
        let job = (route.make_job)(route.index, message, id, payload, &route.scheduler, slot);
        if !route
            .scheduler
            .enqueue(Lane::session(session.id()), slot, job)
        {
            Self::fail(session, id, Error::unavailable("server is shutting down"));
        }
    }

    /// Takes a token from the session's bucket; over the limit, refuses the message (answers a
    /// request with `NANO-429`, drops a notify) and kicks the session when the limit says so.
    fn admit(session: &Session<S>, limit: &RateLimit, id: Option<u64>, route: &str) -> bool {
        let bucket = session.rate_bucket();
        if bucket.try_take(limit) {
            return true;
        }
        if let Some(m) = &session.shared_arc().metrics {
            m.rate_limited();
        }
        if let Some(refused) = bucket.refused() {
            tracing::warn!(
                session = session.id(),
                route,
                refused,
                action = ?limit.exceeded(),
                "session over its message rate limit"
            );
        } else {
            tracing::trace!(
                session = session.id(),
                route,
                "over the rate limit: refused"
            );
        }
        Self::fail(session, id, Error::too_many_requests("too many requests"));
        if limit.exceeded() == OverLimit::Kick {
            session.kick_with_reason(Some("rate limit"));
        }
        false
    }

    fn fail(session: &Session<S>, id: Option<u64>, err: Error) {
        if let Some(m) = &session.shared_arc().metrics {
            m.refused(err.code());
        }
        if let Some(id) = id {
            session.respond(id, Err(err));
        }
    }
}

#[cfg(test)]
mod tests;
