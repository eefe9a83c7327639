//! The cluster's processes: this binary re-executed with the hidden `--serve <role>` flag,
//! through the pingpong bench's [`run_child`] (`READY <a> <b>` once up, exit when stdin
//! closes). Every node is built with the public API: `Cluster` settings, a `nano::app()`
//! with the node as an extension.
//!
//! | role            | serializer | hosts          | prints `READY`           |
//! |-----------------|------------|----------------|--------------------------|
//! | `master-pb`     | protobuf   | nothing        | cluster addr, twice      |
//! | `master-json`   | JSON       | nothing        | cluster addr, twice      |
//! | `echo-backend`  | protobuf   | `TestHandler`  | cluster addr, twice      |
//! | `echo-gate`     | protobuf   | nothing        | client TCP, WebSocket    |
//! | `bcast-backend` | JSON       | `Bcast`        | client TCP, cluster addr |
//! | `bcast-gate`    | JSON       | nothing        | client TCP, WebSocket    |
//!
//! The broadcast backend also listens for clients on TCP: the bench fires its broadcasts on
//! a connection of its own there, so that the only traffic on the backend's links to the gates
//! during a broadcast is the broadcast itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nano::prelude::*;
use nano::Transport;
use nano_cluster::node::{Cluster, Node};

use crate::broadcast::{FireReply, ROUTE_PUSH};
use crate::handler::TestHandler;
use crate::serve::{run_child, Keep, WS_PATH};

/// How long a gate waits for its backend to be discovered before giving up.
const DISCOVERY: Duration = Duration::from_secs(20);

/// A cluster role of a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    MasterPb,
    MasterJson,
    EchoBackend,
    EchoGate,
    BcastBackend,
    BcastGate,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::MasterPb => "master-pb",
            Role::MasterJson => "master-json",
            Role::EchoBackend => "echo-backend",
            Role::EchoGate => "echo-gate",
            Role::BcastBackend => "bcast-backend",
            Role::BcastGate => "bcast-gate",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::MasterPb,
            Role::MasterJson,
            Role::EchoBackend,
            Role::EchoGate,
            Role::BcastBackend,
            Role::BcastGate,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

/// What a node child is told on its command line.
#[derive(Debug, Clone)]
pub struct NodeArgs {
    /// This node's id.
    pub id: String,
    /// The master's cluster address (not for the master).
    pub master: String,
    /// Client listeners (gates; the broadcast backend's TCP).
    pub tcp: String,
    pub ws: String,
    pub heartbeat: Duration,
}

/// Child side: runs `role` until stdin closes. Never returns. A node that cannot start
/// says why on stderr and exits with status 1 (the parent sees no `READY` line).
pub fn serve_forever(role: Role, args: NodeArgs) -> ! {
    run_child(async move {
        match start(role, &args).await {
            Ok(up) => up,
            Err(e) => {
                eprintln!("{} {} does not start: {e}", role.name(), args.id);
                std::process::exit(1)
            }
        }
    })
}

