//! The engine: the route table, dispatch onto schedulers, and the application's lifecycle.
//!
//! Transports (nano-net, the in-memory [`testing`](crate::testing) harness) feed it decoded
//! messages; it runs the inbound pipeline, finds the handler, decodes the payload (off the
//! scheduler), and enqueues the call on the component's scheduler.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use crate::component::{BoxedPayload, Call, Responder};
use crate::pipeline::Envelope;
use crate::protocol::{Dictionary, Message, MessageError, MessageType};
use crate::scheduler::{JobFn, PendingScheduler, Scheduler};
use crate::session::lock;
use crate::shared::Shared;
use crate::{Component, Context, Error, Json, Link, Pipeline, Serializer, Session};

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

#[derive(Clone, Copy, Debug)]
enum Hook {
    Init,
    AfterInit,
    BeforeShutdown,
    Shutdown,
}

type MakeJob<S> = fn(usize, Session<S>, Option<u64>, BoxedPayload, OwnedSemaphorePermit) -> JobFn;
type Decoder = fn(usize, Bytes) -> Result<BoxedPayload, Error>;
type RunHook<S> = fn(Hook, &Scheduler, usize, &Arc<Shared<S>>) -> oneshot::Receiver<()>;

struct Registration<S> {
    name: Arc<str>,
    scheduler: usize,
    slot: usize,
    run_hook: RunHook<S>,
}

struct Route<S> {
    route: Arc<str>,
    scheduler: Scheduler,
    index: usize,
    component: usize,
    decode: Decoder,
    make_job: MakeJob<S>,
}

/// A registered component before the engine is built: where it lives, its route table, and
/// its monomorphized decode and job-making functions.
type Pending<S> = (
    Registration<S>,
    &'static [crate::HandlerInfo],
    Decoder,
    MakeJob<S>,
);

/// Collects components and settings, then builds an [`Engine`].
///
/// # Examples
///
/// ```
/// use nano_core::{EngineBuilder, Json};
///
/// let engine = EngineBuilder::<Json>::new()
///     .push_routes(["onMessage"])
///     .build()
///     .unwrap();
/// assert_eq!(engine.dictionary().code("onMessage"), Some(1));
/// ```
pub struct EngineBuilder<S = Json> {
    components: Vec<Pending<S>>,
    schedulers: Vec<PendingScheduler>,
    scheduler_names: HashMap<String, usize>,
    pipeline: Pipeline<S>,
    push_routes: Vec<String>,
    compress: bool,
    max_packet_size: usize,
    max_inflight: usize,
}

impl<S: Serializer> Default for EngineBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Serializer> EngineBuilder<S> {
    /// An empty builder.
    pub fn new() -> Self {
        EngineBuilder {
            components: Vec::new(),
            schedulers: Vec::new(),
            scheduler_names: HashMap::new(),
            pipeline: Pipeline::default(),
            push_routes: Vec::new(),
            compress: true,
            max_packet_size: crate::protocol::DEFAULT_MAX_PACKET_SIZE,
            max_inflight: 64,
        }
    }

    /// Registers a component on the shared default scheduler.
    #[must_use]
    pub fn component<C: Component<Serializer = S>>(self, component: C) -> Self {
        self.component_on(component, DEFAULT_SCHEDULER)
    }

    /// Registers a component on the scheduler named `scheduler` (created on first use).
    /// Components on different schedulers run in parallel; components on the same scheduler
    /// never run concurrently.
    #[must_use]
    pub fn component_on<C: Component<Serializer = S>>(self, component: C, scheduler: &str) -> Self {
        self.component_named(component, C::NAME, scheduler)
    }

    /// Registers a component under another name (its routes become `name.Handler`) on the
    /// scheduler named `scheduler`: several instances of one component type, e.g. one room per
    /// scheduler.
    #[must_use]
    pub fn component_named<C: Component<Serializer = S>>(
        mut self,
        component: C,
        name: &str,
        scheduler: &str,
    ) -> Self {
        let sched = match self.scheduler_names.get(scheduler) {
            Some(&i) => i,
            None => {
                self.schedulers.push(PendingScheduler::new(scheduler));
                let i = self.schedulers.len() - 1;
                self.scheduler_names.insert(scheduler.to_owned(), i);
                i
            }
        };
        let pending = &mut self.schedulers[sched];
        pending.slots.push(Box::new(component));
        let reg = Registration {
            name: name.into(),
            scheduler: sched,
            slot: pending.slots.len() - 1,
            run_hook: run_hook::<C>,
        };
        self.components
            .push((reg, C::HANDLERS, C::decode, make_job::<C>));
        self
    }

