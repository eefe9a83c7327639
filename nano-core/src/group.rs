//! Groups: named sets of sessions that receive broadcasts together.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};

use crate::session::{encode_push_with, lock, EncodedPush};
use crate::shared::Shared;
use crate::{Encode, Error, Json, Result, Serializer, Session};

/// Removal of a member, called by a session when it closes.
pub(crate) trait Membership: Send + Sync {
    fn remove_member(&self, session_id: u64);
}

/// A named set of sessions, for broadcasts (a room, a match, a channel).
///
/// A broadcast serializes the value **once** and encodes at most two push packets, each only if
/// a member needs it: one with the compressed route for the members that use the route
/// dictionary, one with the string route for the others (see [`Session::uses_route_dict`]).
/// Every member gets a shared `Bytes` handle of its packet. A member whose queue is full or
/// closed does not stop delivery to the others. Members leave automatically when their session
/// closes.
///
/// No user code runs under the group's lock: a broadcast takes a shared list of the members,
/// then serializes, filters and runs the outbound interceptors without the lock, so these may
/// use the group (`count`, `members`, even `add`/`leave`); such a change applies to the next
/// broadcast.
///
/// # Examples
///
/// ```
/// # use nano_core::testing::Harness;
/// use nano_core::Group;
///
/// # let h = Harness::<nano_core::Json>::empty();
/// let room: Group = Group::new("room");
/// let alice = h.connect();
/// alice.session().bind("alice").unwrap();
/// room.add(alice.session()).unwrap();
/// assert!(room.contains("alice"));
///
/// room.broadcast("onMessage", &serde_json::json!({"content": "hi"})).unwrap();
/// assert_eq!(alice.pushes()[0].route, "onMessage");
/// ```
pub struct Group<S = Json> {
    inner: Arc<GroupInner<S>>,
}

struct GroupInner<S> {
    name: String,
    state: Mutex<State<S>>,
}

struct State<S> {
    closed: bool,
    /// Members by session id (join order for sessions of one process).
    members: BTreeMap<u64, Session<S>>,
    /// The members as a shared list for broadcasts, made on the first broadcast after a
    /// change: a broadcast under the lock clones one `Arc`, not every member handle.
    snapshot: Option<Arc<[Session<S>]>>,
}

/// Groups alive in this process, and their members, for the metrics.
static LIVE_GROUPS: AtomicUsize = AtomicUsize::new(0);
static LIVE_MEMBERS: AtomicUsize = AtomicUsize::new(0);

/// Groups alive in this process and the members of all of them.
pub(crate) fn census() -> (usize, usize) {
    (
        LIVE_GROUPS.load(Ordering::Relaxed),
        LIVE_MEMBERS.load(Ordering::Relaxed),
    )
}

