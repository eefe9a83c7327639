//! State shared by every session of one application.

use std::sync::{Arc, Mutex};

use crate::protocol::{Dictionary, DEFAULT_MAX_PACKET_SIZE};
use crate::{Pipeline, Session};

/// A session-closed callback; it enqueues the user's closure on its component's scheduler.
pub(crate) type ClosedHook<S> = Arc<dyn Fn(&Session<S>) + Send + Sync>;

/// What sessions need from their application: route compression, limits, pipeline, callbacks.
pub(crate) struct Shared<S> {
    /// Outbound route compression (`None` when the application offers no dict).
    pub dict: Option<Arc<Dictionary>>,
    /// Largest packet body we send or accept.
    pub max_packet_size: usize,
    pub pipeline: Pipeline<S>,
    pub closed_hooks: Mutex<Vec<ClosedHook<S>>>,
    /// In-flight messages allowed per session before its reader waits.
    pub max_inflight: usize,
}

impl<S> Default for Shared<S> {
    fn default() -> Self {
        Shared {
            dict: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            pipeline: Pipeline::default(),
            closed_hooks: Mutex::new(Vec::new()),
            max_inflight: 64,
        }
    }
}

impl<S> Shared<S> {
    /// The dictionary used to compress outbound routes.
    #[inline]
    pub fn dict(&self) -> Option<&Dictionary> {
        self.dict.as_deref()
    }
}