    /// The pipeline, to add interceptors.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline<S> {
        &mut self.pipeline
    }

    /// Adds push routes (event names) to the route dictionary so they are compressed too.
    #[must_use]
    pub fn push_routes<I: IntoIterator<Item = impl Into<String>>>(mut self, routes: I) -> Self {
        self.push_routes.extend(routes.into_iter().map(Into::into));
        self
    }

    /// Whether the handshake offers the route dictionary (default true). Without it, routes are
    /// always sent as strings.
    #[must_use]
    pub fn route_compression(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// The largest packet body accepted or sent (default 64 KiB).
    #[must_use]
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// How many messages of one session may wait on schedulers before its reader pauses
    /// (default 64).
    #[must_use]
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    /// Builds the engine; call [`Engine::start`] inside a tokio runtime to run it.
    ///
    /// # Errors
    ///
    /// [`BuildError::DuplicateRoute`] when two components declare the same route.
    pub fn build(self) -> Result<Engine<S>, BuildError> {
        let mut names: Vec<String> = self.push_routes.clone();
        let mut seen = std::collections::HashSet::new();
        for (reg, handlers, _, _) in &self.components {
            for h in handlers.iter() {
                let route = format!("{}.{}", reg.name, h.name);
                if !seen.insert(route.clone()) {
                    return Err(BuildError::DuplicateRoute(route));
                }
                names.push(route);
            }
        }
        if names.len() >= usize::from(u16::MAX) {
            return Err(BuildError::TooManyRoutes);
        }
        let dict = Arc::new(Dictionary::from_routes(&names));
        let shared = Arc::new(Shared {
            dict: self.compress.then(|| dict.clone()),
            max_packet_size: self.max_packet_size,
            pipeline: self.pipeline,
            closed_hooks: Mutex::new(Vec::new()),
            max_inflight: self.max_inflight,
        });
        let handles: Vec<Scheduler> = self.schedulers.iter().map(|p| p.handle.clone()).collect();
        let mut routes = Vec::new();
        let mut by_name = HashMap::new();
        let mut by_code = HashMap::new();
        let mut registrations = Vec::new();
        for (ci, (reg, handlers, decode, make_job)) in self.components.into_iter().enumerate() {
            for (index, h) in handlers.iter().enumerate() {
                let ri = routes.len();
                let route: Arc<str> = format!("{}.{}", reg.name, h.name).into();
                by_name.insert(route.clone(), ri);
                if let Some(code) = dict.code(&route) {
                    by_code.insert(code, ri);
                }
                routes.push(Route {
                    route,
                    scheduler: handles[reg.scheduler].clone(),
                    index,
                    component: ci,
                    decode,
                    make_job,
                });
            }
            registrations.push(reg);
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                dict,
                compress: self.compress,
                routes,
                by_name,
                by_code,
                registrations,
                handles,
                pending: Mutex::new(Some(self.schedulers)),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// A built application: route table, schedulers, sessions' shared state. Cheap to clone.
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
        let msg = Message::decode(body, Some(&self.inner.dict))?;
        self.dispatch(session, msg).await
    }

    /// Dispatches one decoded message from a client: pipeline, route lookup, payload decode,
    /// then the handler call is queued on its component's scheduler. Requests that fail before
    /// reaching the handler are answered with an error response here.
    ///
    /// Waits while the session has too many messages in flight (backpressure on its reader).
    ///
    /// # Errors
    ///
    /// [`DispatchError::NotFromClient`] for responses and pushes.
    pub async fn dispatch(&self, session: &Session<S>, msg: Message) -> Result<(), DispatchError> {
        let id = match msg.kind {
            MessageType::Request => Some(msg.id),
            MessageType::Notify => None,
            other => return Err(DispatchError::NotFromClient(other)),
        };
        let route_str = msg.route.as_deref().unwrap_or("");
        let inbound = &self.inner.shared.pipeline.inbound;
        if !inbound.is_empty() {
            let env = Envelope {
                kind: msg.kind,
                id: msg.id,
                route: Some(route_str),
                payload: &msg.payload,
            };
            if let Err(e) = inbound.run(session, &env) {
                tracing::debug!(session = session.id(), route = route_str, error = %e, "refused by pipeline");
                Self::fail(session, id, e);
                return Ok(());
            }
        }
        let found = match msg.route_code {
            Some(code) => self.inner.by_code.get(&code),
            None => self.inner.by_name.get(route_str),
        };
        let Some(route) = found.map(|&i| &self.inner.routes[i]) else {
            tracing::debug!(session = session.id(), route = route_str, "route not found");
            Self::fail(
                session,
                id,
                Error::not_found(format!("route not found: {route_str}")),
            );
            return Ok(());
        };
        let payload = match (route.decode)(route.index, msg.payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(session = session.id(), route = %route.route, error = %e, "undecodable payload");
                Self::fail(session, id, e);
                return Ok(());
            }
        };
        let permit = session
            .inflight()
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DispatchError::NotFromClient(MessageType::Request));
        let Ok(permit) = permit else {
            return Ok(());
        };
        let job = (route.make_job)(route.index, session.clone(), id, payload, permit);
        let slot = self.inner.registrations[route.component].slot;
        if !route.scheduler.enqueue(slot, job) {
            Self::fail(session, id, Error::unavailable("server is shutting down"));
        }
        Ok(())
    }

    fn fail(session: &Session<S>, id: Option<u64>, err: Error) {
        if let Some(id) = id {
            session.respond(id, Err(err));
        }
    }
}