impl<S> State<S> {
    fn insert(&mut self, session: &Session<S>) {
        self.snapshot = None;
        if self.members.insert(session.id(), session.clone()).is_none() {
            LIVE_MEMBERS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, session_id: u64) -> bool {
        let removed = self.members.remove(&session_id).is_some();
        if removed {
            self.snapshot = None;
            LIVE_MEMBERS.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    fn take(&mut self) -> BTreeMap<u64, Session<S>> {
        self.snapshot = None;
        LIVE_MEMBERS.fetch_sub(self.members.len(), Ordering::Relaxed);
        std::mem::take(&mut self.members)
    }

    fn snapshot(&mut self) -> Arc<[Session<S>]> {
        self.snapshot
            .get_or_insert_with(|| self.members.values().cloned().collect())
            .clone()
    }
}

impl<S> Drop for GroupInner<S> {
    fn drop(&mut self) {
        LIVE_GROUPS.fetch_sub(1, Ordering::Relaxed);
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        LIVE_MEMBERS.fetch_sub(state.members.len(), Ordering::Relaxed);
    }
}

impl<S> Clone for Group<S> {
    fn clone(&self) -> Self {
        Group {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Send + 'static> Membership for GroupInner<S> {
    // Called by a closing session without its own lock held.
    fn remove_member(&self, session_id: u64) {
        lock(&self.state).remove(session_id);
    }
}

impl<S: Serializer> Group<S> {
    /// An empty group.
    pub fn new(name: impl Into<String>) -> Self {
        LIVE_GROUPS.fetch_add(1, Ordering::Relaxed);
        Group {
            inner: Arc::new(GroupInner {
                name: name.into(),
                state: Mutex::new(State {
                    closed: false,
                    members: BTreeMap::new(),
                    snapshot: None,
                }),
            }),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Adds a session.
    ///
    /// # Errors
    ///
    /// `NANO-409` when the session is already a member, `NANO-410` when the group or the
    /// session is closed.
    pub fn add(&self, session: &Session<S>) -> Result<()> {
        let weak: Weak<GroupInner<S>> = Arc::downgrade(&self.inner);
        session.join_group(weak, || {
            let mut st = self.state()?;
            if st.members.contains_key(&session.id()) {
                return Err(Error::new(
                    "NANO-409",
                    format!(
                        "session {} is already in group {}",
                        session.id(),
                        self.inner.name
                    ),
                ));
            }
            st.insert(session);
            Ok(())
        })
    }

    /// Removes a session; returns whether it was a member.
    pub fn leave(&self, session: &Session<S>) -> bool {
        session.leave_group(self.id(), || lock(&self.inner.state).remove(session.id()))
    }

    /// Removes every member.
    pub fn leave_all(&self) {
        let members = lock(&self.inner.state).take();
        self.forget(members);
    }

    /// Tells sessions the group dropped that they are no longer in it (unless they joined
    /// again meanwhile). Runs without the group's lock.
    fn forget(&self, members: BTreeMap<u64, Session<S>>) {
        for member in members.values() {
            member.forget_group(self.id(), || {
                lock(&self.inner.state).members.contains_key(&member.id())
            });
        }
    }

    /// The group's identity, as sessions record it.
    fn id(&self) -> *const () {
        Arc::as_ptr(&self.inner).cast::<()>()
    }

    /// The bound uids of the members (unbound members are left out), in join order.
    pub fn members(&self) -> Vec<String> {
        lock(&self.inner.state)
            .members
            .values()
            .filter_map(Session::uid)
            .collect()
    }

    /// The member whose bound uid is `uid`.
    pub fn member(&self, uid: &str) -> Option<Session<S>> {
        lock(&self.inner.state)
            .members
            .values()
            .find(|s| s.uid_is(uid))
            .cloned()
    }

    /// Whether a member has the bound uid `uid`.
    pub fn contains(&self, uid: &str) -> bool {
        lock(&self.inner.state)
            .members
            .values()
            .any(|s| s.uid_is(uid))
    }

    /// Whether `session` is a member.
    pub fn contains_session(&self, session: &Session<S>) -> bool {
        lock(&self.inner.state).members.contains_key(&session.id())
    }

    /// Number of members.
    pub fn count(&self) -> usize {
        lock(&self.inner.state).members.len()
    }

    /// Pushes `value` under `route` to every member; serialized and encoded once.
    ///
    /// # Errors
    ///
    /// `NANO-500` when the value cannot be serialized, `NANO-410` when the group is closed.
    /// Failures of single members are traced, not returned.
    pub fn broadcast<T: Encode<S> + ?Sized>(&self, route: &str, value: &T) -> Result<()> {
        self.multicast(route, value, |_| true)
    }

    /// Pushes `value` under `route` to the members for which `filter` returns true; serialized
    /// and encoded once.
    ///
    /// # Errors
    ///
    /// As [`Group::broadcast`].
    pub fn multicast<T: Encode<S> + ?Sized>(
        &self,
        route: &str,
        value: &T,
        filter: impl FnMut(&Session<S>) -> bool,
    ) -> Result<()> {
        self.deliver(route, |buf| value.encode(buf), filter)
    }

    /// Pushes an already-serialized payload to every member (e.g. relaying a client's raw
    /// update); encoded once.
    ///
    /// # Errors
    ///
    /// `NANO-410` when the group is closed.
    pub fn broadcast_raw(&self, route: &str, payload: &[u8]) -> Result<()> {
        let write = |buf: &mut BytesMut| {
            buf.extend_from_slice(payload);
            Ok(())
        };
        self.deliver(route, write, |_| true)
    }

    /// Serializes once (with the first member's settings) and queues on every selected member;
    /// a shared list of the members is taken under the lock, everything else runs without it.
    fn deliver(
        &self,
        route: &str,
        write: impl FnOnce(&mut BytesMut) -> Result<()>,
        mut filter: impl FnMut(&Session<S>) -> bool,
    ) -> Result<()> {
        let members = self.state()?.snapshot();
        let Some(first) = members.first() else {
            return Ok(());
        };
        let mut packets = Packets::new(first.shared(), route, write);
        // Members behind a fan-out link (a cluster gate): one send per link, with their ids.
        let mut fanouts: Vec<(usize, &Session<S>, Bytes, Vec<u64>)> = Vec::new();
        for member in members.iter() {
            if !filter(member) {
                continue;
            }
            let serializing = !packets.serialized();
            let packet = match packets.get(member.uses_route_dict()) {
                Ok(p) => p,
                // Serialization failed: nobody got anything.
                Err(e) if serializing => return Err(e),
                Err(e) => {
                    tracing::debug!(group = %self.inner.name, session = member.id(), error = %e, "broadcast not encodable for member");
                    continue;
                }
            };
            match member.admit_shared_push(route, packet) {
                Ok(None) => {
                    if let Err(e) = member.send_packet(packet.bytes.clone()) {
                        tracing::debug!(group = %self.inner.name, session = member.id(), error = %e, "broadcast not delivered to member");
                    }
                }
                Ok(Some(key)) => match fanouts.iter_mut().find(|f| f.0 == key) {
                    Some((.., ids)) => ids.push(member.id()),
                    None => fanouts.push((key, member, packet.bytes.clone(), vec![member.id()])),
                },
                Err(e) => {
                    tracing::debug!(group = %self.inner.name, session = member.id(), error = %e, "broadcast not delivered to member");
                }
            }
        }
        for (_, via, packet, ids) in fanouts {
            if let Err(e) = via.link().send_many(packet, ids) {
                tracing::debug!(group = %self.inner.name, error = %e, "broadcast not delivered to a fan-out link");
            }
        }
        Ok(())
    }

    /// Closes the group: removes every member; later calls fail with `NANO-410`.
    pub fn close(&self) {
        let members = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            st.take()
        };
        self.forget(members);
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State<S>>> {
        let st = lock(&self.inner.state);
        if st.closed {
            return Err(Error::closed(format!(
                "group {} is closed",
                self.inner.name
            )));
        }
        Ok(st)
    }
}

/// The (at most two) packets of one broadcast, encoded when a member first needs one: the
/// payload is serialized into the first, and the second copies it.
struct Packets<'a, S, W> {
    shared: &'a Shared<S>,
    route: &'a str,
    /// Whether the route has a dictionary code (else both variants are the plain one).
    compressible: bool,
    write: Option<W>,
    plain: Option<EncodedPush>,
    compressed: Option<EncodedPush>,
}

impl<'a, S, W: FnOnce(&mut BytesMut) -> Result<()>> Packets<'a, S, W> {
    fn new(shared: &'a Shared<S>, route: &'a str, write: W) -> Self {
        let compressible = shared.dict_for(true).and_then(|d| d.code(route)).is_some();
        Packets {
            shared,
            route,
            compressible,
            write: Some(write),
            plain: None,
            compressed: None,
        }
    }

    /// Whether the payload has been serialized (successfully or not).
    fn serialized(&self) -> bool {
        self.write.is_none()
    }

    /// The packet for a member that uses the route dictionary (`compressed`) or not.
    fn get(&mut self, compressed: bool) -> Result<&EncodedPush> {
        let compressed = compressed && self.compressible;
        let (slot, other) = if compressed {
            (&mut self.compressed, &self.plain)
        } else {
            (&mut self.plain, &self.compressed)
        };
        if slot.is_none() {
            let packet = match (self.write.take(), other) {
                (Some(write), _) => encode_push_with(self.shared, self.route, compressed, write)?,
                (None, Some(other)) => {
                    encode_push_with(self.shared, self.route, compressed, |buf| {
                        buf.extend_from_slice(other.payload());
                        Ok(())
                    })?
                }
                (None, None) => return Err(Error::internal("broadcast payload not serialized")),
            };
            *slot = Some(packet);
        }
        slot.as_ref()
            .ok_or_else(|| Error::internal("broadcast packet missing"))
    }
}

#[cfg(test)]
mod tests;
