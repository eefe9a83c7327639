//! nano-net: the sockets side of nano.
//!
//! | module | job |
//! |---|---|
//! | `app` | [`App`]: components + listeners + settings, then `run()` / `start()` |
//! | `server` | [`Server`]: a running server's addresses and graceful shutdown |
//! | `listen` | listeners (TCP, WebSocket, TLS): accept loops, connection limit, backoff |
//! | `listener` | [`Listener`]: an address, a transport and its options (TLS, PROXY protocol) |
//! | `proxy` | the PROXY protocol header (v1, v2) on listeners behind a load balancer |
//! | `per_ip` | per-IP connection cap and connection rate at accept, in a bounded table |
//! | `ctx` | what connections share: engine, settings, live sessions, handshake reply |
//! | `agent` | one per connection: handshake, read loop, batched writer |
//! | `heartbeat` | one sweeper per server: heartbeats, kicks silent peers |
//! | `outbox` | a connection's bounded send queue (packets and bytes) and its wake-up |
//! | `sync` | std's or loom's primitives for the outbox (`--cfg nano_loom` model checks) |
//! | `transport` | what the agent reads from and writes to; raw streams (one `writev` per batch) |
//! | `ws` | server WebSocket over the halves of an upgraded stream: frames parsed and unmasked in place, one binary frame per batch |
//! | `http` | WebSocket upgrade with origin check, plain HTTP on the same port |
//! | `tls` | [`TlsConfig`] from PEM |
//! | [`client`] | [`Client`]: a Rust client for bots, tests and benchmarks |

#![warn(missing_docs)]

mod admin;
mod agent;
mod app;
pub mod client;
mod config;
mod ctx;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod heartbeat;
mod http;
mod listen;
mod listener;
mod outbox;
mod per_ip;
mod proxy;
mod resume;
mod server;
mod sync;
mod tls;
mod transport;
mod ws;

pub use app::{app, app_with, App};
pub use client::{
    AnyPushStream, Client, ClientBuilder, ClientError, ClientEvent, ConnectionEvent, HandshakeInfo,
    PushStream,
};
pub use config::{FullQueuePolicy, HandshakeRefusal, HandshakeRequest, ServerConfig};
pub use http::{embedded, static_dir, HttpHandler, HttpRequest, HttpResponse, MAX_STATIC_FILE};
pub use listener::Listener;
pub use per_ip::{ConnectionRate, PerIpLimits, PerIpRefusals};
pub use resume::Resume;
pub use server::{Server, Transport};
pub use tls::TlsConfig;