fn run_hook<C: Component>(
    hook: Hook,
    scheduler: &Scheduler,
    slot: usize,
    shared: &Arc<Shared<C::Serializer>>,
) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    let ctx = Context::<C> {
        scheduler: scheduler.clone(),
        slot,
        shared: shared.clone(),
        _component: PhantomData,
    };
    let job: JobFn = Box::new(move |state| {
        if let Some(c) = state.downcast_mut::<C>() {
            match hook {
                Hook::Init => c.init(&ctx),
                Hook::AfterInit => c.after_init(&ctx),
                Hook::BeforeShutdown => c.before_shutdown(&ctx),
                Hook::Shutdown => c.shutdown(&ctx),
            }
        }
        let _ = tx.send(());
        None
    });
    if !scheduler.enqueue(slot, job) {
        tracing::debug!(component = C::NAME, ?hook, "scheduler stopped before hook");
    }
    rx
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

fn handler_panicked<S: Serializer>(
    session: &Session<S>,
    id: Option<u64>,
    component: &str,
    index: usize,
    panic: &(dyn std::any::Any + Send),
) {
    let msg = panic_message(panic);
    tracing::error!(
        component,
        handler = index,
        session = session.id(),
        panic = msg,
        "handler panicked"
    );
    if let Some(id) = id {
        session.respond(id, Err(Error::internal("handler panicked")));
    }
}

fn make_job<C: Component>(
    index: usize,
    session: Session<C::Serializer>,
    id: Option<u64>,
    payload: BoxedPayload,
    permit: OwnedSemaphorePermit,
) -> JobFn {
    let is_async = C::HANDLERS.get(index).is_some_and(|h| h.is_async);
    if is_async {
        Box::new(move |state| {
            let c = state.downcast_mut::<C>()?;
            Some(Box::pin(async move {
                let _permit = permit;
                let run = async {
                    let reply = Responder {
                        session: &session,
                        id,
                    };
                    if let Call::Pending(f) = c.call(index, &session, payload, reply) {
                        f.await;
                    }
                };
                if let Err(p) = AssertUnwindSafe(run).catch_unwind().await {
                    handler_panicked(&session, id, C::NAME, index, p.as_ref());
                }
            }))
        })
    } else {
        Box::new(move |state| {
            let _permit = permit;
            let c = state.downcast_mut::<C>()?;
            let reply = Responder {
                session: &session,
                id,
            };
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                matches!(c.call(index, &session, payload, reply), Call::Done)
            }));
            match r {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        component = C::NAME,
                        handler = index,
                        "sync handler returned a future"
                    );
                    if let Some(id) = id {
                        session.respond(id, Err(Error::internal("handler kind mismatch")));
                    }
                }
                Err(p) => handler_panicked(&session, id, C::NAME, index, p.as_ref()),
            }
            None
        })
    }
}
