//! The embedded master against real sockets on 127.0.0.1: joins with services, deregistration,
//! lease lapse, the master killed and restarted on the same address, a busy address.
//! Every wait is on the change stream, bounded by a timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use nano_cluster::{
    Change, Discovery, DiscoveryConfig, DiscoveryError, Embedded, Member, NodeId, Watch,
};
use tokio::time::{timeout, Instant};

const TTL: Duration = Duration::from_secs(1);
/// Upper bound for anything that should happen "promptly".
const PROMPT: Duration = Duration::from_secs(5);

fn config() -> DiscoveryConfig {
    DiscoveryConfig::default().ttl(TTL)
}

/// What a watcher has seen so far.
struct Seen {
    watch: Watch,
    members: BTreeMap<NodeId, Member>,
    registered: bool,
    log: Vec<Change>,
}

impl Seen {
    fn new(d: &impl Discovery) -> Self {
        Seen {
            watch: d.watch(),
            members: BTreeMap::new(),
            registered: false,
            log: Vec::new(),
        }
    }

    fn apply(&mut self, change: Change) {
        match &change {
            Change::Insert(id, m) => {
                self.members.insert(id.clone(), m.clone());
            }
            Change::Remove(id) => {
                self.members.remove(id);
            }
            Change::LeaseLost => self.registered = false,
            Change::Registered => self.registered = true,
        }
        self.log.push(change);
    }

    /// Applies changes until `done` holds; panics after `bound`.
    async fn until(&mut self, bound: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + bound;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.watch.next()).await {
                Ok(Some(change)) => self.apply(change),
                Ok(None) => panic!("watch ended while waiting for {what}; saw {:?}", self.log),
                Err(_) => panic!("no {what} within {bound:?}; saw {:?}", self.log),
            }
        }
    }

    fn has(&self, id: &str) -> bool {
        self.members.contains_key(&NodeId::from(id))
    }

    fn ids(&self) -> Vec<&str> {
        self.members.keys().map(NodeId::as_str).collect()
    }
}

async fn start_master() -> Embedded {
    Embedded::master(
        "127.0.0.1:0",
        Member::new("master", "127.0.0.1:1").service("TopicService"),
        config(),
    )
    .await
    .expect("master starts")
}

