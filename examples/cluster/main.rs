//! go-nano's distributed chat demo, drop-in: a master, chat backends and gates, each a process.
//!
//! ```text
//! cargo run --example cluster -- master
//! cargo run --example cluster -- chat --listen 127.0.0.1:34580
//! cargo run --example cluster -- gate --listen 127.0.0.1:34570 --gate-address 127.0.0.1:34590
//! # then open http://127.0.0.1:34590/web/ in two tabs; a second gate shares the room:
//! cargo run --example cluster -- gate --listen 127.0.0.1:34571 --gate-address 127.0.0.1:34591
//! ```
//!
//! With etcd instead of the master's discovery, add `--etcd http://127.0.0.1:2379` to every
//! node (and build with `--features etcd`).
//!
//! The same components, routes and pushes as go-nano's `examples/cluster`, so its page works
//! against it unchanged:
//!
//! - the gate hosts `BindService.Login` {nickname}: it calls `TopicService.NewUser` on the
//!   master on behalf of the session (a session RPC) and answers `{code: 0}`;
//! - the master hosts `TopicService`: `NewUser` binds the session a master uid, pushes
//!   `onMembers` {members} and calls `RoomService.JoinRoom` on a chat node; `Stats` counts a
//!   message and pushes `onBalance` {currentBalance}. Clients cannot call it (internal);
//! - chat nodes host `RoomService`: `JoinRoom` (internal) broadcasts `onNewUser` {content} and
//!   adds the session to the room; `SyncMessage` {name, content} (notify) calls `Stats` on the
//!   master and broadcasts `onMessage` to the room;
//! - clients connect to a gate over WebSocket at `--gate-address`, path `/nano`; the gate also
//!   serves a page at `/web/`. When a client leaves, the master and the chat node run their
//!   session-closed callbacks; when a gate dies, they run them for all of its sessions.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nano::prelude::*;
use nano_cluster::node::{Cluster, Node};
use nano_cluster::DiscoveryConfig;

#[path = "../common/mod.rs"]
mod common;
mod services;

use services::{BindService, RoomService, TopicService};

#[derive(Parser, Debug)]
#[command(about = "nano cluster demo (go-nano's examples/cluster)")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// The master: discovery, and the `TopicService`.
    Master {
        /// Master service listen address.
        #[arg(long, short, default_value = "127.0.0.1:34560")]
        listen: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// A chat backend: the `RoomService`.
    Chat {
        /// Master server address.
        #[arg(long, default_value = "127.0.0.1:34560")]
        master: String,
        /// Chat service listen address (for other nodes).
        #[arg(long, short, default_value = "127.0.0.1:34580")]
        listen: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// A gate: holds the clients' WebSocket connections, hosts `BindService`.
    Gate {
        /// Master server address.
        #[arg(long, default_value = "127.0.0.1:34560")]
        master: String,
        /// Gate service listen address (for other nodes).
        #[arg(long, short, default_value = "127.0.0.1:34570")]
        listen: String,
        /// Client connect address (WebSocket, path `/nano`; the page at `/web/`).
        #[arg(long, default_value = "127.0.0.1:34590")]
        gate_address: String,
        /// WebSocket path.
        #[arg(long, default_value = "/nano")]
        ws_path: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Settings every node takes.
#[derive(Args, Debug)]
struct NodeArgs {
    /// This node's id in the cluster (default: the role and the process id, as go-nano).
    #[arg(long)]
    node_id: Option<String>,
    /// Discovery lease time-to-live in seconds: a node that vanished is dropped after it.
    #[arg(long, default_value_t = 6)]
    lease_ttl: u64,
    /// Heartbeat interval for clients, in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Find the other nodes in etcd at this URL (e.g. http://127.0.0.1:2379) instead of
    /// through the master (needs `--features etcd`).
    #[arg(long)]
    etcd: Option<String>,
    /// The etcd key prefix of this cluster.
    #[arg(long, default_value = "/nano/cluster/")]
    etcd_prefix: String,
    #[command(flatten)]
    admin: common::AdminArgs,
}

static PAGES: &[(&str, &[u8])] = &[
    ("/web/index.html", include_bytes!("web/index.html")),
    ("/web/cluster.js", include_bytes!("web/cluster.js")),
    ("/web/nano.js", include_bytes!("../web/nano.js")),
];

fn node(role: &str, listen: &str, args: &NodeArgs) -> Cluster {
    let id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{role}-{}", std::process::id()));
    Cluster::new(id)
        .listen(listen)
        .discovery_config(DiscoveryConfig::default().ttl(Duration::from_secs(args.lease_ttl)))
}

/// Registers `node` with the master at `master`, or in etcd when `--etcd` is given.
fn discover(node: Cluster, master: String, args: &NodeArgs) -> std::io::Result<Cluster> {
    match &args.etcd {
        None => Ok(node.master(master)),
        Some(url) => common::etcd(node, url, &args.etcd_prefix),
    }
}

fn app(args: &NodeArgs, node: &std::sync::Arc<Node<Json>>) -> nano::App<Json> {
    let app = nano::app()
        .heartbeat(Some(Duration::from_secs(args.heartbeat)))
        .push_routes(["onMembers", "onNewUser", "onMessage", "onBalance"])
        .extension(node.clone());
    args.admin.apply(app)
}

fn main() -> std::io::Result<()> {
    common::init_tracing();
    match Cli::parse().role {
        Role::Master { listen, node: args } => {
            // With etcd, the "master" is one more node: it hosts the TopicService.
            let node = match &args.etcd {
                None => node("master", &listen, &args).as_master(),
                Some(url) => common::etcd(node("master", &listen, &args), url, &args.etcd_prefix)?,
            }
            .build::<Json>();
            let app = app(&args, &node).component(TopicService::default());
            common::serve_node(app, node, false, "")
        }
        Role::Chat {
            master,
            listen,
            node: args,
        } => {
            let node = discover(node("chat", &listen, &args), master, &args)?.build::<Json>();
            let app = app(&args, &node).component(RoomService::default());
            common::serve_node(app, node, false, "")
        }
        Role::Gate {
            master,
            listen,
            gate_address,
            ws_path,
            node: args,
        } => {
            let node = discover(node("gate", &listen, &args), master, &args)?.build::<Json>();
            let app = app(&args, &node)
                .component(BindService::default())
                .http_embedded(PAGES)
                .websocket(gate_address, &ws_path);
            common::serve_node(app, node, true, &ws_path)
        }
    }
}
