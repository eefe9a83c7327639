//! Broadcast to a group of 10,000 sessions over real TCP connections.
//!
//! The server (`--serve bcast`, JSON serializer) has a `Bcast` component: `Bcast.Join` adds the
//! session to one group, `Bcast.Fire` broadcasts a [`Counted`] value to it — a payload whose
//! `Serialize` impl counts its calls — and answers how many serializations that broadcast
//! took. The client measures, for each broadcast, the time from sending `Bcast.Fire` to the
//! moment the last member's connection has read its push.
//!
//! The client side ([`run`]) also drives the cluster bench's backend (`benches/cluster/`),
//! whose component answers the same routes: members may join through several gates, the
//! broadcast is fired on a connection of its own, and the node-to-node messages a broadcast
//! took are counted when the server reports its link counters.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nano::prelude::*;
use nano::protocol::MessageType;
use nano::Server;
use serde::ser::SerializeStruct;
use tokio::sync::{mpsc, Semaphore};

use crate::conn::{Conn, Target};

/// Calls of `Counted::serialize` in this process.
static SERIALIZATIONS: AtomicU64 = AtomicU64::new(0);

const TEXT: &str = "broadcast to every member of the group";
/// The push route of the broadcasts.
pub const ROUTE_PUSH: &str = "onBcast";

/// Calls of [`Counted::serialize`] in this process so far.
pub fn serializations() -> u64 {
    SERIALIZATIONS.load(Ordering::Relaxed)
}

/// The broadcast payload; every serialization is counted.
pub struct Counted {
    pub seq: u64,
}

impl Serialize for Counted {
    fn serialize<Ser: serde::Serializer>(
        &self,
        s: Ser,
    ) -> std::result::Result<Ser::Ok, Ser::Error> {
        SERIALIZATIONS.fetch_add(1, Ordering::Relaxed);
        let mut st = s.serialize_struct("Counted", 2)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("text", TEXT)?;
        st.end()
    }
}

/// What `Bcast.Fire` answers.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct FireReply {
    /// Serializations done by this broadcast.
    pub serializations: u64,
    /// Group size.
    pub members: usize,
    /// Time the server spent in `Group::broadcast` (encode + queue on every member), µs.
    pub enqueue_us: f64,
    /// A cluster backend's node links just before the broadcast: frames sent so far, by peer
    /// id (empty on a single node). When present, the client asks `Bcast.Links` for the same
    /// counters once every member has its push, and the difference is what the broadcast took.
    #[serde(default)]
    pub link_frames: BTreeMap<String, u64>,
}

/// The component of the broadcast server.
pub struct Bcast {
    group: Group,
}

#[component]
impl Bcast {
    /// `Bcast.Join`: joins the group; answers its size.
    pub fn join(&mut self, s: &Session) -> Result<usize> {
        self.group.add(s)?;
        Ok(self.group.count())
    }

    /// `Bcast.Fire`: broadcasts `Counted { seq }` to the group.
    pub fn fire(&mut self, _s: &Session, seq: u64) -> Result<FireReply> {
        fire(&self.group, seq, BTreeMap::new())
    }
}

/// Broadcasts `Counted { seq }` to `group`, timing it and counting its serializations;
/// `link_frames` are the caller's node-link counters from just before.
pub fn fire(group: &Group, seq: u64, link_frames: BTreeMap<String, u64>) -> Result<FireReply> {
    let before = serializations();
    let t = Instant::now();
    group.broadcast(ROUTE_PUSH, &Counted { seq })?;
    let enqueue_us = t.elapsed().as_secs_f64() * 1e6;
    Ok(FireReply {
        serializations: serializations() - before,
        members: group.count(),
        enqueue_us,
        link_frames,
    })
}

/// Starts the broadcast server (child process side).
pub async fn start_server(
    tcp: &str,
    ws: &str,
    heartbeat: Option<Duration>,
) -> std::io::Result<Server<Json>> {
    nano::app()
        .component(Bcast {
            group: Group::new("bench"),
        })
        .push_routes([ROUTE_PUSH])
        .heartbeat(heartbeat)
        .tcp(tcp)
        .websocket(ws, crate::serve::WS_PATH)
        .start()
        .await
}

