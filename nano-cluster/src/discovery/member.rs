//! [`NodeId`] and [`Member`]: who a node is, where it listens, what it hosts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::proto::nano::discovery::v1 as pb;

/// Longest node id, address, service name, label key or label value accepted, in bytes.
pub const MAX_FIELD_LEN: usize = 256;
/// Most services one member may announce.
pub const MAX_SERVICES: usize = 1024;
/// Most labels one member may carry.
pub const MAX_LABELS: usize = 64;

/// A node's id, unique in the cluster.
///
/// # Examples
///
/// ```
/// use nano_cluster::NodeId;
/// let id = NodeId::from("chat-1");
/// assert_eq!(id.as_str(), "chat-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        NodeId(id.to_owned())
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        NodeId(id)
    }
}

/// One node of the cluster as discovery knows it: its id, its cluster (gRPC) address, the
/// services (component names) it hosts, and free-form labels.
///
/// # Examples
///
/// ```
/// use nano_cluster::Member;
/// let me = Member::new("chat-1", "127.0.0.1:34580")
///     .service("RoomService")
///     .label("zone", "eu");
/// assert!(me.hosts("RoomService"));
/// assert!(!me.hosts("TopicService"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's unique id.
    pub id: NodeId,
    /// Where the node's cluster server listens (`host:port`).
    pub address: String,
    /// The services (component names) the node hosts.
    #[serde(default)]
    pub services: Vec<String>,
    /// Free-form labels (zone, version, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Chosen at random by [`Member::new`], so each process is a new incarnation of its node
    /// id. A watcher that sees a known id with another incarnation reports
    /// [`Change::Remove`](super::Change) then [`Change::Insert`](super::Change): the node
    /// restarted, and whatever lived on the old one is gone. A node that re-registers after
    /// losing its lease keeps its incarnation.
    #[serde(default)]
    pub incarnation: u64,
}

impl Member {
    /// A member with no services and no labels.
    pub fn new(id: impl Into<NodeId>, address: impl Into<String>) -> Self {
        Member {
            id: id.into(),
            address: address.into(),
            services: Vec::new(),
            labels: BTreeMap::new(),
            incarnation: super::backoff::random(),
        }
    }

    /// Adds a hosted service (a component name such as `"RoomService"`).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.services.push(name.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Whether the member hosts `service`.
    pub fn hosts(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == service)
    }

    /// Checks the limits a member must respect (non-empty id and address, bounded lengths and
    /// counts), since members also arrive from the network.
    ///
    /// # Errors
    ///
    /// A description of the first rule broken.
    pub fn validate(&self) -> Result<(), String> {
        let field = |what: &str, s: &str| {
            if s.len() > MAX_FIELD_LEN {
                Err(format!("{what} longer than {MAX_FIELD_LEN} bytes"))
            } else {
                Ok(())
            }
        };
        if self.id.0.is_empty() {
            return Err("empty node id".into());
        }
        if self.address.is_empty() {
            return Err(format!("node {}: empty address", self.id));
        }
        field("node id", &self.id.0)?;
        field("address", &self.address)?;
        if self.services.len() > MAX_SERVICES {
            return Err(format!("more than {MAX_SERVICES} services"));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
        for s in &self.services {
            field("service name", s)?;
        }
        for (k, v) in &self.labels {
            field("label key", k)?;
            field("label value", v)?;
        }
        Ok(())
    }
}

impl From<&Member> for pb::Member {
    fn from(m: &Member) -> Self {
        pb::Member {
            id: m.id.0.clone(),
            address: m.address.clone(),
            services: m.services.clone(),
            labels: m
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            incarnation: m.incarnation,
        }
    }
}

impl TryFrom<pb::Member> for Member {
    type Error = String;

    fn try_from(m: pb::Member) -> Result<Self, String> {
        let member = Member {
            id: NodeId(m.id),
            address: m.address,
            services: m.services,
            labels: m.labels.into_iter().collect(),
            incarnation: m.incarnation,
        };
        member.validate()?;
        Ok(member)
    }
}
