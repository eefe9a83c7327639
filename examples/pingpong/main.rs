//! The pingpong server: go-nano's benchmark component over TCP and WebSocket, protobuf
//! serializer.
//!
//! ```text
//! cargo run --release --example pingpong -- --tcp 127.0.0.1:13250 --ws 127.0.0.1:13251 --dict
//! ```
//!
//! In a cluster: a master, a backend hosting `TestHandler`, and a gate that hosts nothing and
//! serves the clients on the usual addresses, forwarding to the backend:
//!
//! ```text
//! cargo run --release --example pingpong -- --cluster master
//! cargo run --release --example pingpong -- --cluster backend
//! cargo run --release --example pingpong -- --cluster gate
//! ```

use std::time::Duration;

use clap::Parser;
use nano::prelude::*;
use nano_cluster::node::Cluster;
use nano_cluster::DiscoveryConfig;

#[path = "../common/mod.rs"]
mod common;
mod handler;

use handler::TestHandler;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(about = "nano pingpong server (go-nano's benchmark component)")]
struct Args {
    /// TCP listen address.
    #[arg(long, default_value = "127.0.0.1:13250")]
    tcp: String,
    /// WebSocket listen address.
    #[arg(long, default_value = "127.0.0.1:13251")]
    ws: String,
    /// WebSocket path.
    #[arg(long, default_value = "/nano")]
    ws_path: String,
    /// Heartbeat interval in seconds (0 disables).
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Offer route compression (the handshake `dict`).
    #[arg(long)]
    dict: bool,
    /// Run as a cluster node: `master` (discovery, no clients), `backend` (hosts
    /// `TestHandler`, no clients) or `gate` (serves clients, forwards to backends).
    #[arg(long, value_enum)]
    cluster: Option<Role>,
    /// The master's cluster address (backends and gates).
    #[arg(long, default_value = "127.0.0.1:34560")]
    master: String,
    /// This node's cluster address (default: the master's address for the master, a free
    /// port otherwise).
    #[arg(long)]
    listen: Option<String>,
    /// This node's id in the cluster (default: the role and the process id).
    #[arg(long)]
    node_id: Option<String>,
    /// How long a gate waits for a backend's answer, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    forward_deadline_ms: u64,
    /// Discovery lease time-to-live, in seconds: a node that vanished is dropped after it.
    #[arg(long, default_value_t = 6)]
    lease_ttl: u64,
    /// Find the other nodes in etcd at this URL instead of through a master (needs
    /// `--features etcd`; no master node then).
    #[arg(long)]
    etcd: Option<String>,
    /// The etcd key prefix of this cluster.
    #[arg(long, default_value = "/nano/pingpong/")]
    etcd_prefix: String,
    /// Keep metrics without an admin listener (what the bench's "metrics on" runs measure).
    #[arg(long)]
    metrics: bool,
    #[command(flatten)]
    admin: common::AdminArgs,
}

/// A cluster node's role.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Master,
    Backend,
    Gate,
}

fn main() -> std::io::Result<()> {
    common::init_tracing();
    let args = Args::parse();
    if let Some(role) = args.cluster {
        return cluster(role, &args);
    }
    let app = nano::app_with(Protobuf)
        .component(TestHandler)
        .push_routes(["pong"])
        .route_compression(args.dict)
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .tcp(args.tcp)
        .websocket(args.ws.clone(), &args.ws_path)
        .metrics(args.metrics);
    common::serve(args.admin.apply(app), false, &args.ws_path)
}

/// One node of a pingpong cluster.
fn cluster(role: Role, args: &Args) -> std::io::Result<()> {
    let name = match role {
        Role::Master => "master",
        Role::Backend => "backend",
        Role::Gate => "gate",
    };
    let id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{name}-{}", std::process::id()));
    let listen = match (&args.listen, role) {
        (Some(addr), _) => addr.clone(),
        (None, Role::Master) => args.master.clone(),
        (None, _) => "127.0.0.1:0".into(),
    };
    let settings = Cluster::new(id)
        .listen(listen)
        .forward_deadline(Duration::from_millis(args.forward_deadline_ms))
        .discovery_config(DiscoveryConfig::default().ttl(Duration::from_secs(args.lease_ttl)));
    let settings = match (&args.etcd, role) {
        (Some(url), _) => common::etcd(settings, url, &args.etcd_prefix)?,
        (None, Role::Master) => settings.as_master(),
        (None, _) => settings.master(&args.master),
    };
    let node = settings.build::<Protobuf>();
    let mut app = nano::app_with(Protobuf)
        .push_routes(["pong"])
        .route_compression(args.dict)
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .extension(node.clone());
    match role {
        Role::Backend => app = app.component(TestHandler),
        Role::Gate => app = app.tcp(&args.tcp).websocket(&args.ws, &args.ws_path),
        Role::Master => {}
    }
    let app = args.admin.apply(app.metrics(args.metrics));
    common::serve_node(app, node, false, &args.ws_path)
}
