//! Deferred responses: a request's answer, taken by a handler to be sent later.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Error;

/// The message of the error sent when a [`Responder`] is dropped without an answer.
pub const DROPPED_UNANSWERED: &str = "request dropped without an answer";

/// Sends the answer (already bound to the session, the request id and the serializer).
type Send<T> = Box<dyn FnOnce(Result<T, Error>) + std::marker::Send>;

/// The answer to one request, to be sent later: from a spawned task, a timer, another thread.
///
/// A handler gets one by taking a `Responder<T>` argument and returning `()`; `T` is what it
/// answers with, encoded like a handler's return value (`()` for an empty response, `Bytes` /
/// `Vec<u8>` as they are, anything else by the application's serializer). The answer goes
/// through the same path as a returned one: the outbound pipeline, the packet size check, the
/// serializer.
///
/// It answers exactly once by construction: [`ok`](Self::ok), [`err`](Self::err) and
/// [`send`](Self::send) consume it. Dropped without an answer, it answers `NANO-500`
/// `"request dropped without an answer"` (and traces a warning), so a client never waits
/// forever. While it is alive the request counts as in flight for the session's
/// `max_inflight` limit.
///
/// For a notify (a message without id) there is nothing to answer: the responder discards
/// what it is given (an error is traced) and dropping it does nothing.
///
/// It is `Send + 'static`: move it into [`Context::spawn`](crate::Context::spawn), a timer
/// ([`Context::after`](crate::Context::after)), a channel or another thread.
///
/// # Examples
///
/// ```text
/// #[component]
/// impl Oracle {
///     pub fn ask(&mut self, s: &Session, q: Question, ctx: &Context<Self>, reply: Responder<Answer>) {
///         ctx.spawn(think(q), move |_oracle, answer| reply.ok(answer));
///     }
/// }
/// ```
#[must_use = "dropping a Responder answers the request with an error"]
pub struct Responder<T> {
    id: Option<u64>,
    send: Option<Send<T>>,
}

impl<T> Responder<T> {
    /// A responder for request `id` that answers through `send`.
    pub(crate) fn new(id: u64, send: Send<T>) -> Self {
        Responder {
            id: Some(id),
            send: Some(send),
        }
    }

    /// A responder for a notify: answers nothing.
    pub(crate) fn notify() -> Self {
        Responder {
            id: None,
            send: None,
        }
    }

    /// The request id; `None` for a notify.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Whether this is a notify's responder (which answers nothing).
    pub fn is_notify(&self) -> bool {
        self.id.is_none()
    }

    /// Answers with `value`.
    pub fn ok(self, value: T) {
        self.send(Ok::<T, Error>(value));
    }

    /// Answers with an error response.
    pub fn err(self, err: impl Into<Error>) {
        self.send(Err::<T, Error>(err.into()));
    }

    /// Answers with a handler-style result.
    pub fn send<E: Into<Error>>(mut self, result: Result<T, E>) {
        let result = result.map_err(Into::into);
        match self.send.take() {
            Some(send) => send(result),
            None => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "notify handler failed");
                }
            }
        }
    }
}

impl<T: 'static> Responder<T> {
    /// Answers `NANO-503` `"request timed out"` if no answer was sent within `after`; the
    /// answer given later is then discarded. Needs a tokio runtime (handlers run on one).
    ///
    /// # Examples
    ///
    /// ```text
    /// let reply = reply.timeout(Duration::from_secs(5));
    /// ```
    pub fn timeout(mut self, after: Duration) -> Self {
        let (Some(id), Some(send)) = (self.id, self.send.take()) else {
            return self;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(id, "Responder::timeout outside a tokio runtime: no timeout");
            self.send = Some(send);
            return self;
        };
        let slot = Arc::new(Mutex::new(Some(send)));
        let timer = slot.clone();
        runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let send = crate::session::lock(&timer).take();
            if let Some(send) = send {
                tracing::debug!(id, "deferred response timed out");
                send(Err(Error::unavailable("request timed out")));
            }
        });
        Responder::new(
            id,
            Box::new(move |result| {
                let send = crate::session::lock(&slot).take();
                match send {
                    Some(send) => send(result),
                    None => tracing::debug!(id, "answer after the timeout discarded"),
                }
            }),
        )
    }
}

impl<T> Drop for Responder<T> {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            tracing::warn!(id = self.id, "{DROPPED_UNANSWERED}");
            send(Err(Error::internal(DROPPED_UNANSWERED)));
        }
    }
}

impl<T> std::fmt::Debug for Responder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("id", &self.id)
            .field("answered", &self.send.is_none())
            .finish()
    }
}
