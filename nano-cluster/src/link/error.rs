//! What can go wrong on a node link, and the client-visible codes it maps to.

use std::net::SocketAddr;
use std::time::Duration;

pub use nano_core::{CODE_DEADLINE_EXCEEDED, CODE_UNAVAILABLE};

/// Why a request or a send on a [`NodeLink`](super::NodeLink) failed.
///
/// Convert it with [`LinkError::into_error`] (not `?`, which would make any error a
/// `NANO-500`) to answer a client.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_cluster::link::{LinkError, CODE_DEADLINE_EXCEEDED};
///
/// let e = LinkError::DeadlineExceeded(Duration::from_secs(5));
/// assert_eq!(e.code(), CODE_DEADLINE_EXCEEDED);
/// assert_eq!(e.into_error().code(), "NANO-504");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The deadline passed before the peer answered (`NANO-504`). The late answer, if any, is
    /// dropped.
    #[error("deadline exceeded: no answer within {0:?}")]
    DeadlineExceeded(Duration),
    /// The peer is not connected, or the connection was lost before it answered (`NANO-503`).
    #[error("peer unavailable: {0}")]
    Unavailable(&'static str),
    /// The link's bounded send queue is full: the peer (or the network) does not keep up
    /// (`NANO-503`). Nothing was sent.
    #[error("peer unavailable: link send queue full ({0} frames)")]
    QueueFull(usize),
    /// One frame is larger than the link's message limit (`NANO-500`). Nothing was sent.
    #[error("frame of {size} bytes exceeds the link's limit of {limit} bytes")]
    TooLarge {
        /// The encoded size of the frame.
        size: usize,
        /// [`LinkConfig::max_message_bytes`](super::LinkConfig::max_message_bytes).
        limit: usize,
    },
    /// The peer answered with an error (its handler's, or its node's): delivered as is.
    #[error("{0}")]
    Remote(nano_core::Error),
}

impl LinkError {
    /// The client-visible code of this error.
    pub fn code(&self) -> &str {
        match self {
            LinkError::DeadlineExceeded(_) => CODE_DEADLINE_EXCEEDED,
            LinkError::Unavailable(_) | LinkError::QueueFull(_) => CODE_UNAVAILABLE,
            LinkError::TooLarge { .. } => nano_core::CODE_INTERNAL,
            LinkError::Remote(e) => e.code(),
        }
    }

    /// The error to answer a client with: the peer's own error unchanged, otherwise an error
    /// with this error's [`code`](Self::code).
    pub fn into_error(self) -> nano_core::Error {
        match self {
            LinkError::Remote(e) => e,
            other => nano_core::Error::new(other.code().to_owned(), other.to_string()),
        }
    }
}

/// The cluster listen address could not be bound.
///
/// # Examples
///
/// ```no_run
/// # async fn f() {
/// use nano_cluster::link::{LinkConfig, NodeServer, NoHandler};
///
/// match NodeServer::bind("127.0.0.1:34570".parse().unwrap(), "gate-1", LinkConfig::default(), NoHandler).await {
///     Ok(server) => println!("links on {}", server.local_addr()),
///     Err(e) => eprintln!("{e}"), // "cannot listen for cluster links on 127.0.0.1:34570: ..."
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for cluster links on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The operating system's reason (e.g. `AddrInUse`).
    #[source]
    pub source: std::io::Error,
}
