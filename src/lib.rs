//! # nano for Rust
//!
//! A game-server framework for real-time interactive systems (multiplayer games, chat, live
//! collaboration), wire-compatible with the clients of nano and pomelo.
//!
//! Write game logic as a plain `impl` block annotated with [`component`]; every handler of a
//! component runs on the component's scheduler, one at a time, so handlers take `&mut self`
//! and need no locks.
//!
//! ```no_run
//! use nano::prelude::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Hello { name: String }
//!
//! struct Greeter;
//!
//! #[component]
//! impl Greeter {
//!     /// Route `Greeter.Hello`.
//!     pub fn hello(&mut self, _s: &Session, req: Hello) -> Result<String> {
//!         Ok(format!("hello, {}", req.name))
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     nano::app().component(Greeter).tcp("127.0.0.1:3250").run()
//! }
//! ```
//!
//! The crates behind the facade: `nano-core` (codec, sessions, groups, components,
//! schedulers, pipeline, serializers; no sockets), `nano-macros` (`#[component]`) and
//! `nano-net` (TCP/WebSocket/TLS server, per-connection agent, Rust client).

#![warn(missing_docs)]

pub use bytes::Bytes;
pub use nano_core::api;
pub use nano_core::component::{self, Context, HandlerInfo};
pub use nano_core::protocol;
pub use nano_core::testing;
pub use nano_core::{
    Component, Decode, Encode, Envelope, Error, Group, Json, OrInternal, OverLimit, Pipeline,
    Protobuf, RateLimit, Responder, Result, Serializer, Session, TimerId, DEFAULT_SCHEDULER,
};
pub use nano_macros::component;

#[cfg(feature = "otel")]
pub mod otel;

/// The plumbing under `nano::app()`, for transports, extensions (a cluster) and tests that
/// drive an engine directly: the route table and dispatch ([`Engine`](engine::Engine),
/// [`EngineBuilder`](engine::EngineBuilder)), where sessions' packets go
/// ([`Link`](engine::Link)), the extension seam, schedulers.
pub mod engine {
    pub use nano_core::extension;
    pub use nano_core::{
        DispatchError, Engine, EngineBuilder, InFlight, Link, Origin, RouteEntry, Scheduler,
        SendError, WeakEngine,
    };
}

/// Gates, backends and discovery: the `nano-cluster` crate (feature `cluster`).
#[cfg(feature = "cluster")]
pub use nano_cluster as cluster;
pub use nano_net::*;

#[doc(hidden)]
pub use nano_core::private as __private;

/// The imports most applications need: `use nano::prelude::*;`.
pub mod prelude {
    pub use crate::{
        component, Context, Error, Group, Json, OrInternal, Protobuf, Responder, Result, Session,
    };
    pub use bytes::Bytes;
    pub use serde::{Deserialize, Serialize};
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
