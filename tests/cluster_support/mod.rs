//! What the in-process cluster tests share: the backend's components, and masters, backends,
//! gates and clients on 127.0.0.1 ephemeral ports, found through an embedded master or a real
//! etcd.

#![allow(dead_code)] // each test file uses a part

use std::sync::Arc;
use std::time::Duration;

use nano::prelude::*;
use nano::{Client, Server, Transport};
use nano_cluster::node::{Cluster, MultiLogin, Node};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::common::T;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct Said {
    pub from: String,
    pub node: String,
    pub text: String,
}

/// What a backend reports when one of its sessions closes: (node, session id, uid).
pub type Closed = (String, u64, Option<String>);

pub struct Room {
    node: &'static str,
    group: Group,
    closed: mpsc::UnboundedSender<Closed>,
    parked: Vec<Responder<()>>,
}

#[component]
impl Room {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|room, s: &Session| {
            let _ = room.closed.send((room.node.to_owned(), s.id(), s.uid()));
        });
    }

    /// Binds the name, joins the room, pushes `onJoined`; answers the node that ran it.
    pub fn join(&mut self, s: &Session, name: String) -> Result<String> {
        s.bind(name)?;
        self.group.add(s)?;
        s.push("onJoined", self.node)?;
        Ok(self.node.to_owned())
    }

    /// A notify: broadcast to the room.
    pub fn say(&mut self, s: &Session, text: String) -> Result<()> {
        let said = Said {
            from: s.uid().unwrap_or_default(),
            node: self.node.to_owned(),
            text,
        };
        self.group.broadcast("onSaid", &said)
    }

    /// The session as this backend sees it: (node, id, uid).
    pub fn who(&mut self, s: &Session) -> Result<(String, u64, Option<String>)> {
        Ok((self.node.to_owned(), s.id(), s.uid()))
    }

    pub fn fail(&mut self, _s: &Session) -> Result<()> {
        Err(Error::bad_request("no such room"))
    }

    pub fn kick(&mut self, s: &Session) -> Result<()> {
        s.kick_with_reason(Some("bye"));
        Ok(())
    }

    /// Closes the session without a Kick (a notify).
    pub fn leave(&mut self, s: &Session) -> Result<()> {
        s.close();
        Ok(())
    }

    /// Never answers (until the node stops).
    pub fn hang(&mut self, _s: &Session, reply: Responder<()>) {
        self.parked.push(reply);
    }

    /// The shared data the gate set, as this backend sees it.
    pub fn team(&mut self, s: &Session) -> Result<Option<String>> {
        Ok(s.get_shared::<String>("team"))
    }

    /// For other nodes only.
    #[handler(internal)]
    pub fn members(&mut self, _s: &Session) -> Result<usize> {
        Ok(self.group.count())
    }
}

/// A gate's own component: sets shared session data that travels to the backends.
pub struct Lobby;

#[component]
impl Lobby {
    pub fn team(&mut self, s: &Session, team: String) -> Result<()> {
        s.set_shared("team", &team)
    }
}

/// A service for other nodes only.
pub struct Math;

#[component(internal)]
impl Math {
    pub fn double(&mut self, _s: &Session, n: u64) -> Result<u64> {
        n.checked_mul(2)
            .ok_or_else(|| Error::bad_request("too large"))
    }
}

pub struct Running {
    pub server: Server<Json>,
    pub node: Arc<Node<Json>>,
}

impl Running {
    fn cluster_addr(&self) -> String {
        self.node.local_addr().expect("started").to_string()
    }

    fn tcp(&self) -> std::net::SocketAddr {
        self.server.addr(Transport::Tcp).expect("a tcp listener")
    }
}

/// Where the nodes of a test find each other.
pub enum Registry {
    /// An embedded master (a node of its own, hosting nothing).
    Master(Running),
    /// A real etcd, under a key prefix of the test's own.
    #[cfg(feature = "etcd")]
    Etcd { endpoint: String, prefix: String },
}

impl Registry {
    /// `node` registered here.
    pub fn attach(&self, node: Cluster) -> Cluster {
        match self {
            Registry::Master(m) => node.master(m.cluster_addr()),
            #[cfg(feature = "etcd")]
            Registry::Etcd { endpoint, prefix } => node
                .etcd([endpoint.clone()], prefix.clone())
                .discovery_config(
                    nano_cluster::DiscoveryConfig::default().ttl(Duration::from_secs(2)),
                ),
        }
    }
}

pub async fn master() -> Registry {
    let node = Cluster::new("master").as_master().build::<Json>();
    let server = nano::app()
        .extension(node.clone())
        .start()
        .await
        .expect("master starts");
    Registry::Master(Running { server, node })
}

/// The etcd at `NANO_ETCD_ENDPOINT` (started by `nano-cluster/tests/etcd.sh`), under a prefix
/// no other test or run uses.
#[cfg(feature = "etcd")]
pub fn etcd(test: &str) -> Registry {
    let endpoint = std::env::var("NANO_ETCD_ENDPOINT").expect(
        "NANO_ETCD_ENDPOINT is not set: run nano-cluster/tests/etcd.sh, which starts etcd and sets it",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    Registry::Etcd {
        endpoint,
        prefix: format!("/nano-test/{test}-{}-{nanos}/", std::process::id()),
    }
}

pub async fn backend(
    id: &'static str,
    master: &Registry,
    closed: &mpsc::UnboundedSender<Closed>,
) -> Running {
    let node = master
        .attach(Cluster::new(id))
        .forward_deadline(Duration::from_millis(300))
        .build::<Json>();
    let room = Room {
        node: id,
        group: Group::new("room"),
        closed: closed.clone(),
        parked: Vec::new(),
    };
    let server = nano::app()
        .component(room)
        .component(Math)
        .extension(node.clone())
        .start()
        .await
        .expect("backend starts");
    Running { server, node }
}

pub async fn gate(id: &'static str, master: &Registry) -> Running {
    gate_with(id, master, MultiLogin::default()).await
}

pub async fn gate_with(id: &'static str, master: &Registry, login: MultiLogin) -> Running {
    gate_of(id, master, login, None).await
}

/// A gate whose sessions resume after a dropped connection.
pub async fn gate_resuming(id: &'static str, master: &Registry, resume: nano::Resume) -> Running {
    gate_of(id, master, MultiLogin::default(), Some(resume)).await
}

async fn gate_of(
    id: &'static str,
    master: &Registry,
    login: MultiLogin,
    resume: Option<nano::Resume>,
) -> Running {
    let node = master
        .attach(Cluster::new(id))
        .forward_deadline(Duration::from_millis(300))
        .multi_login(login)
        .build::<Json>();
    let mut app = nano::app()
        .component(Lobby)
        .extension(node.clone())
        .tcp("127.0.0.1:0")
        .admin("127.0.0.1:0");
    if let Some(resume) = resume {
        app = app.resume(resume);
    }
    let server = app.start().await.expect("gate starts");
    assert!(
        node.wait_for_service("Room", T).await,
        "{id} sees a Room backend"
    );
    Running { server, node }
}

pub async fn client(gate: &Running) -> Client {
    timeout(T, Client::connect_tcp(gate.tcp()))
        .await
        .expect("connect in time")
        .expect("connect")
}

pub async fn next_closed(rx: &mut mpsc::UnboundedReceiver<Closed>) -> Closed {
    timeout(T, rx.recv())
        .await
        .expect("a session-closed callback in time")
        .expect("backend alive")
}

pub fn code_of(e: &nano::ClientError) -> String {
    e.server_error()
        .map(|e| e.code().to_owned())
        .unwrap_or_else(|| format!("not an error response: {e}"))
}