/// The measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastResult {
    pub members: usize,
    pub joined: usize,
    pub rounds: usize,
    /// Time from `Bcast.Fire` sent to the last member's push read, per round, ms.
    pub reach_all_ms: Vec<f64>,
    pub reach_all_ms_median: f64,
    pub reach_all_ms_max: f64,
    /// Time from `Bcast.Fire` sent to the first member's push read (median), ms.
    pub first_ms_median: f64,
    /// Server time inside `Group::broadcast` (median), µs.
    pub enqueue_us_median: f64,
    /// Serializations per broadcast (max over rounds); must be 1.
    pub serializations_per_broadcast: u64,
    /// Node-to-node messages (link frames) the server sent for each broadcast, by peer, per
    /// round; empty on a single node.
    pub node_messages: Vec<BTreeMap<String, u64>>,
    /// Pushes that did not arrive, wrong payloads, connection failures.
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_rss_kib: Option<u64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Opens `members` connections that join the group (member `i` through
/// `members_via[i % len]`), fires `rounds` broadcasts on a connection to `firer`.
pub async fn run(
    members_via: &[Target],
    firer: &Target,
    members: usize,
    rounds: usize,
    sources: Vec<IpAddr>,
    server_pid: Option<u32>,
) -> BroadcastResult {
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let note = {
        let errors = errors.clone();
        let first_error = first_error.clone();
        move |e: String| {
            errors.fetch_add(1, Ordering::Relaxed);
            first_error.lock().unwrap().get_or_insert(e);
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let joined = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(128));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let t_join = Instant::now();
    for i in 0..members {
        let target = members_via[i % members_via.len()].clone();
        let src = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let (tx, joined, settled, connecting, note, stop) = (
            tx.clone(),
            joined.clone(),
            settled.clone(),
            connecting.clone(),
            note.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire().await.expect("open");
            let conn = join(&target, src, i as u32).await;
            drop(permit);
            settled.fetch_add(1, Ordering::Release);
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    note(format!("join: {e}"));
                    return;
                }
            };
            joined.fetch_add(1, Ordering::Relaxed);
            member_loop(&mut conn, &tx, &note, &stop).await;
        }));
    }
    drop(tx);
    while settled.load(Ordering::Acquire) < members && t_join.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = joined.load(Ordering::Relaxed);
    eprintln!(
        "broadcast: {joined}/{members} members joined in {:.1}s",
        t_join.elapsed().as_secs_f64()
    );

    let mut reach = Vec::new();
    let mut first = Vec::new();
    let mut enqueue = Vec::new();
    let mut ser_max = 0;
    let mut node_messages = Vec::new();
    match Conn::open(firer, None, u32::MAX).await {
        Err(e) => note(format!("firer: {e}")),
        Ok(mut firer) => {
            for round in 1..=rounds as u64 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (id, packet) =
                    firer.json_request_packet("Bcast.Fire", &serde_json::json!(round));
                let t0 = Instant::now();
                let mut links_before = BTreeMap::new();
                if let Err(e) = firer.send(&packet).await {
                    note(format!("fire: {e}"));
                    break;
                }
                let reply =
                    tokio::time::timeout(Duration::from_secs(30), firer.recv_message()).await;
                match reply {
                    Ok(Ok(m)) if m.kind == MessageType::Response && m.id == id && !m.error => {
                        match serde_json::from_slice::<FireReply>(&m.payload) {
                            Ok(r) => {
                                ser_max = ser_max.max(r.serializations);
                                enqueue.push(r.enqueue_us);
                                links_before = r.link_frames;
                            }
                            Err(e) => note(format!("fire reply: {e}")),
                        }
                    }
                    other => {
                        note(format!("fire reply: {other:?}"));
                        break;
                    }
                }
                // Every joined member's push for this round.
                let mut got = 0;
                let mut last = t0;
                let mut earliest: Option<Instant> = None;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while got < joined {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((seq, at))) if seq == round => {
                            got += 1;
                            last = last.max(at);
                            earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
                        }
                        Ok(Some((seq, _))) => note(format!("push of round {seq} in round {round}")),
                        Ok(None) | Err(_) => break,
                    }
                }
                if got < joined {
                    note(format!(
                        "round {round}: {} members got no push",
                        joined - got
                    ));
                }
                reach.push(last.duration_since(t0).as_secs_f64() * 1e3);
                if let Some(e) = earliest {
                    first.push(e.duration_since(t0).as_secs_f64() * 1e3);
                }
                if !links_before.is_empty() {
                    match links(&mut firer).await {
                        Ok(after) => node_messages.push(
                            after
                                .into_iter()
                                .map(|(peer, n)| {
                                    let before = links_before.get(&peer).copied().unwrap_or(0);
                                    (peer, n.saturating_sub(before))
                                })
                                .collect(),
                        ),
                        Err(e) => note(format!("links: {e}")),
                    }
                }
            }
        }
    }
    let rss = server_pid.and_then(crate::procfs::rss_kib);
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    let first_error = first_error.lock().unwrap().clone();
    BroadcastResult {
        members,
        joined,
        rounds: reach.len(),
        reach_all_ms_median: median(&reach),
        reach_all_ms_max: reach.iter().copied().fold(f64::NAN, f64::max),
        reach_all_ms: reach,
        first_ms_median: median(&first),
        enqueue_us_median: median(&enqueue),
        serializations_per_broadcast: ser_max,
        node_messages,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        server_rss_kib: rss,
    }
}

