//! [`DiscoveryConfig`]: lease TTL, keep-alive period, timeouts and retry backoff.

use std::time::Duration;

/// Settings shared by every [`Discovery`](super::Discovery) implementation.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_cluster::DiscoveryConfig;
/// let config = DiscoveryConfig::default().ttl(Duration::from_secs(3));
/// assert_eq!(config.keepalive_interval(), Duration::from_secs(1));
/// ```
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// A member's lease lapses this long after its last keep-alive (default 6 s). etcd rounds
    /// it up to whole seconds, and to its own minimum (2 s by default).
    pub ttl: Duration,
    /// Keep-alives per TTL (default 3): the lease survives `keepalives_per_ttl - 1` lost ones.
    pub keepalives_per_ttl: u32,
    /// First retry delay after a failed call (default 50 ms); doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest retry delay (default 2 s).
    pub backoff_max: Duration,
    /// Most members an embedded master accepts (default 4096); further registrations are refused.
    pub max_members: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            ttl: Duration::from_secs(6),
            keepalives_per_ttl: 3,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_members: 4096,
        }
    }
}

impl DiscoveryConfig {
    /// Sets the lease TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The time between two keep-alives: `ttl / keepalives_per_ttl`, at least 10 ms.
    pub fn keepalive_interval(&self) -> Duration {
        (self.ttl / self.keepalives_per_ttl.max(1)).max(Duration::from_millis(10))
    }

    /// The bound on one call to the master or etcd: one keep-alive interval, so a stuck call
    /// never costs the lease by itself.
    pub fn rpc_timeout(&self) -> Duration {
        self.keepalive_interval().max(Duration::from_millis(100))
    }
}
