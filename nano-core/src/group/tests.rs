//! Groups: no user code under the group's lock, membership consistent with session close, no
//! per-join growth, and at most two encodings per broadcast.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::protocol::{Message, MessageType, PacketType, HEADER_LEN};
use crate::session::lock;
use crate::testing::Harness;
use crate::{EngineBuilder, Group, Json, Link, SendError};

/// Failure bound for the deadlock test.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn an_outbound_interceptor_may_read_its_group_during_a_broadcast() {
    let room: Group = Group::new("room");
    let seen = Arc::new(AtomicUsize::new(0));
    let slot: Arc<OnceLock<Group>> = Arc::new(OnceLock::new());
    let mut builder = EngineBuilder::<Json>::new();
    {
        let (slot, seen) = (slot.clone(), seen.clone());
        builder.pipeline_mut().outbound.push_back(move |_s, _m| {
            // Reads the group that is broadcasting: deadlocked while `deliver` held its lock.
            if let Some(g) = slot.get() {
                seen.fetch_add(g.count(), Ordering::SeqCst);
                let _ = g.members();
            }
            Ok(())
        });
    }
    let _ = slot.set(room.clone());
    let harness = match builder.build() {
        Ok(engine) => engine,
        Err(e) => panic!("build: {e}"),
    };
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let link = Arc::new(RecLink::default());
            (harness.open_session(link.clone()), link)
        })
        .collect();
    for (s, _) in &clients {
        room.add(s).unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let r = room.clone();
    std::thread::spawn(move || {
        let _ = tx.send(r.broadcast("onMessage", &json!({"m": 1})));
    });
    let result = rx
        .recv_timeout(BOUND)
        .expect("the broadcast finished (no deadlock)");
    assert!(result.is_ok());
    assert_eq!(seen.load(Ordering::SeqCst), 9, "3 members saw a count of 3");
    for (_, link) in &clients {
        assert_eq!(link.count(), 1);
    }
}

#[test]
fn a_session_closing_while_it_joins_is_never_left_a_member() {
    let h = Harness::<Json>::empty();
    let group: Group = Group::new("race");
    for _ in 0..2_000 {
        let client = h.connect();
        let s = client.session().clone();
        let barrier = Arc::new(Barrier::new(2));
        let (g, s2, b2) = (group.clone(), s.clone(), barrier.clone());
        let joiner = std::thread::spawn(move || {
            b2.wait();
            g.add(&s2).is_ok()
        });
        barrier.wait();
        s.closed();
        let joined = joiner.join().unwrap();
        assert!(s.is_closed());
        assert!(
            !group.contains_session(&s),
            "a closed session is never a member (joined: {joined})"
        );
        assert_eq!(s.group_entries(), 0);
    }
    assert_eq!(group.count(), 0);
}

#[test]
fn many_threads_join_leave_and_close_without_ghosts() {
    let h = Harness::<Json>::empty();
    let groups: Vec<Group> = (0..4).map(|i| Group::new(format!("g{i}"))).collect();
    let clients: Vec<_> = (0..64).map(|_| h.connect()).collect();
    let sessions: Vec<_> = clients.iter().map(|c| c.session().clone()).collect();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (groups, sessions) = (&groups, &sessions);
            scope.spawn(move || {
                for i in 0..2_000usize {
                    let g = &groups[(i + t) % groups.len()];
                    let s = &sessions[(i * 7 + t) % sessions.len()];
                    match i % 3 {
                        0 | 1 => {
                            let _ = g.add(s);
                        }
                        _ => {
                            g.leave(s);
                        }
                    }
                }
            });
        }
        let sessions = &sessions;
        scope.spawn(move || {
            for s in sessions.iter().step_by(2) {
                s.closed();
            }
        });
    });
    for g in &groups {
        for s in &sessions {
            if s.is_closed() {
                assert!(
                    !g.contains_session(s),
                    "closed session {} in {}",
                    s.id(),
                    g.name()
                );
            }
        }
    }
    for s in &sessions {
        assert!(s.group_entries() <= groups.len());
    }
}

