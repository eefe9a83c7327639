//! Jobs: what runs on a scheduler for a handler call or a lifecycle hook, with panics caught.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::component::{BoxedPayload, Call, Responder};
use crate::scheduler::{Job, Lane, Scheduler};
use crate::session::InFlight;
use crate::shared::Shared;
use crate::{Component, Context, Error, Serializer, Session};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    Init,
    AfterInit,
    BeforeShutdown,
    Shutdown,
}

/// Makes the job that calls handler `index` of a component type for a message in flight.
pub(crate) type MakeJob<S> = fn(usize, InFlight<S>, Option<u64>, BoxedPayload) -> Job;

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

pub(crate) fn make_job<C: Component>(
    index: usize,
    message: InFlight<C::Serializer>,
    id: Option<u64>,
    payload: BoxedPayload,
) -> Job {
    let is_async = C::HANDLERS.get(index).is_some_and(|h| h.is_async);
    if is_async {
        Job::Async(Box::new(move |state| {
            let Some(c) = state.downcast_mut::<C>() else {
                tracing::error!(component = C::NAME, "scheduler slot holds another type");
                return Box::pin(async {});
            };
            Box::pin(async move {
                // `message` lives until the end: the message counts as in flight until then.
                let session = message.session();
                let run = async {
                    let reply = Responder { session, id };
                    if let Call::Pending(f) = c.call(index, session, payload, reply) {
                        f.await;
                    }
                };
                if let Err(p) = AssertUnwindSafe(run).catch_unwind().await {
                    handler_panicked(session, id, C::NAME, index, p.as_ref());
                }
            })
        }))
    } else {
        Job::Sync(Box::new(move |state| {
            // `message` lives until the end: the message counts as in flight until then.
            let session = message.session();
            let Some(c) = state.downcast_mut::<C>() else {
                tracing::error!(component = C::NAME, "scheduler slot holds another type");
                return;
            };
            let reply = Responder { session, id };
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                matches!(c.call(index, session, payload, reply), Call::Done)
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
                Err(p) => handler_panicked(session, id, C::NAME, index, p.as_ref()),
            }
        }))
    }
}
