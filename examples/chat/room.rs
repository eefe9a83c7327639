//! The chat room component: go-nano's chat demo, route for route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nano::prelude::*;
use schemars::JsonSchema;

/// `room.message` payload, broadcast as `onMessage`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub struct UserMessage {
    /// Sender's display name.
    pub name: String,
    /// The text.
    pub content: String,
}

/// `onNewUser` and `onLeave` pushes.
#[derive(Serialize, JsonSchema)]
pub struct Notice {
    /// What happened, for display.
    content: String,
}

/// `onMembers` push.
#[derive(Serialize, JsonSchema)]
pub struct Members {
    /// Everyone in the room before the one who joined.
    members: Vec<String>,
}

/// `room.join`'s answer (go-nano's `{"code": 0, "result": "success"}`).
#[derive(Serialize, JsonSchema)]
pub struct Joined {
    /// 0.
    code: i32,
    /// `"success"`.
    result: String,
}

/// Inbound and outbound message counters (go-nano chat's `stats` pipeline).
#[derive(Default)]
pub struct Stats {
    /// Requests and notifies received.
    pub inbound: AtomicU64,
    /// Responses and pushes sent.
    pub outbound: AtomicU64,
}

/// The room: everyone who joined.
pub struct Room {
    group: Group,
    stats: Arc<Stats>,
    report_every: Duration,
}

impl Room {
    /// An empty room that logs its size and traffic every `report_every`.
    pub fn new(stats: Arc<Stats>, report_every: Duration) -> Self {
        Room {
            group: Group::new("room"),
            stats,
            report_every,
        }
    }

    /// Adds the traffic-stats interceptors to a pipeline.
    pub fn count_traffic(stats: &Arc<Stats>, p: &mut nano::Pipeline) {
        let (inbound, outbound) = (stats.clone(), stats.clone());
        p.inbound.push_back(move |_s, _m| {
            inbound.inbound.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        p.outbound.push_back(move |_s, _m| {
            outbound.outbound.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
    }
}

#[component(
    name = "room",
    rename_all = "lowercase",
    pushes(onMembers = Members, onNewUser = Notice, onMessage = UserMessage, onLeave = Notice)
)]
impl Room {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|room, s: &Session| {
            // The session has already left the group (sessions leave their groups on close);
            // tell the others, an extra push that go-nano clients simply ignore.
            if s.uid().is_some() {
                tracing::info!(id = s.id(), "left the room");
                let _ = room.group.broadcast(
                    "onLeave",
                    &Notice {
                        content: format!("User left: {}", s.id()),
                    },
                );
            }
        });
        ctx.every(self.report_every, |room| {
            tracing::info!(
                members = room.group.count(),
                inbound = room.stats.inbound.load(Ordering::Relaxed),
                outbound = room.stats.outbound.load(Ordering::Relaxed),
                "room stats"
            );
        });
    }

    /// `room.join`: any or no payload.
    pub fn join(&mut self, s: &Session) -> Result<Joined> {
        s.bind(s.id().to_string())?;
        s.push(
            "onMembers",
            &Members {
                members: self.group.members(),
            },
        )?;
        self.group.broadcast(
            "onNewUser",
            &Notice {
                content: format!("New user: {}", s.id()),
            },
        )?;
        self.group.add(s)?;
        Ok(Joined {
            code: 0,
            result: "success".into(),
        })
    }

    /// `room.message`: refused before joining.
    pub fn message(&mut self, s: &Session, msg: UserMessage) -> Result<()> {
        if !self.group.contains_session(s) {
            return Err(Error::forbidden("join the room first"));
        }
        self.group.broadcast("onMessage", &msg)
    }
}
