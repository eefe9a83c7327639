//! The seam a cluster (or any other add-on) plugs into an engine through: it starts after the
//! engine, may take the messages whose route no local component serves, and stops before it.
//!
//! nano-core defines the seam and nothing behind it; `nano-cluster` implements it (a gate
//! forwards those messages to the node that hosts their service).

use std::future::Future;
use std::pin::Pin;

use crate::protocol::Message;
use crate::{Engine, Origin, Serializer, Session};

/// A boxed, sendable future, as [`Extension`] returns them (the trait stays object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error an extension fails to start with.
pub type ExtensionError = Box<dyn std::error::Error + Send + Sync>;

/// An add-on that runs with an [`Engine`]: registered with
/// [`EngineBuilder::extension`](crate::EngineBuilder::extension), started by the transport after
/// [`Engine::start`], stopped before the engine's `shutdown` hooks.
///
/// # Examples
///
/// An extension that answers every request to a service `Echo` that no component hosts:
///
/// ```
/// use nano_core::extension::{BoxFuture, Extension, ExtensionError};
/// use nano_core::protocol::{Message, MessageType};
/// use nano_core::{Engine, Json, Origin, Session};
///
/// struct Echo;
///
/// impl Extension<Json> for Echo {
///     fn start<'a>(&'a self, _engine: &'a Engine<Json>) -> BoxFuture<'a, Result<(), ExtensionError>> {
///         Box::pin(async { Ok(()) })
///     }
///
///     fn forward(&self, session: &Session<Json>, msg: Message, _: Origin) -> Result<(), Message> {
///         if !msg.route.as_deref().is_some_and(|r| r.starts_with("Echo.")) {
///             return Err(msg); // not ours: the engine answers NANO-404
///         }
///         if msg.kind == MessageType::Request {
///             session.respond_raw(msg.id, &msg.payload);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Extension<S: Serializer>: Send + Sync + 'static {
    /// Starts the extension with the running engine (its schedulers started, `init` and
    /// `after_init` run). Keep a [`WeakEngine`](crate::WeakEngine) rather than the engine
    /// itself: the engine holds the extension.
    ///
    /// # Errors
    ///
    /// Whatever keeps the extension from running (an address in use, ...): the server does
    /// not start.
    fn start<'a>(&'a self, engine: &'a Engine<S>) -> BoxFuture<'a, Result<(), ExtensionError>>;

    /// A message from a client whose route no local component serves. Return `Ok(())` when
    /// the extension took it (a request must then get exactly one answer, e.g. through
    /// [`Session::respond_raw`] / [`Session::respond_error`]); `Err(msg)` hands it back and the
    /// engine answers `NANO-404` as usual.
    ///
    /// `origin` says who sent it: a client, or server code ([`Session::rpc`]) that may reach
    /// internal routes.
    ///
    /// Runs on the connection's task: it must not block.
    fn forward(&self, session: &Session<S>, msg: Message, origin: Origin) -> Result<(), Message> {
        let _ = (session, origin);
        Err(msg)
    }

    /// The high bits of every session id this engine hands out (ORed with a process-wide
    /// counter), so that several processes can make ids that never collide. Read once, when
    /// the engine is built. Default 0.
    fn session_id_base(&self) -> u64 {
        0
    }

    /// The extension's name and state for the monitor page (`/debug/nano/node`): a cluster
    /// node's id, members and links. `None` (the default): nothing to show.
    fn describe(&self) -> Option<(&'static str, serde_json::Value)> {
        None
    }

    /// Stops the extension. A server calls it at graceful shutdown once its connections have
    /// ended (their sessions closed), before the engine's `shutdown` hooks.
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
