//! etcd discovery against a real etcd, whose client URL is in `NANO_ETCD_ENDPOINT` (see
//! `tests/etcd.sh`, which starts one). Without it every test fails: these tests never skip.
//! Each test uses its own key prefix. Every wait is on the change stream, bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use nano_cluster::{Change, Discovery, DiscoveryConfig, Etcd, Member, NodeId, Watch};
use tokio::time::Instant;

/// etcd's smallest lease TTL with its default election timeout is 2 s.
const TTL: Duration = Duration::from_secs(2);
const PROMPT: Duration = Duration::from_secs(5);

fn endpoint() -> String {
    std::env::var("NANO_ETCD_ENDPOINT").expect(
        "NANO_ETCD_ENDPOINT is not set: run nano-cluster/tests/etcd.sh, which starts etcd and sets it",
    )
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("/nano-test/{test}-{}-{nanos}", std::process::id())
}

fn config() -> DiscoveryConfig {
    DiscoveryConfig::default().ttl(TTL)
}

async fn node(prefix: &str, id: &str, service: &str) -> Etcd {
    let me = Member::new(id, format!("{id}.local:1"))
        .service(service)
        .label("test", "yes");
    Etcd::connect(&[endpoint()], prefix, me, config())
        .await
        .expect("etcd client")
}

