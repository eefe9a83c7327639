//! Which member serves a session's first message for a service: [`Picker`] and the usual
//! policies. The choice then sticks (per session, per service) until that member leaves.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Member;

/// What a [`Picker`] knows of the message being routed.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// The gate's session id.
    pub session_id: u64,
    /// The session's bound uid, if any.
    pub uid: Option<&'a str>,
    /// The service routed to (`Room` of `Room.Join`).
    pub service: &'a str,
    /// The whole route.
    pub route: &'a str,
}

/// Chooses one of the members hosting a service for a session. Called once per session and
/// service (the choice sticks), and again when the chosen member left.
///
/// `candidates` is never empty and is sorted by node id, so a deterministic policy gives the
/// same answer on every gate.
///
/// # Examples
///
/// A picker by room: sessions whose uid starts with the same letter share a backend.
///
/// ```
/// use nano_cluster::node::{PickContext, Picker};
/// use nano_cluster::Member;
///
/// struct ByInitial;
///
/// impl Picker for ByInitial {
///     fn pick(&self, cx: &PickContext<'_>, candidates: &[Member]) -> usize {
///         let initial = cx.uid.and_then(|u| u.bytes().next()).unwrap_or(0);
///         usize::from(initial) % candidates.len()
///     }
/// }
///
/// let members = [Member::new("chat-1", "127.0.0.1:1"), Member::new("chat-2", "127.0.0.1:2")];
/// let cx = PickContext { session_id: 7, uid: Some("bob"), service: "Room", route: "Room.Join" };
/// assert_eq!(ByInitial.pick(&cx, &members), 0); // b'b' = 98, even
/// ```
pub trait Picker: Send + Sync + 'static {
    /// The index in `candidates` of the member to use. An index out of range is taken modulo
    /// the number of candidates.
    fn pick(&self, cx: &PickContext<'_>, candidates: &[Member]) -> usize;
}

impl<F> Picker for F
where
    F: Fn(&PickContext<'_>, &[Member]) -> usize + Send + Sync + 'static,
{
    fn pick(&self, cx: &PickContext<'_>, candidates: &[Member]) -> usize {
        self(cx, candidates)
    }
}

/// Each new session (and service) goes to the next member in turn. The default.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Picker for RoundRobin {
    fn pick(&self, _cx: &PickContext<'_>, candidates: &[Member]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }
}

/// A member chosen at random (uniformly, from a per-process seed mixed with the session id).
#[derive(Debug)]
pub struct Random {
    seed: u64,
}

impl Default for Random {
    fn default() -> Self {
        // RandomState is seeded from the OS once per process.
        Random {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }
}

impl Picker for Random {
    fn pick(&self, cx: &PickContext<'_>, candidates: &[Member]) -> usize {
        let x = splitmix(self.seed ^ cx.session_id);
        (x % candidates.len() as u64) as usize
    }
}

/// Rendezvous (highest random weight) hashing on the session's uid (its id before it is
/// bound): a user lands on the same member from every gate, and when a member leaves only its
/// users move.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsistentHash;

impl Picker for ConsistentHash {
    fn pick(&self, cx: &PickContext<'_>, candidates: &[Member]) -> usize {
        let key = match cx.uid {
            Some(uid) => fnv1a(uid.as_bytes()),
            None => splitmix(cx.session_id),
        };
        candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, m)| splitmix(key ^ fnv1a(m.id.as_str().as_bytes())))
            .map_or(0, |(i, _)| i)
    }
}

/// FNV-1a, 64 bits: stable across processes and releases (unlike std's hashers), which is
/// what keys shared by several nodes need.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: spreads the bits of `x`.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member::new(format!("node-{i}"), format!("127.0.0.1:{}", 1000 + i)))
            .collect()
    }

    fn cx(session_id: u64, uid: Option<&str>) -> PickContext<'_> {
        PickContext {
            session_id,
            uid,
            service: "Room",
            route: "Room.Join",
        }
    }

    #[test]
    fn round_robin_takes_each_member_in_turn() {
        let rr = RoundRobin::default();
        let m = members(3);
        let picks: Vec<usize> = (0..6).map(|i| rr.pick(&cx(i, None), &m)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn consistent_hash_keeps_users_in_place_when_another_member_leaves() {
        let all = members(4);
        let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        let before: Vec<&str> = users
            .iter()
            .map(|u| all[ConsistentHash.pick(&cx(1, Some(u)), &all)].id.as_str())
            .collect();
        // Every member gets some users.
        for m in &all {
            assert!(before.iter().filter(|id| **id == m.id.as_str()).count() > 40);
        }
        let rest: Vec<Member> = all
            .iter()
            .filter(|m| m.id.as_str() != "node-2")
            .cloned()
            .collect();
        for (u, was) in users.iter().zip(&before) {
            let now = rest[ConsistentHash.pick(&cx(1, Some(u)), &rest)]
                .id
                .as_str();
            if *was != "node-2" {
                assert_eq!(now, *was, "{u} moved although its member stayed");
            }
        }
    }

    #[test]
    fn random_spreads_sessions_over_every_member() {
        let r = Random::default();
        let m = members(3);
        let mut counts = [0usize; 3];
        for id in 0..3000 {
            counts[r.pick(&cx(id, None), &m)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
