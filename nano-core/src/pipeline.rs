//! Pipelines: interceptors that see every inbound and outbound message of a session.
//!
//! An inbound interceptor runs before routing; returning `Err` refuses the message (a refused
//! request is answered with that error). An outbound interceptor runs before a response or push
//! is queued; returning `Err` drops that one push (traced). A request always gets exactly one
//! answer: a refused response is replaced by an error response carrying the interceptor's
//! error, and a refused *error* response is sent anyway (the pipeline does not run twice for one
//! answer). go-nano's chat demo uses interceptors to count traffic.
//!
//! Interceptors run on the connection's task (inbound) or wherever the message is sent from
//! (outbound). A panicking interceptor is caught like a panicking handler: it counts as a
//! refusal with `NANO-500` ("interceptor panicked"), logged at error level, and the connection
//! keeps serving.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::protocol::MessageType;
use crate::{Error, Json, Result, Session};

/// A read-only view of one message passing through a pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Request, notify, response or push.
    pub kind: MessageType,
    /// The message id (0 for notify and push).
    pub id: u64,
    /// The route (`None` for responses).
    pub route: Option<&'a str>,
    /// The serialized payload.
    pub payload: &'a [u8],
}

/// One interceptor: sees the session and the message, may refuse it.
pub type Interceptor<S> = Arc<dyn Fn(&Session<S>, &Envelope<'_>) -> Result<()> + Send + Sync>;

/// An ordered list of interceptors.
pub struct Interceptors<S> {
    list: Vec<Interceptor<S>>,
}

impl<S> Default for Interceptors<S> {
    fn default() -> Self {
        Interceptors { list: Vec::new() }
    }
}

impl<S> Clone for Interceptors<S> {
    fn clone(&self) -> Self {
        Interceptors {
            list: self.list.clone(),
        }
    }
}

impl<S> Interceptors<S> {
    /// Adds an interceptor that runs before the ones already added.
    pub fn push_front(
        &mut self,
        f: impl Fn(&Session<S>, &Envelope<'_>) -> Result<()> + Send + Sync + 'static,
    ) {
        self.list.insert(0, Arc::new(f));
    }

    /// Adds an interceptor that runs after the ones already added.
    pub fn push_back(
        &mut self,
        f: impl Fn(&Session<S>, &Envelope<'_>) -> Result<()> + Send + Sync + 'static,
    ) {
        self.list.push(Arc::new(f));
    }

    /// Number of interceptors.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Runs every interceptor in order; the first `Err` stops the chain. A panic stops it
    /// too, as `NANO-500`.
    #[inline]
    pub(crate) fn run(&self, session: &Session<S>, env: &Envelope<'_>) -> Result<()> {
        for (index, f) in self.list.iter().enumerate() {
            // Nothing of the framework's is left half-changed by an interceptor's unwinding:
            // it only sees shared references.
            match std::panic::catch_unwind(AssertUnwindSafe(|| f(session, env))) {
                Ok(r) => r?,
                Err(p) => {
                    tracing::error!(
                        session = session.id(),
                        kind = ?env.kind,
                        route = env.route,
                        interceptor = index,
                        panic = panic_message(p.as_ref()),
                        "interceptor panicked"
                    );
                    return Err(Error::internal("interceptor panicked"));
                }
            }
        }
        Ok(())
    }
}

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

/// The inbound and outbound interceptors of an application.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use nano_core::{Json, Pipeline};
///
/// let inbound = Arc::new(AtomicU64::new(0));
/// let counter = inbound.clone();
/// let mut pipeline = Pipeline::<Json>::default();
/// pipeline.inbound.push_back(move |_session, _msg| {
///     counter.fetch_add(1, Ordering::Relaxed);
///     Ok(())
/// });
/// assert_eq!(pipeline.inbound.len(), 1);
/// ```
pub struct Pipeline<S = Json> {
    /// Runs on every request and notify, before routing.
    pub inbound: Interceptors<S>,
    /// Runs on every response and push, before it is queued.
    pub outbound: Interceptors<S>,
}

impl<S> Default for Pipeline<S> {
    fn default() -> Self {
        Pipeline {
            inbound: Interceptors::default(),
            outbound: Interceptors::default(),
        }
    }
}

impl<S> Clone for Pipeline<S> {
    fn clone(&self) -> Self {
        Pipeline {
            inbound: self.inbound.clone(),
            outbound: self.outbound.clone(),
        }
    }
}
