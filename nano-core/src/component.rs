//! Components: bundles of handlers, and what `#[component]` generates for them.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::scheduler::{Lane, Scheduler, TimerId};
use crate::session::{lock, InFlight};
use crate::shared::Shared;
use crate::{Error, Serializer, Session};

/// How a handler was declared; the route table's metadata for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The handler part of the route (`Join`).
    pub name: &'static str,
    /// The whole route (`Room.Join`).
    pub route: &'static str,
    /// Whether the handler takes a payload argument.
    pub has_payload: bool,
    /// Whether the payload is raw bytes (no serializer).
    pub raw_payload: bool,
    /// Whether the handler is an `async fn`.
    pub is_async: bool,
    /// Whether the handler takes a `&Context<Self>` argument.
    pub takes_context: bool,
    /// Whether the handler answers through a [`Responder`](crate::Responder) argument.
    pub deferred: bool,
    /// Whether only other cluster nodes may call it (`#[handler(internal)]`): a client gets
    /// `NANO-404`, as if the route did not exist.
    pub internal: bool,
    /// The payload argument's type as written (`JoinRequest`, `Bytes`); empty without one.
    pub payload_type: &'static str,
    /// The type a request is answered with (`R` of `Result<R>` or of `Responder<R>`, `()` for an
    /// empty answer).
    pub response_type: &'static str,
}

impl HandlerInfo {
    /// How the handler answers: `"sync"` (returns its answer), `"async"` (an `async fn`) or
    /// `"deferred"` (through a [`Responder`](crate::Responder)). Every handler can be called
    /// by a request or a notify.
    pub fn kind(&self) -> &'static str {
        if self.deferred {
            "deferred"
        } else if self.is_async {
            "async"
        } else {
            "sync"
        }
    }
}

/// A decoded payload on its way to the scheduler.
pub type BoxedPayload = Box<dyn Any + Send>;

/// What a handler stub returns: done, or a future the scheduler drives to completion before it
/// runs anything else: any job of any component on the same scheduler waits for it.
pub enum Call<'a> {
    /// The handler ran and its reply (if any) was sent.
    Done,
    /// An `async fn` handler; polling it runs the handler and sends the reply.
    Pending(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
}

/// Where a handler's result goes: the requesting message (its session and in-flight permit)
/// and the request id (`None` for a notify, whose result is only traced).
pub struct ReplyTo<'a, S> {
    pub(crate) message: &'a InFlight<S>,
    pub(crate) id: Option<u64>,
}

impl<S> ReplyTo<'_, S> {
    /// The requesting session.
    pub(crate) fn session(&self) -> &Session<S> {
        self.message.session()
    }
}

/// A component: state plus handlers, all run on one scheduler, one at a time.
///
/// Implemented by `#[component]`; implementing it by hand is possible but not the intended use.
/// The lifecycle hooks are called in nano's order: `init` on every component, then `after_init`
/// on every component; at shutdown `before_shutdown` and then `shutdown`, in reverse
/// registration order.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a nano component",
    label = "not a component",
    note = "add `#[component]` to an `impl {Self}` block that declares its handlers"
)]
pub trait Component: Send + Sized + 'static {
    /// The serializer of the application this component belongs to (from its handlers'
    /// `&Session<S>` argument; [`Json`](crate::Json) by default).
    type Serializer: Serializer;

    /// The component's name, the first part of its routes.
    const NAME: &'static str;

    /// The route table, in declaration order; indexes are handler indexes.
    const HANDLERS: &'static [HandlerInfo];

    /// Decodes the payload for handler `index` (runs off the scheduler).
    ///
    /// # Errors
    ///
    /// `NANO-400` when the payload is undecodable.
    fn decode(index: usize, payload: Bytes) -> Result<BoxedPayload, Error>;

    /// Calls handler `index` with a payload produced by [`Component::decode`], and sends its
    /// reply through `reply`. `ctx` is the component's context when the handler takes one
    /// ([`HandlerInfo::takes_context`]).
    fn call<'a>(
        &'a mut self,
        index: usize,
        session: &'a Session<Self::Serializer>,
        payload: BoxedPayload,
        ctx: Option<&'a Context<Self>>,
        reply: ReplyTo<'a, Self::Serializer>,
    ) -> Call<'a>;

    /// Called once on every component before any `after_init`.
    fn init(&mut self, _ctx: &Context<Self>) {}
    /// Called once on every component after every `init`.
    fn after_init(&mut self, _ctx: &Context<Self>) {}
    /// Called at shutdown, before sessions are closed.
    fn before_shutdown(&mut self, _ctx: &Context<Self>) {}
    /// Called at shutdown, last.
    fn shutdown(&mut self, _ctx: &Context<Self>) {}
}