async fn raw_client() -> etcd_client::Client {
    etcd_client::Client::connect([endpoint()], None)
        .await
        .expect("etcd client")
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

    async fn until(&mut self, bound: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + bound;
        while !done(self) {
            let change = match tokio::time::timeout_at(deadline, self.watch.next()).await {
                Ok(Some(change)) => change,
                Ok(None) => panic!("watch ended while waiting for {what}; saw {:?}", self.log),
                Err(_) => panic!("no {what} within {bound:?}; saw {:?}", self.log),
            };
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
    }

    fn has(&self, id: &str) -> bool {
        self.members.contains_key(&NodeId::from(id))
    }

    fn ids(&self) -> Vec<&str> {
        self.members.keys().map(NodeId::as_str).collect()
    }
}

async fn three(prefix: &str) -> (Vec<Etcd>, Vec<Seen>) {
    let mut nodes = Vec::new();
    for (id, svc) in [
        ("a", "RoomService"),
        ("b", "ChatService"),
        ("c", "GateService"),
    ] {
        nodes.push(node(prefix, id, svc).await);
    }
    let mut seen: Vec<Seen> = nodes.iter().map(Seen::new).collect();
    for s in &mut seen {
        s.until(PROMPT, "all three", |s| {
            s.registered && s.ids() == ["a", "b", "c"]
        })
        .await;
    }
    (nodes, seen)
}

#[tokio::test]
async fn nodes_see_each_others_joins_with_their_services() {
    let prefix = prefix("join");
    let (nodes, seen) = three(&prefix).await;
    for s in &seen {
        assert!(s.members[&NodeId::from("a")].hosts("RoomService"));
        assert!(s.members[&NodeId::from("b")].hosts("ChatService"));
        assert!(s.members[&NodeId::from("c")].hosts("GateService"));
        assert_eq!(s.members[&NodeId::from("c")].labels["test"], "yes");
    }
    // The key layout is `<prefix>/<node id>` → the member as JSON.
    assert_eq!(nodes[1].key(), format!("{prefix}/b"));
    let got = raw_client().await.get(nodes[1].key(), None).await.unwrap();
    let stored: Member = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(&stored, nodes[1].local());
    assert_ne!(got.kvs()[0].lease(), 0, "the key is attached to a lease");
}

#[tokio::test]
async fn a_node_that_shuts_down_is_removed_at_once() {
    let (nodes, mut seen) = three(&prefix("leave")).await;
    let started = Instant::now();
    nodes[2].shutdown().await.expect("lease revoked");
    for s in &mut seen[..2] {
        s.until(PROMPT, "c removed", |s| !s.has("c")).await;
    }
    assert!(
        started.elapsed() < TTL / 2,
        "removed after {:?}",
        started.elapsed()
    );
    assert_eq!(seen[0].ids(), ["a", "b"]);
}

#[tokio::test]
async fn a_node_whose_keepalive_stops_is_removed_within_its_ttl() {
    let (mut nodes, mut seen) = three(&prefix("lapse")).await;
    let dropped = Instant::now();
    drop(nodes.pop()); // no more keep-alives, no revoke: as a crash
    for s in &mut seen[..2] {
        s.until(TTL * 3, "c removed", |s| !s.has("c")).await;
    }
    let after = dropped.elapsed();
    // The last keep-alive was at most TTL / 3 before the drop; etcd checks expiry every 0.5 s.
    assert!(
        after >= TTL / 2,
        "removed after {after:?}: too early for a lapsed lease"
    );
    assert!(
        after <= TTL + Duration::from_millis(1500),
        "removed after {after:?}"
    );
    assert_eq!(seen[1].ids(), ["a", "b"]);
}

#[tokio::test]
async fn a_node_whose_lease_is_revoked_registers_again() {
    let (nodes, mut seen) = three(&prefix("revoke")).await;
    let mut etcd = raw_client().await;
    let old_lease = etcd.get(nodes[0].key(), None).await.unwrap().kvs()[0].lease();
    etcd.lease_revoke(old_lease).await.expect("revoke");

    // a notices it lost its lease, then holds a new one; the others (read at the same time)
    // see it leave and come back, with the same incarnation (the same process).
    let (own, others) = seen.split_at_mut(1);
    let a_side = async {
        own[0].until(PROMPT, "lease lost", |s| !s.registered).await;
        own[0]
            .until(PROMPT, "registered again", |s| s.registered && s.has("a"))
            .await;
    };
    let others_side = async {
        for s in others.iter_mut() {
            s.until(PROMPT, "a removed", |s| !s.has("a")).await;
        }
        for s in others.iter_mut() {
            s.until(PROMPT, "a back", |s| s.has("a")).await;
            assert_eq!(s.members[&NodeId::from("a")], *nodes[0].local());
        }
    };
    tokio::join!(a_side, others_side);
    let got = etcd.get(nodes[0].key(), None).await.unwrap();
    let new_lease = got.kvs()[0].lease();
    assert!(
        new_lease != 0 && new_lease != old_lease,
        "{old_lease} → {new_lease}"
    );
}

#[tokio::test]
async fn foreign_and_malformed_keys_are_ignored() {
    let prefix = prefix("malformed");
    let mut etcd = raw_client().await;
    etcd.put(format!("{prefix}/bogus"), "not json", None)
        .await
        .unwrap();
    let liar = serde_json::to_vec(&Member::new("someone-else", "x:1")).unwrap();
    etcd.put(format!("{prefix}/liar"), liar, None)
        .await
        .unwrap();
    etcd.put(format!("{prefix}-other/x"), "{}", None)
        .await
        .unwrap();
    let a = node(&prefix, "a", "RoomService").await;
    let mut seen = Seen::new(&a);
    seen.until(PROMPT, "a registered", |s| s.registered && s.has("a"))
        .await;
    // A malformed member written after the initial read is skipped as well; b is seen after it.
    etcd.put(format!("{prefix}/bogus2"), "{", None)
        .await
        .unwrap();
    let _b = node(&prefix, "b", "ChatService").await;
    seen.until(PROMPT, "b joined", |s| s.has("b")).await;
    assert_eq!(seen.ids(), ["a", "b"]);
}

/// A TCP forwarder to etcd on 127.0.0.1, so a test can cut one node off etcd (drop it: the
/// listener and every forwarded connection close) and reconnect it (a new one on the same port).
struct Proxy {
    addr: std::net::SocketAddr,
    tasks: tokio::task::JoinSet<()>,
}

impl Proxy {
    async fn start(addr: &str) -> Proxy {
        let upstream = endpoint().trim_start_matches("http://").to_owned();
        // The port of a proxy just dropped is released once its aborted task is dropped.
        let deadline = Instant::now() + PROMPT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("proxy bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let conns = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
        let held = std::sync::Arc::clone(&conns);
        tasks.spawn(async move {
            let _held = held;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.lock().await.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, tasks }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept task drops the listener and the set of connection tasks.
        self.tasks.abort_all();
    }
}

#[tokio::test]
async fn a_node_cut_off_etcd_keeps_its_view_and_registers_again_when_back() {
    let prefix = prefix("cutoff");
    let a = node(&prefix, "a", "RoomService").await;
    let proxy = Proxy::start("127.0.0.1:0").await;
    let proxy_addr = proxy.addr.to_string();
    let me = Member::new("p", "p.local:1").service("ChatService");
    let p = Etcd::connect(&[format!("http://{proxy_addr}")], &prefix, me, config())
        .await
        .expect("etcd client through the proxy");
    let mut on_a = Seen::new(&a);
    let mut on_p = Seen::new(&p);
    on_a.until(PROMPT, "a and p", |s| s.ids() == ["a", "p"])
        .await;
    on_p.until(PROMPT, "p registered, seeing a", |s| {
        s.registered && s.ids() == ["a", "p"]
    })
    .await;

    // Cut p off: etcd lets its lease lapse (a sees it go); p notices it lost its lease but
    // keeps its view.
    drop(proxy);
    let (on_a_side, on_p_side) = tokio::join!(
        on_a.until(TTL * 3, "p removed", |s| !s.has("p")),
        on_p.until(TTL * 3, "lease lost", |s| !s.registered),
    );
    let ((), ()) = (on_a_side, on_p_side);
    assert_eq!(on_p.ids(), ["a", "p"]);
    assert!(
        on_p.log.iter().all(|c| !matches!(c, Change::Remove(_))),
        "{:?}",
        on_p.log
    );

    // Back on the same address: p registers again and a sees it back.
    let _proxy = Proxy::start(&proxy_addr).await;
    let (on_a_side, on_p_side) = tokio::join!(
        on_a.until(TTL * 5, "p back", |s| s.has("p")),
        on_p.until(TTL * 5, "registered again", |s| s.registered
            && s.ids() == ["a", "p"]),
    );
    let ((), ()) = (on_a_side, on_p_side);
}