/// A new master on `addr`, once the dropped one's listener is closed (an aborted task is
/// dropped on a later turn of the runtime): bounded, yielding, no sleep.
async fn restart_master(addr: &str) -> Embedded {
    let deadline = Instant::now() + PROMPT;
    loop {
        let me = Member::new("master", "127.0.0.1:1").service("TopicService");
        match Embedded::master(addr, me, config()).await {
            Ok(master) => return master,
            Err(DiscoveryError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("restarted master: {e}"),
        }
    }
}

fn join(master: &str, id: &str, service: &str) -> Embedded {
    Embedded::member(
        master,
        Member::new(id, format!("{id}.local:1")).service(service),
        config(),
    )
    .expect("member starts")
}

/// A master and members a, b, c, each registered and seeing all four.
async fn cluster() -> (Embedded, String, Vec<Embedded>, Vec<Seen>) {
    cluster_with(config()).await
}

async fn cluster_with(config: DiscoveryConfig) -> (Embedded, String, Vec<Embedded>, Vec<Seen>) {
    let master = Embedded::master(
        "127.0.0.1:0",
        Member::new("master", "127.0.0.1:1").service("TopicService"),
        config.clone(),
    )
    .await
    .expect("master starts");
    let addr = master.master_addr().unwrap().to_string();
    let join = |id: &str, service: &str| {
        Embedded::member(
            &addr,
            Member::new(id, format!("{id}.local:1")).service(service),
            config.clone(),
        )
        .expect("member starts")
    };
    let members: Vec<Embedded> = [
        ("a", "RoomService"),
        ("b", "ChatService"),
        ("c", "GateService"),
    ]
    .iter()
    .map(|(id, svc)| join(id, svc))
    .collect();
    let mut seen: Vec<Seen> = members.iter().map(Seen::new).collect();
    for s in &mut seen {
        s.until(PROMPT, "all four members", |s| {
            s.registered && s.ids() == ["a", "b", "c", "master"]
        })
        .await;
    }
    (master, addr, members, seen)
}

#[tokio::test]
async fn master_and_three_members_see_each_others_joins_with_their_services() {
    let (master, _addr, _members, seen) = cluster().await;
    let mut on_master = Seen::new(&master);
    on_master
        .until(PROMPT, "all four on the master", |s| s.members.len() == 4)
        .await;
    assert!(master.is_registered());
    for s in seen.iter().chain([&on_master]) {
        assert!(s.members[&NodeId::from("master")].hosts("TopicService"));
        assert!(s.members[&NodeId::from("a")].hosts("RoomService"));
        assert!(s.members[&NodeId::from("b")].hosts("ChatService"));
        assert!(s.members[&NodeId::from("c")].hosts("GateService"));
        assert_eq!(s.members[&NodeId::from("b")].address, "b.local:1");
    }
    assert_eq!(master.members().len(), 4);
}

#[tokio::test]
async fn a_member_that_deregisters_is_removed_at_once() {
    let (_master, _addr, members, mut seen) = cluster().await;
    let started = Instant::now();
    members[2].shutdown().await.expect("deregister");
    assert!(!members[2].is_registered());
    for s in &mut seen[..2] {
        s.until(PROMPT, "c removed", |s| !s.has("c")).await;
    }
    // Well before the lease could have lapsed: this was the deregistration.
    assert!(
        started.elapsed() < TTL / 2,
        "removed after {:?}",
        started.elapsed()
    );
    // The deregistered member's own watch ends.
    let mut own = members[2].watch();
    while let Ok(Some(_)) = timeout(PROMPT, own.next()).await {}
    assert!(timeout(Duration::ZERO, own.next())
        .await
        .is_ok_and(|c| c.is_none()));
}

#[tokio::test]
async fn a_member_whose_keepalive_stops_is_removed_within_its_ttl() {
    // A longer TTL than the other tests: slack for a loaded machine on both bounds.
    let ttl = Duration::from_secs(2);
    let (_master, _addr, mut members, mut seen) =
        cluster_with(DiscoveryConfig::default().ttl(ttl)).await;
    let c = members.pop().unwrap();
    let dropped = Instant::now();
    drop(c); // stops its keep-alive without deregistering, as a crash would
    for s in &mut seen[..2] {
        s.until(ttl * 3, "c removed", |s| !s.has("c")).await;
    }
    let after = dropped.elapsed();
    // Its last keep-alive was at most one interval (TTL / 3) before the drop.
    assert!(
        after >= ttl / 2,
        "removed after {after:?}: too early for a lapsed lease"
    );
    assert!(
        after <= ttl + ttl / 2,
        "removed after {after:?}: later than its TTL allows"
    );
    assert_eq!(seen[0].ids(), ["a", "b", "master"]);
}

#[tokio::test]
async fn a_master_that_shuts_down_is_seen_leaving() {
    let (master, _addr, _members, mut seen) = cluster().await;
    master.shutdown().await.expect("shutdown");
    for s in &mut seen {
        s.until(PROMPT, "the master removed", |s| !s.has("master"))
            .await;
        assert_eq!(s.ids(), ["a", "b", "c"]);
    }
}

#[tokio::test]
async fn a_member_that_died_while_the_master_was_down_is_removed_once_a_new_master_settles() {
    let (master, addr, mut members, mut seen) = cluster().await;
    drop(master);
    drop(members.pop()); // c dies while nobody can notice
    let restarted = Instant::now();
    let _master = restart_master(&addr).await;
    for s in &mut seen[..2] {
        s.until(TTL * 4, "c removed", |s| !s.has("c")).await;
        assert!(s.has("a") && s.has("b") && s.has("master"), "{:?}", s.ids());
    }
    // Not before the new master has given the live members a TTL to come back.
    assert!(
        restarted.elapsed() >= TTL,
        "removed after {:?}",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn members_keep_their_views_while_the_master_is_down_and_rejoin_a_new_one() {
    let (master, addr, members, mut seen) = cluster().await;
    drop(master);
    // Nobody can renew: each member notices its lease is lost, but keeps every peer.
    for s in &mut seen {
        s.until(TTL * 3, "lease lost", |s| !s.registered).await;
        assert_eq!(s.ids(), ["a", "b", "c", "master"]);
        assert!(
            s.log.iter().all(|c| !matches!(c, Change::Remove(_))),
            "{:?}",
            s.log
        );
    }
    for m in &members {
        assert_eq!(m.members().len(), 4, "{:?}", m.members());
    }

    // A new master on the same address: the members notice and register again.
    let master = restart_master(&addr).await;
    for s in &mut seen {
        s.until(PROMPT, "registered again", |s| s.registered).await;
    }
    let mut on_master = Seen::new(&master);
    on_master
        .until(PROMPT, "the members relearnt", |s| s.members.len() == 4)
        .await;

    // A member joining after that is seen by the old ones.
    let d = join(&addr, "d", "RoomService");
    for s in &mut seen {
        let restarted = master.local().incarnation;
        s.until(PROMPT, "d joined, the new master seen", |s| {
            s.has("d")
                && s.members
                    .get(&NodeId::from("master"))
                    .is_some_and(|m| m.incarnation == restarted)
        })
        .await;
        assert!(s.members[&NodeId::from("d")].hosts("RoomService"));
        assert_eq!(s.ids(), ["a", "b", "c", "d", "master"]);
    }
    // Nobody was dropped on the way, except the master: a new process (a new incarnation), so
    // it was reported as a remove and an insert.
    for s in &seen {
        let removed: Vec<&str> = s
            .log
            .iter()
            .filter_map(|c| match c {
                Change::Remove(id) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, ["master"], "{:?}", s.log);
        let reinserted = s
            .log
            .iter()
            .rposition(|c| matches!(c, Change::Insert(id, _) if id.as_str() == "master"));
        let removal = s.log.iter().position(|c| matches!(c, Change::Remove(_)));
        assert!(reinserted > removal, "{:?}", s.log);
    }
    assert_eq!(
        seen[0].members[&NodeId::from("master")].incarnation,
        master.local().incarnation
    );
    drop(d);
}

#[tokio::test]
async fn a_member_started_before_the_master_registers_when_it_comes() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap().to_string();
    drop(probe);
    let a = join(&addr, "a", "RoomService");
    let mut seen = Seen::new(&a);
    let master = Embedded::master(&addr, Member::new("master", "127.0.0.1:1"), config())
        .await
        .expect("master starts");
    seen.until(PROMPT, "registered and seeing the master", |s| {
        s.registered && s.ids() == ["a", "master"]
    })
    .await;
    drop(master);
}

#[tokio::test]
async fn a_busy_address_is_a_clear_error_not_a_hang() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let result = timeout(
        PROMPT,
        Embedded::master(&addr, Member::new("m", "x:1"), config()),
    )
    .await
    .expect("answers promptly");
    let err = result.expect_err("the address is taken");
    assert!(matches!(err, DiscoveryError::Bind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&addr) && text.contains("cannot listen"),
        "{text}"
    );
}

#[tokio::test]
async fn invalid_members_and_addresses_are_refused() {
    let err = Embedded::member("127.0.0.1:1", Member::new("", "x:1"), config()).unwrap_err();
    assert!(matches!(err, DiscoveryError::InvalidMember(_)), "{err:?}");
    let long = "s".repeat(nano_cluster::MAX_FIELD_LEN + 1);
    let err = Embedded::member(
        "127.0.0.1:1",
        Member::new("a", "x:1").service(long),
        config(),
    )
    .unwrap_err();
    assert!(matches!(err, DiscoveryError::InvalidMember(_)), "{err:?}");
    let err =
        Embedded::member("http://127.0.0.1:1", Member::new("a", "x:1"), config()).unwrap_err();
    assert!(matches!(err, DiscoveryError::InvalidAddress(_)), "{err:?}");
}

#[tokio::test]
async fn the_master_refuses_a_member_claiming_its_own_id() {
    let master = start_master().await;
    let addr = master.master_addr().unwrap().to_string();
    let mut client =
        nano_cluster::proto::nano::discovery::v1::master_client::MasterClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap();
    let status = client
        .register(nano_cluster::proto::nano::discovery::v1::RegisterRequest {
            member: Some((&Member::new("master", "evil:1")).into()),
            ttl_ms: 1000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let status = client
        .register(nano_cluster::proto::nano::discovery::v1::RegisterRequest {
            member: None,
            ttl_ms: 1000,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(master.members()[0].address, "127.0.0.1:1");
}

#[tokio::test]
async fn the_master_service_can_be_served_on_a_server_of_ones_own() {
    let (master, service) = Embedded::master_service(
        Member::new("master", "127.0.0.1:1").service("TopicService"),
        config(),
    )
    .unwrap();
    assert_eq!(master.master_addr(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let a = join(&addr, "a", "RoomService");
    let mut seen = Seen::new(&a);
    seen.until(PROMPT, "a registered, seeing the master", |s| {
        s.registered && s.ids() == ["a", "master"]
    })
    .await;
    let mut on_master = Seen::new(&master);
    on_master
        .until(PROMPT, "a on the master", |s| s.has("a"))
        .await;
    // Once the handle is gone the service refuses: a loses its lease but keeps its view.
    drop(master);
    seen.until(TTL * 3, "lease lost", |s| !s.registered).await;
    assert_eq!(seen.ids(), ["a", "master"]);
    server.abort();
}
