//! Settings of node links, shared by the dialing and the accepting side.

use std::time::Duration;

/// Limits and timings of node links.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_cluster::link::LinkConfig;
///
/// let config = LinkConfig {
///     queue_capacity: 16 * 1024,
///     backoff_max: Duration::from_secs(1),
///     ..LinkConfig::default()
/// };
/// assert_eq!(config.max_batch_frames, LinkConfig::default().max_batch_frames);
/// ```
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Frames queued for the writer per connection; a send beyond it fails at once with
    /// [`LinkError::QueueFull`](super::LinkError::QueueFull) (never blocks, never grows).
    pub queue_capacity: usize,
    /// Most frames put in one `Frames` message.
    pub max_batch_frames: usize,
    /// A batch is closed once its frames add up to this many encoded bytes.
    pub max_batch_bytes: usize,
    /// Largest stream message accepted or sent (gRPC message limit, both directions). A single
    /// frame larger than `max_message_bytes - max_batch_bytes` is refused at send.
    pub max_message_bytes: usize,
    /// Bound on establishing the TCP + HTTP/2 connection to a peer.
    pub connect_timeout: Duration,
    /// Bound on receiving the peer's `Hello` once the stream is open.
    pub hello_timeout: Duration,
    /// First wait before redialing a lost or refused peer; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between two dials.
    pub backoff_max: Duration,
    /// HTTP/2 PING interval: a peer that vanished without closing its socket is noticed after
    /// `keepalive_interval + keepalive_timeout` at most.
    pub keepalive_interval: Duration,
    /// How long a PING may stay unanswered before the connection is declared lost.
    pub keepalive_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            queue_capacity: 8 * 1024,
            max_batch_frames: 512,
            max_batch_bytes: 1024 * 1024,
            max_message_bytes: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

impl LinkConfig {
    /// The largest single frame a send accepts.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(self.max_batch_bytes)
            .max(1024)
    }
}
