//! State shared by every session of one application.

use std::sync::{Arc, Mutex};

use crate::protocol::{Dictionary, DEFAULT_MAX_PACKET_SIZE};
use crate::{Pipeline, Session};

/// A session-closed callback; it enqueues the user's closure on its component's scheduler.
pub(crate) type ClosedHook<S> = Arc<dyn Fn(&Session<S>) + Send + Sync>;

/// A uid-bound callback (see [`Engine::on_session_bound`](crate::Engine::on_session_bound)).
pub(crate) type BoundHook<S> = Arc<dyn Fn(&Session<S>, &str) + Send + Sync>;

/// What sessions need from their application: route compression, limits, pipeline, callbacks.
pub(crate) struct Shared<S> {
    /// Outbound route compression (`None` when the application offers no dict); used toward
    /// the sessions that showed they use it (see [`Shared::dict_for`]).
    pub dict: Option<Arc<Dictionary>>,
    /// Largest packet body we send or accept.
    pub max_packet_size: usize,
    pub pipeline: Pipeline<S>,
    pub closed_hooks: Mutex<Vec<ClosedHook<S>>>,
    pub bound_hooks: Mutex<Vec<BoundHook<S>>>,
    /// Run when a session's connection dropped and the session waits for its client to come
    /// back (see [`Session::suspend`]), and when it came back ([`Session::resume`]).
    pub suspended_hooks: Mutex<Vec<ClosedHook<S>>>,
    pub resumed_hooks: Mutex<Vec<ClosedHook<S>>>,
    /// In-flight messages allowed per session before its reader waits.
    pub max_inflight: usize,
    /// ORed into every session id made by this application (see
    /// [`Extension::session_id_base`](crate::extension::Extension::session_id_base)).
    pub session_id_base: u64,
    /// The engine, for [`Session::rpc`]; set once built.
    pub engine: std::sync::OnceLock<crate::WeakEngine<S>>,
    /// The application's metrics, when they are on.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl<S> Default for Shared<S> {
    fn default() -> Self {
        Shared {
            dict: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            pipeline: Pipeline::default(),
            closed_hooks: Mutex::new(Vec::new()),
            bound_hooks: Mutex::new(Vec::new()),
            suspended_hooks: Mutex::new(Vec::new()),
            resumed_hooks: Mutex::new(Vec::new()),
            max_inflight: 64,
            session_id_base: 0,
            engine: std::sync::OnceLock::new(),
            metrics: None,
        }
    }
}

impl<S> Shared<S> {
    /// The dictionary that compresses the routes of pushes to a session: none unless the
    /// session `uses_dict` (it sent a route as one of nano's `dict` codes), so a client that
    /// ignores the dictionary always gets string routes.
    #[inline]
    pub fn dict_for(&self, uses_dict: bool) -> Option<&Dictionary> {
        if uses_dict {
            self.dict.as_deref()
        } else {
            None
        }
    }
}
