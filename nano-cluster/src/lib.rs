//! Clustering for nano: several nano processes acting as gates and backends.
//!
//! - [`link`]: the node-to-node transport, one long-lived gRPC stream per pair of nodes.

#![warn(missing_docs)]

pub mod link;