/// A component's handle on its scheduler: timers, async work, session-closed callbacks.
///
/// Passed to the lifecycle hooks, and to every handler that takes a `ctx: &Context<Self>`
/// argument (so a component need not store it); it can also be cloned and kept.
/// Every callback gets `&mut` access to the component and runs on its scheduler, never
/// concurrently with the component's handlers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_core::{component::Context, Session};
/// # use nano_core::{component::*, Error};
///
/// struct Clock { ticks: u32, ctx: Option<Context<Clock>> }
///
/// impl Clock {
///     fn start(&mut self, ctx: &Context<Self>) {
///         ctx.every(Duration::from_secs(1), |clock| clock.ticks += 1);
///         ctx.on_session_closed(|_clock, session: &Session| {
///             tracing::info!(id = session.id(), "left");
///         });
///         self.ctx = Some(ctx.clone());
///     }
/// }
/// # impl Component for Clock {
/// #     type Serializer = nano_core::Json;
/// #     const NAME: &'static str = "Clock";
/// #     const HANDLERS: &'static [HandlerInfo] = &[];
/// #     fn decode(_: usize, _: bytes::Bytes) -> Result<BoxedPayload, Error> { Err(Error::not_found("")) }
/// #     fn call<'a>(&'a mut self, _: usize, _: &'a Session, _: BoxedPayload, _: Option<&'a Context<Self>>, _: ReplyTo<'a, nano_core::Json>) -> Call<'a> { Call::Done }
/// #     fn init(&mut self, ctx: &Context<Self>) { self.start(ctx) }
/// # }
/// ```
pub struct Context<C: Component> {
    pub(crate) scheduler: Scheduler,
    pub(crate) slot: usize,
    pub(crate) shared: Arc<Shared<C::Serializer>>,
    pub(crate) _component: PhantomData<fn() -> C>,
}

impl<C: Component> Clone for Context<C> {
    fn clone(&self) -> Self {
        Context {
            scheduler: self.scheduler.clone(),
            slot: self.slot,
            shared: self.shared.clone(),
            _component: PhantomData,
        }
    }
}

impl<C: Component> std::fmt::Debug for Context<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("component", &C::NAME)
            .field("scheduler", &self.scheduler.name())
            .finish()
    }
}

/// Runs `f` on a component slot (downcast is a type-id compare).
fn on_slot<C: Component>(f: impl FnOnce(&mut C)) -> impl FnOnce(&mut (dyn Any + Send)) {
    move |state| match state.downcast_mut::<C>() {
        Some(c) => f(c),
        None => tracing::error!(component = C::NAME, "scheduler slot holds another type"),
    }
}

impl<C: Component> Context<C> {
    /// The scheduler this component runs on.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Runs `f` on the component's scheduler, after the work already queued (go-nano's
    /// `scheduler.Run`).
    ///
    /// These jobs share one lane of the scheduler (see [`Scheduler`]): they run in the order
    /// they were submitted, taking turns with the sessions' messages.
    pub fn run(&self, f: impl FnOnce(&mut C) + Send + 'static) {
        self.run_in(Lane::WORK, f);
    }

    fn run_in(&self, lane: Lane, f: impl FnOnce(&mut C) + Send + 'static) {
        let f = on_slot::<C>(f);
        let job = crate::scheduler::Job::Sync(Box::new(move |state| f(state)));
        if !self.scheduler.enqueue(lane, self.slot, job) {
            tracing::debug!(component = C::NAME, "scheduler stopped; job dropped");
        }
    }

