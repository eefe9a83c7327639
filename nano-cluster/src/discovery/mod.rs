//! Discovery: which nodes are in the cluster and which services each hosts.
//!
//! | module | job |
//! |---|---|
//! | `member` | [`NodeId`], [`Member`] and the limits a member from the network must respect |
//! | `view` | a node's view of the cluster and [`Watch`], the stream of [`Change`]s derived from it |
//! | `config` | [`DiscoveryConfig`]: lease TTL, keep-alive, timeouts, backoff |
//! | `backoff` | retry delays (exponential, jittered) |
//! | `master` | the embedded master's registry and gRPC service |
//! | `embedded` | [`Embedded`]: a node as the master or as a member of one |
//! | `etcd` | [`Etcd`]: a node registered in etcd (feature `etcd`) |
//!
//! Both implementations sit behind [`Discovery`], shaped after tower's `Discover`: a stream of
//! [`Change::Insert`] / [`Change::Remove`], plus this node's own lease being lost or held.

mod backoff;
mod config;
mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
mod master;
mod member;
mod view;

use std::future::Future;
use std::pin::Pin;

pub use config::DiscoveryConfig;
pub use embedded::Embedded;
#[cfg(feature = "etcd")]
pub use etcd::Etcd;
pub use master::MasterService;
pub use member::{Member, NodeId, MAX_FIELD_LEN, MAX_LABELS, MAX_SERVICES};
pub use view::Watch;

/// A boxed future, as [`Discovery`] returns them (the trait stays object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One change of the member list, or of this node's own registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A member joined, or changed (an insert for a known id replaces it).
    Insert(NodeId, Member),
    /// A member left: it deregistered, or its lease lapsed.
    Remove(NodeId),
    /// This node's own lease was lost (it lapsed, was revoked, or the master forgot it): the
    /// others stop seeing it until it is registered again, which discovery retries by itself.
    LeaseLost,
    /// This node holds its lease: first registration, or again after [`Change::LeaseLost`].
    Registered,
}

/// The member list of a cluster, whoever keeps it (an embedded master, etcd).
///
/// A node registers itself with the services it hosts when the implementation is created and
/// keeps its lease alive in the background; [`watch`](Discovery::watch) streams the member list
/// (this node included once registered). When the source is unreachable, the last view is kept
/// (peers are not dropped for that) and resynchronised when the source is back.
///
/// Implementations are cheap to clone handles; share them as `Arc<dyn Discovery>` where the
/// type must be erased. Dropping the last handle stops the keep-alive without deregistering
/// (as a crash would: the lease lapses within its TTL); [`shutdown`](Discovery::shutdown)
/// deregisters first.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use futures_util::StreamExt;
/// use nano_cluster::{Change, Discovery, DiscoveryConfig, Embedded, Member};
///
/// # async fn demo() -> Result<(), nano_cluster::DiscoveryError> {
/// let me = Member::new("chat-1", "127.0.0.1:34580").service("RoomService");
/// let discovery: Arc<dyn Discovery> =
///     Arc::new(Embedded::member("127.0.0.1:34560", me, DiscoveryConfig::default())?);
/// let mut changes = discovery.watch();
/// while let Some(change) = changes.next().await {
///     if let Change::Insert(id, member) = change {
///         println!("{id} at {} hosts {:?}", member.address, member.services);
///     }
/// }
/// # Ok(()) }
/// ```
pub trait Discovery: Send + Sync + std::fmt::Debug {
    /// This node, as it registers itself.
    fn local(&self) -> &Member;

    /// The members currently known (this node included once registered).
    fn members(&self) -> Vec<Member>;

    /// Whether this node currently holds its lease.
    fn is_registered(&self) -> bool;

    /// The member list as a stream of changes, starting with the members already known.
    fn watch(&self) -> Watch;

    /// Deregisters this node (best effort, bounded by the RPC timeout) and stops the background
    /// tasks; every [`Watch`] then ends.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError`] when the deregistration could not be delivered (the lease then
    /// lapses on its own).
    fn shutdown(&self) -> BoxFuture<'_, Result<(), DiscoveryError>>;
}

/// What can go wrong setting up or leaving discovery. Failures while running (the master or
/// etcd unreachable) are retried with backoff and traced, not returned.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The master could not listen on its address (busy, not local, no permission).
    #[error("discovery: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An address that is not `host:port` (or a URL for etcd).
    #[error("discovery: invalid address {0:?}")]
    InvalidAddress(String),
    /// This node's [`Member`] breaks a rule (see [`Member::validate`]).
    #[error("discovery: invalid member: {0}")]
    InvalidMember(String),
    /// A call to the master failed.
    #[error("discovery: master call failed: {0}")]
    Master(Box<tonic::Status>),
    /// A call did not finish within the RPC timeout.
    #[error("discovery: {0} timed out")]
    Timeout(&'static str),
    /// A call to etcd failed.
    #[cfg(feature = "etcd")]
    #[error("discovery: etcd: {0}")]
    Etcd(Box<etcd_client::Error>),
}

impl From<tonic::Status> for DiscoveryError {
    fn from(status: tonic::Status) -> Self {
        DiscoveryError::Master(Box::new(status))
    }
}

#[cfg(feature = "etcd")]
impl From<etcd_client::Error> for DiscoveryError {
    fn from(error: etcd_client::Error) -> Self {
        DiscoveryError::Etcd(Box::new(error))
    }
}
