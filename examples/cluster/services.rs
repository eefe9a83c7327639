//! The three services of go-nano's cluster demo, with its message shapes (camelCase JSON).

use std::collections::BTreeMap;

use nano::prelude::*;

/// `BindService.Login`'s request.
#[derive(Deserialize, Debug)]
pub struct LoginRequest {
    pub nickname: String,
}

/// `BindService.Login`'s answer: go-nano's `{code}`, plus a line for the page to show.
#[derive(Serialize, Debug)]
pub struct LoginResponse {
    pub code: i32,
    pub result: String,
}

/// What the gate tells the master about a new user.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct NewUserRequest {
    pub nickname: String,
    pub gate_uid: i64,
}

/// What the master tells a chat node about a new user.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoomRequest {
    pub nickname: String,
    pub gate_uid: i64,
    pub master_uid: i64,
}

/// A chat node's message count for the master.
#[derive(Serialize, Deserialize, Debug)]
pub struct MasterStats {
    pub uid: i64,
}

/// A chat line, as the client sends it and every member receives it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SyncMessage {
    pub name: String,
    pub content: String,
}

/// Push `onMembers`: the nicknames already online, comma-separated.
#[derive(Serialize, Debug)]
pub struct ExistsMembersResponse {
    pub members: String,
}

/// Push `onNewUser`.
#[derive(Serialize, Debug)]
pub struct NewUserBroadcast {
    pub content: String,
}

/// Push `onBalance`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UserBalanceResponse {
    pub current_balance: i64,
}

/// The gate's service: logs a client in.
#[derive(Default)]
pub struct BindService {
    next_gate_uid: i64,
}

#[component]
impl BindService {
    /// Asks the master to register the user (on behalf of the session), then answers.
    pub fn login(&mut self, s: &Session, req: LoginRequest) -> Result<LoginResponse> {
        self.next_gate_uid += 1;
        let new_user = NewUserRequest {
            nickname: req.nickname.clone(),
            gate_uid: self.next_gate_uid,
        };
        s.rpc("TopicService.NewUser", &new_user)?;
        Ok(LoginResponse {
            code: 0,
            result: format!("Welcome, {}", req.nickname),
        })
    }
}

/// A user the master knows.
struct User {
    nickname: String,
    gate_uid: i64,
    balance: i64,
    messages: u64,
}

/// The master's service: the users and their balances.
#[derive(Default)]
pub struct TopicService {
    next_uid: i64,
    users: BTreeMap<i64, User>,
}

#[component(internal)]
impl TopicService {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|topic, s: &Session| {
            let Some(uid) = s.uid().and_then(|u| u.parse::<i64>().ok()) else {
                return;
            };
            if let Some(user) = topic.users.remove(&uid) {
                tracing::info!(uid, nickname = %user.nickname, gate_uid = user.gate_uid, messages = user.messages, "user left");
            }
        });
    }

    /// Binds a master uid, pushes who is online, and sends the user to a chat room.
    pub fn new_user(&mut self, s: &Session, req: NewUserRequest) -> Result<()> {
        self.next_uid += 1;
        let uid = self.next_uid;
        s.bind(uid.to_string())?;
        let members: Vec<&str> = self.users.values().map(|u| u.nickname.as_str()).collect();
        s.push(
            "onMembers",
            &ExistsMembersResponse {
                members: members.join(","),
            },
        )?;
        tracing::info!(uid, nickname = %req.nickname, gate_uid = req.gate_uid, "new user");
        self.users.insert(
            uid,
            User {
                nickname: req.nickname.clone(),
                gate_uid: req.gate_uid,
                balance: 1000,
                messages: 0,
            },
        );
        s.rpc(
            "RoomService.JoinRoom",
            &JoinRoomRequest {
                nickname: req.nickname,
                gate_uid: req.gate_uid,
                master_uid: uid,
            },
        )
    }

    /// One more message from a user: its balance goes down by one.
    pub fn stats(&mut self, s: &Session, req: MasterStats) -> Result<()> {
        let user = self
            .users
            .get_mut(&req.uid)
            .ok_or_else(|| Error::not_found(format!("user not found: {}", req.uid)))?;
        user.messages += 1;
        user.balance -= 1;
        s.push(
            "onBalance",
            &UserBalanceResponse {
                current_balance: user.balance,
            },
        )
    }
}

/// A chat node's service: one room for everyone.
pub struct RoomService {
    group: Group,
}

impl Default for RoomService {
    fn default() -> Self {
        RoomService {
            group: Group::new("all-users"),
        }
    }
}

#[component]
impl RoomService {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.on_session_closed(|_room, s: &Session| {
            // The session has left the group already.
            tracing::info!(uid = ?s.uid(), "user session disconnected");
        });
    }

    /// Called by the master: binds the user, tells the room, adds the user to it.
    #[handler(internal)]
    pub fn join_room(&mut self, s: &Session, req: JoinRoomRequest) -> Result<()> {
        s.bind(req.master_uid.to_string())?;
        self.group.broadcast(
            "onNewUser",
            &NewUserBroadcast {
                content: format!("User user join: {}", req.nickname),
            },
        )?;
        self.group.add(s)
    }

    /// A chat line: counted on the master, sent to the room.
    pub fn sync_message(&mut self, s: &Session, msg: SyncMessage) -> Result<()> {
        let uid = s
            .uid()
            .and_then(|u| u.parse::<i64>().ok())
            .ok_or_else(|| Error::forbidden("log in first"))?;
        s.rpc("TopicService.Stats", &MasterStats { uid })?;
        self.group.broadcast("onMessage", &msg)
    }
}
