//! Jobs: what runs on a scheduler for a handler call or a lifecycle hook, with panics caught.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::component::{BoxedPayload, Call, ReplyTo};
use crate::scheduler::{Job, Lane, Scheduler};
use crate::session::{InFlight, Outcome};
use crate::shared::Shared;
use crate::{Component, Context, Error, Serializer, Session};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    Init,
    AfterInit,
    BeforeShutdown,
    Shutdown,
}

/// Makes the job that calls handler `index` of a component type for a message in flight, on
/// `scheduler` in `slot`.
pub(crate) type MakeJob<S> =
    fn(usize, InFlight<S>, Option<u64>, BoxedPayload, &Scheduler, usize) -> Job;

pub(crate) fn run_hook<C: Component>(
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
    let job = Job::Sync(Box::new(move |state| {
        if let Some(c) = state.downcast_mut::<C>() {
            match hook {
                Hook::Init => c.init(&ctx),
                Hook::AfterInit => c.after_init(&ctx),
                Hook::BeforeShutdown => c.before_shutdown(&ctx),
                Hook::Shutdown => c.shutdown(&ctx),
            }
        }
        let _ = tx.send(());
    }));
    if !scheduler.enqueue(Lane::WORK, slot, job) {
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

/// The span of one handled message (`debug` level): route, request id (0 for a notify),
/// kind, session and uid; `outcome` (`ok`, the error code, or `deferred`) and `duration_us`
/// are recorded when the handler returns.
fn message_span<S: Serializer>(
    info: Option<&'static crate::HandlerInfo>,
    session: &Session<S>,
    id: Option<u64>,
) -> tracing::Span {
    let span = tracing::debug_span!(
        "message",
        route = info.map_or("", |h| h.route),
        id = id.unwrap_or(0),
        kind = if id.is_some() { "request" } else { "notify" },
        session = session.id(),
        uid = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Some(uid) = session.uid() {
            span.record("uid", &*uid);
        }
    }
    span
}

/// When the span's handler started (only when the span is recorded).
fn span_clock(span: &tracing::Span) -> Option<std::time::Instant> {
    (!span.is_disabled()).then(std::time::Instant::now)
}

/// Records how the handler ended on its span.
fn close_span<S>(span: &tracing::Span, started: Option<std::time::Instant>, message: &InFlight<S>) {
    let Some(started) = started else { return };
    let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.record("duration_us", elapsed);
    match message.outcome() {
        Outcome::Ok => span.record("outcome", "ok"),
        Outcome::Failed(code) => span.record("outcome", code),
        Outcome::Deferred => span.record("outcome", "deferred"),
    };
}

fn handler_panicked<S: Serializer>(
    message: &InFlight<S>,
    id: Option<u64>,
    component: &str,
    index: usize,
    panic: &(dyn std::any::Any + Send),
) {
    let session = message.session();
    message.failed(crate::error::CODE_INTERNAL);
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

pub(crate) fn make_job<C: Component>(
    index: usize,
    message: InFlight<C::Serializer>,
    id: Option<u64>,
    payload: BoxedPayload,
    scheduler: &Scheduler,
    slot: usize,
) -> Job {
    let info = C::HANDLERS.get(index);
    let is_async = info.is_some_and(|h| h.is_async);
    // Built only for the handlers that take it (two reference counts to bump).
    let ctx = info.is_some_and(|h| h.takes_context).then(|| Context::<C> {
        scheduler: scheduler.clone(),
        slot,
        shared: message.session().shared_arc().clone(),
        _component: PhantomData,
    });
    if is_async {
        Job::Async(Box::new(move |state| {
            let Some(c) = state.downcast_mut::<C>() else {
                tracing::error!(component = C::NAME, "scheduler slot holds another type");
                return Box::pin(async {});
            };
            let span = message_span(info, message.session(), id);
            Box::pin(
                async move {
                    // `message` lives until the end: the message counts as in flight until then.
                    message.started();
                    let clock = span_clock(&tracing::Span::current());
                    let session = message.session();
                    let run = async {
                        let reply = ReplyTo {
                            message: &message,
                            id,
                        };
                        if let Call::Pending(f) =
                            c.call(index, session, payload, ctx.as_ref(), reply)
                        {
                            f.await;
                        }
                    };
                    if let Err(p) = AssertUnwindSafe(run).catch_unwind().await {
                        handler_panicked(&message, id, C::NAME, index, p.as_ref());
                    }
                    close_span(&tracing::Span::current(), clock, &message);
                }
                .instrument(span),
            )
        }))
    } else {
        Job::Sync(Box::new(move |state| {
            // `message` lives until the end: the message counts as in flight until then.
            let session = message.session();
            let Some(c) = state.downcast_mut::<C>() else {
                tracing::error!(component = C::NAME, "scheduler slot holds another type");
                return;
            };
            message.started();
            let span = message_span(info, session, id);
            let _entered = span.enter();
            let clock = span_clock(&span);
            let reply = ReplyTo {
                message: &message,
                id,
            };
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                matches!(
                    c.call(index, session, payload, ctx.as_ref(), reply),
                    Call::Done
                )
            }));
            match r {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        component = C::NAME,
                        handler = index,
                        "sync handler returned a future"
                    );
                    message.failed(crate::error::CODE_INTERNAL);
                    if let Some(id) = id {
                        session.respond(id, Err(Error::internal("handler kind mismatch")));
                    }
                }
                Err(p) => handler_panicked(&message, id, C::NAME, index, p.as_ref()),
            }
            close_span(&span, clock, &message);
        }))
    }
}