async fn start(role: Role, a: &NodeArgs) -> std::io::Result<(SocketAddr, SocketAddr, Keep)> {
    let hb = Some(a.heartbeat);
    let settings = Cluster::new(a.id.clone()).listen("127.0.0.1:0");
    let member = |s: Cluster| s.master(a.master.clone());
    let cluster_addr = |addr: Option<SocketAddr>| {
        addr.ok_or_else(|| std::io::Error::other("the cluster node has no address"))
    };
    let listener = |addr: Option<SocketAddr>, what: &str| {
        addr.ok_or_else(|| std::io::Error::other(format!("no {what} listener")))
    };
    match role {
        Role::MasterPb => {
            let node = settings.as_master().build::<Protobuf>();
            let server = nano::app_with(Protobuf)
                .extension(node.clone())
                .start()
                .await?;
            let addr = cluster_addr(node.local_addr())?;
            Ok((addr, addr, Box::new((server, node))))
        }
        Role::MasterJson => {
            let node = settings.as_master().build::<Json>();
            let server = nano::app().extension(node.clone()).start().await?;
            let addr = cluster_addr(node.local_addr())?;
            Ok((addr, addr, Box::new((server, node))))
        }
        Role::EchoBackend => {
            let node = member(settings).build::<Protobuf>();
            let server = nano::app_with(Protobuf)
                .component(TestHandler)
                .push_routes(["pong"])
                .heartbeat(hb)
                .extension(node.clone())
                .start()
                .await?;
            let addr = cluster_addr(node.local_addr())?;
            Ok((addr, addr, Box::new((server, node))))
        }
        Role::EchoGate => {
            let node = member(settings).build::<Protobuf>();
            let server = nano::app_with(Protobuf)
                .push_routes(["pong"])
                .heartbeat(hb)
                .extension(node.clone())
                .tcp(&a.tcp)
                .websocket(&a.ws, WS_PATH)
                .start()
                .await?;
            if !node.wait_for_service("TestHandler", DISCOVERY).await {
                return Err(std::io::Error::other("no TestHandler backend discovered"));
            }
            let tcp = listener(server.addr(Transport::Tcp), "tcp")?;
            let ws = listener(server.addr(Transport::WebSocket), "websocket")?;
            Ok((tcp, ws, Box::new((server, node))))
        }
        Role::BcastBackend => {
            let node = member(settings).build::<Json>();
            let server = nano::app()
                .component(ClusterBcast {
                    group: Group::new("bench"),
                    node: node.clone(),
                })
                .push_routes([ROUTE_PUSH])
                .heartbeat(hb)
                .extension(node.clone())
                .tcp(&a.tcp)
                .start()
                .await?;
            let tcp = listener(server.addr(Transport::Tcp), "tcp")?;
            let addr = cluster_addr(node.local_addr())?;
            Ok((tcp, addr, Box::new((server, node))))
        }
        Role::BcastGate => {
            let node = member(settings).build::<Json>();
            let server = nano::app()
                .push_routes([ROUTE_PUSH])
                .heartbeat(hb)
                .extension(node.clone())
                .tcp(&a.tcp)
                .websocket(&a.ws, WS_PATH)
                .start()
                .await?;
            if !node.wait_for_service("Bcast", DISCOVERY).await {
                return Err(std::io::Error::other("no Bcast backend discovered"));
            }
            let tcp = listener(server.addr(Transport::Tcp), "tcp")?;
            let ws = listener(server.addr(Transport::WebSocket), "websocket")?;
            Ok((tcp, ws, Box::new((server, node))))
        }
    }
}

/// The broadcast backend's component: the routes of the pingpong bench's `Bcast`
/// (`Join`, `Fire`), plus `Links`, the frames this node has sent on its links, by peer.
pub struct ClusterBcast {
    group: Group,
    node: Arc<Node<Json>>,
}

#[component(name = "Bcast")]
impl ClusterBcast {
    /// `Bcast.Join`: joins the group; answers its size.
    pub fn join(&mut self, s: &Session) -> Result<usize> {
        self.group.add(s)?;
        Ok(self.group.count())
    }

    /// `Bcast.Fire`: broadcasts `Counted { seq }` to the group; reports the link counters
    /// from just before.
    pub fn fire(&mut self, _s: &Session, seq: u64) -> Result<FireReply> {
        crate::broadcast::fire(&self.group, seq, link_frames(&self.node))
    }

    /// `Bcast.Links`: frames sent so far on this node's links, by peer id.
    pub fn links(&mut self, _s: &Session) -> Result<BTreeMap<String, u64>> {
        Ok(link_frames(&self.node))
    }
}

/// Frames sent on the links to every known member, by member id.
fn link_frames(node: &Node<Json>) -> BTreeMap<String, u64> {
    node.members()
        .into_iter()
        .filter_map(|m| {
            let stats = node.link_stats(m.id.as_str())?;
            Some((m.id.to_string(), stats.frames_sent))
        })
        .collect()
}