#[test]
fn joining_and_leaving_a_hundred_thousand_times_keeps_the_session_size_constant() {
    let h = Harness::<Json>::empty();
    let client = h.connect();
    let s = client.session();
    let group: Group = Group::new("churn");
    for _ in 0..100_000 {
        group.add(s).unwrap();
        assert_eq!(s.group_entries(), 1);
        assert!(group.leave(s));
    }
    assert_eq!(s.group_entries(), 0, "leave forgets the group");
    // leave_all and close forget too; a session that joined again stays recorded.
    for _ in 0..1_000 {
        let other: Group = Group::new("other");
        group.add(s).unwrap();
        other.add(s).unwrap();
        group.leave_all();
        other.close();
        assert_eq!(s.group_entries(), 0);
        let reopened: Group = Group::new("next");
        reopened.add(s).unwrap();
        assert_eq!(s.group_entries(), 1);
        assert!(reopened.leave(s));
    }
    // A closed session's membership ends with it.
    group.add(s).unwrap();
    s.closed();
    assert_eq!(s.group_entries(), 0);
    assert_eq!(group.count(), 0);
}

#[test]
fn a_broadcast_encodes_once_per_variant_and_only_the_variants_needed() {
    let engine = EngineBuilder::<Json>::new()
        .push_routes(["onMessage"])
        .build()
        .unwrap();
    let dict = engine.dictionary().clone();
    let code = dict.code("onMessage").unwrap();
    let group: Group = Group::new("room");
    let links: Vec<_> = (0..4)
        .map(|_| {
            let link = Arc::new(RecLink::default());
            let s = engine.open_session(link.clone());
            group.add(&s).unwrap();
            (s, link)
        })
        .collect();
    let serialized = AtomicUsize::new(0);
    let value = Counted(&serialized);

    // Nobody has used the dictionary: everyone gets the string route, one packet.
    group.broadcast("onMessage", &value).unwrap();
    assert_eq!(serialized.load(Ordering::SeqCst), 1);
    let first: Vec<_> = links.iter().map(|(_, l)| l.last()).collect();
    for p in &first {
        assert_eq!(p[HEADER_LEN] & 0x01, 0, "string route");
        assert!(first[0].as_ptr() == p.as_ptr(), "one shared packet");
    }

    // Two members used a dict code: they get the compressed packet, the others the plain one.
    for (s, _) in &links[..2] {
        let mut c = Some(code);
        s.note_route_code(&mut c, &dict);
        assert!(s.uses_route_dict());
    }
    group.broadcast("onMessage", &value).unwrap();
    assert_eq!(serialized.load(Ordering::SeqCst), 2, "serialized once");
    let second: Vec<_> = links.iter().map(|(_, l)| l.last()).collect();
    for (i, p) in second.iter().enumerate() {
        let m = Message::decode(p.slice(HEADER_LEN..), Some(&dict)).unwrap();
        assert_eq!(m.kind, MessageType::Push);
        assert_eq!(m.route.as_deref(), Some("onMessage"));
        assert_eq!(&m.payload[..], br#""counted""#);
        assert_eq!(m.route_code.is_some(), i < 2, "member {i}");
        assert_eq!(p[0], PacketType::Data as u8);
    }
    assert!(second[0].as_ptr() == second[1].as_ptr());
    assert!(second[2].as_ptr() == second[3].as_ptr());

    // A pomelo-form code is normalized and does not turn compression on.
    let (s, _) = &links[3];
    let mut c = Some(dict.pomelo_code(code));
    s.note_route_code(&mut c, &dict);
    assert_eq!(c, Some(code));
    assert!(!s.uses_route_dict());
}

/// A value that counts how often it is serialized.
struct Counted<'a>(&'a AtomicUsize);

impl serde::Serialize for Counted<'_> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        s.serialize_str("counted")
    }
}

/// A link that records what it is sent.
#[derive(Default)]
struct RecLink {
    packets: Mutex<Vec<Bytes>>,
}

impl RecLink {
    fn count(&self) -> usize {
        lock(&self.packets).len()
    }

    fn last(&self) -> Bytes {
        lock(&self.packets).last().cloned().expect("a packet")
    }
}

impl Link for RecLink {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        lock(&self.packets).push(packet);
        Ok(())
    }
    fn kick(&self, _reason: Option<&str>) {}
    fn close(&self) {}
    fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}