/// `Bcast.Links`: the server's link counters (frames sent, by peer).
async fn links(conn: &mut Conn) -> std::io::Result<BTreeMap<String, u64>> {
    let (id, packet) = conn.json_request_packet("Bcast.Links", &serde_json::Value::Null);
    conn.send(&packet).await?;
    let m = tokio::time::timeout(Duration::from_secs(30), conn.recv_message())
        .await
        .map_err(|_| std::io::Error::other("Bcast.Links timeout"))??;
    if m.kind != MessageType::Response || m.id != id || m.error {
        return Err(std::io::Error::other(format!(
            "Bcast.Links answered with {:?} error {}: {}",
            m.kind,
            m.error,
            String::from_utf8_lossy(&m.payload)
        )));
    }
    serde_json::from_slice(&m.payload).map_err(std::io::Error::other)
}

async fn join(target: &Target, src: Option<IpAddr>, salt: u32) -> std::io::Result<Conn> {
    let mut conn = tokio::time::timeout(Duration::from_secs(30), Conn::open(target, src, salt))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    let (id, packet) = conn.json_request_packet("Bcast.Join", &serde_json::Value::Null);
    conn.send(&packet).await?;
    let m = tokio::time::timeout(Duration::from_secs(30), conn.recv_message())
        .await
        .map_err(|_| std::io::Error::other("join timeout"))??;
    if m.kind != MessageType::Response || m.id != id || m.error {
        return Err(std::io::Error::other(format!(
            "join answered with {:?} error {}: {}",
            m.kind,
            m.error,
            String::from_utf8_lossy(&m.payload)
        )));
    }
    Ok(conn)
}

/// A member: reads pushes (verifying them), heartbeats at the announced interval.
async fn member_loop(
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<(u64, Instant)>,
    note: &(impl Fn(String) + Sync),
    stop: &tokio::sync::Notify,
) {
    let period = conn.heartbeat.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            m = conn.recv_message() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => { note(format!("member read: {e}")); return; }
                };
                let at = Instant::now();
                if !conn.is_push(&m, ROUTE_PUSH) {
                    note(format!("member got {:?}", m.kind));
                    continue;
                }
                match serde_json::from_slice::<serde_json::Value>(&m.payload) {
                    Ok(v) if v["text"] == TEXT => {
                        let _ = tx.send((v["seq"].as_u64().unwrap_or(0), at));
                    }
                    other => note(format!("bad push payload: {other:?}")),
                }
            }
            _ = tick.tick() => {
                if let Err(e) = conn.send_heartbeat().await {
                    note(format!("member heartbeat: {e}"));
                    return;
                }
            }
            _ = stop.notified() => return,
        }
    }
}