    /// Runs `f` on the component's scheduler like [`run`](Self::run) and returns its result
    /// (go-nano's `scheduler.Run` with a reply): for tasks off the scheduler (a spawned
    /// future, another scheduler's async handler) that need the component's state.
    ///
    /// # Errors
    ///
    /// - `NANO-500` at once, without queuing `f`, when awaited from an `async fn` handler that
    ///   holds this same scheduler: the scheduler runs nothing else until that handler returns,
    ///   so the call could never complete (a deadlock). Use a sync handler, a deferred
    ///   [`Responder`](crate::Responder), or [`spawn`](Self::spawn) instead.
    /// - `NANO-503` when the scheduler stopped before `f` ran, or `f` panicked.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C) -> R + Send + 'static,
    ) -> Result<R, Error> {
        if self.scheduler.is_held_here() {
            tracing::error!(
                component = C::NAME,
                scheduler = self.scheduler.name(),
                "an async handler awaited Context::call on its own scheduler"
            );
            return Err(Error::internal(format!(
                "deadlock: Context::call awaited on scheduler `{}` by an async handler that \
                 holds it; the scheduler runs nothing else until that handler returns",
                self.scheduler.name()
            )));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run(move |c| {
            let _ = tx.send(f(c));
        });
        rx.await.map_err(|_| {
            Error::unavailable("the call did not run: scheduler stopped or the callback panicked")
        })
    }

    /// Calls `f` once after `delay`.
    pub fn after(&self, delay: Duration, f: impl FnOnce(&mut C) + Send + 'static) -> TimerId {
        let mut f = Some(f);
        self.scheduler.add_timer(
            self.slot,
            delay,
            None,
            Box::new(move |state| {
                if let (Some(c), Some(f)) = (state.downcast_mut::<C>(), f.take()) {
                    f(c);
                }
            }),
        )
    }

    /// Calls `f` every `period`, first after one period, until cancelled.
    pub fn every(&self, period: Duration, mut f: impl FnMut(&mut C) + Send + 'static) -> TimerId {
        self.scheduler.add_timer(
            self.slot,
            period,
            Some(period),
            Box::new(move |state| {
                if let Some(c) = state.downcast_mut::<C>() {
                    f(c);
                }
            }),
        )
    }

    /// Cancels a timer; a cancelled timer never fires again, even when it has expired and its
    /// callback is already queued behind other work: the callback is skipped. (A callback
    /// already running on another thread — cancel called from off the scheduler — finishes.)
    /// Cancelling twice, or a timer that has fired, is harmless.
    pub fn cancel(&self, id: TimerId) {
        self.scheduler.cancel_timer(id);
    }

    /// Runs `work` on the tokio runtime, off the scheduler, then calls `then` with its output
    /// on the scheduler with `&mut` access to the component (the seed's "asynchronous task").
    pub fn spawn<F>(&self, work: F, then: impl FnOnce(&mut C, F::Output) + Send + 'static)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let ctx = self.clone();
        tokio::spawn(async move {
            let out = work.await;
            ctx.run(move |c| then(c, out));
        });
    }

    /// Registers a callback run (on this component's scheduler) whenever a session closes,
    /// for whatever reason (go-nano's `session.Lifetime.OnClosed`). It runs in the session's
    /// lane, after the session's messages already queued.
    pub fn on_session_closed(
        &self,
        f: impl Fn(&mut C, &Session<C::Serializer>) + Send + Sync + 'static,
    ) {
        lock(&self.shared.closed_hooks).push(self.session_hook(f));
    }

    /// Registers a callback run (on this component's scheduler, in the session's lane)
    /// whenever a session is suspended: its connection dropped and it waits, for the
    /// application's grace period, for its client to resume it. It keeps its uid, data and
    /// groups meanwhile; pushes to it are kept for the client. A session that is not resumed
    /// in time closes ([`on_session_closed`](Self::on_session_closed) runs then).
    pub fn on_session_suspended(
        &self,
        f: impl Fn(&mut C, &Session<C::Serializer>) + Send + Sync + 'static,
    ) {
        lock(&self.shared.suspended_hooks).push(self.session_hook(f));
    }

    /// Registers a callback run (on this component's scheduler, in the session's lane)
    /// whenever a suspended session's client came back on a new connection.
    pub fn on_session_resumed(
        &self,
        f: impl Fn(&mut C, &Session<C::Serializer>) + Send + Sync + 'static,
    ) {
        lock(&self.shared.resumed_hooks).push(self.session_hook(f));
    }

    /// A session hook that runs `f` on this component's scheduler, in the session's lane.
    fn session_hook(
        &self,
        f: impl Fn(&mut C, &Session<C::Serializer>) + Send + Sync + 'static,
    ) -> crate::shared::ClosedHook<C::Serializer> {
        let f = Arc::new(f);
        let ctx = self.clone();
        Arc::new(move |session: &Session<C::Serializer>| {
            let f = f.clone();
            let session = session.clone();
            ctx.run_in(Lane::session(session.id()), move |c| f(c, &session));
        })
    }
}
