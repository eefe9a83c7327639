//! Node-to-node links: one long-lived gRPC stream per pair of nodes, carrying batches of frames
//! both ways.
//!
//! - [`proto`]: the generated messages and service of `proto/link.proto` (`nano.link.v1`).
//! - [`NodeLink`]: this node's handle to a peer — requests with deadlines, pushes, kicks, ...
//! - [`NodeServer`] / [`LinkService`]: accept the links peers dial.
//! - [`LinkHandler`]: what the node does with the frames peers send ([`Inbound`]).
//! - [`LinkError`]: `NANO-503` unavailable, `NANO-504` deadline exceeded, or the peer's error.
//!
//! **One link per pair.** The node with the lower id (byte-wise string order, see [`dials`])
//! dials; the other accepts and refuses links from higher ids. Both ends then send requests
//! and frames over the same stream.
//!
//! **Batching.** Frames are queued on a bounded per-connection queue; the writer runs when
//! HTTP/2 can take another message, and puts everything queued by then (up to
//! [`LinkConfig::max_batch_frames`] / [`LinkConfig::max_batch_bytes`]) in one `Frames`
//! message, as the client outbox batches packets into one write.
//!
//! **Every request answered.** A request's deadline is enforced locally; a lost stream answers
//! every pending request with `NANO-503` at once; a dropped [`Responder`] answers `NANO-500`.
//!
//! # Examples
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use nano_cluster::link::{proto, Inbound, LinkConfig, LinkHandler, NoHandler, NodeLink, NodeServer};
//!
//! struct Echo;
//! impl LinkHandler for Echo {
//!     fn on_inbound(&self, _peer: &NodeLink, inbound: Inbound) {
//!         if let Inbound::Request(req, responder) = inbound {
//!             responder.respond(Ok(req.payload));
//!         }
//!     }
//! }
//!
//! let server = NodeServer::bind("127.0.0.1:0".parse()?, "node-b", LinkConfig::default(), Echo).await?;
//! let link = NodeLink::dial("node-a", server.local_addr(), LinkConfig::default(), NoHandler);
//! link.wait_up(Duration::from_secs(2)).await?;
//! let req = proto::Request { route: "Echo.Say".into(), payload: "hi".into(), ..Default::default() };
//! assert_eq!(&link.request(req, Duration::from_secs(1)).await?[..], b"hi");
//! # Ok(()) }
//! ```

mod config;
mod conn;
mod error;
mod handler;
mod node_link;
mod server;

/// The generated code of `proto/link.proto` (package `nano.link.v1`).
pub use crate::proto::nano::link::v1 as proto;

pub use config::LinkConfig;
pub use conn::{LinkStats, Responder};
pub use error::{BindError, LinkError, CODE_DEADLINE_EXCEEDED, CODE_UNAVAILABLE};
pub use handler::{Inbound, LinkHandler, NoHandler};
pub use node_link::{LinkState, NodeLink};
pub use server::{LinkService, NodeServer};

/// The link protocol version sent in `Hello`; a peer with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Whether node `local` dials node `remote` (rather than waiting for it to dial): true when
/// `local` is the lower id, byte-wise.
///
/// # Examples
///
/// ```
/// use nano_cluster::link::dials;
///
/// assert!(dials("backend-1", "gate-1"));
/// assert!(!dials("gate-1", "backend-1"));
/// assert!(!dials("gate-1", "gate-1"));
/// ```
pub fn dials(local: &str, remote: &str) -> bool {
    local < remote
}
