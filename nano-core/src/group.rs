//! Groups: named sets of sessions that receive broadcasts together.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use crate::session::{encode_push, encode_push_with, lock, EncodedPush};
use crate::{Encode, Error, Json, Result, Serializer, Session};

/// Removal of a member, called by a session when it closes.
pub(crate) trait Membership: Send + Sync {
    fn remove_member(&self, session_id: u64);
}

/// A named set of sessions, for broadcasts (a room, a match, a channel).
///
/// A broadcast serializes the value and encodes the push packet **once**, then queues the same
/// `Bytes` on every member. A member whose queue is full or closed does not stop delivery to the
/// others. Members leave automatically when their session closes.
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
}

impl<S> Clone for Group<S> {
    fn clone(&self) -> Self {
        Group {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Send + 'static> Membership for GroupInner<S> {
    fn remove_member(&self, session_id: u64) {
        lock(&self.state).members.remove(&session_id);
    }
}

impl<S: Serializer> Group<S> {
    /// An empty group.
    pub fn new(name: impl Into<String>) -> Self {
        Group {
            inner: Arc::new(GroupInner {
                name: name.into(),
                state: Mutex::new(State {
                    closed: false,
                    members: BTreeMap::new(),
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
        {
            let mut st = self.state()?;
            if session.is_closed() {
                return Err(Error::closed("session closed"));
            }
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
            st.members.insert(session.id(), session.clone());
        }
        let weak: Weak<GroupInner<S>> = Arc::downgrade(&self.inner);
        session.joined(weak);
        Ok(())
    }

    /// Removes a session; returns whether it was a member.
    pub fn leave(&self, session: &Session<S>) -> bool {
        lock(&self.inner.state)
            .members
            .remove(&session.id())
            .is_some()
    }

    /// Removes every member.
    pub fn leave_all(&self) {
        lock(&self.inner.state).members.clear();
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
        self.deliver(
            route,
            |shared| encode_push::<S, T>(shared, route, value),
            filter,
        )
    }

    /// Pushes an already-serialized payload to every member (e.g. relaying a client's raw
    /// update); encoded once.
    ///
    /// # Errors
    ///
    /// `NANO-410` when the group is closed.
    pub fn broadcast_raw(&self, route: &str, payload: &[u8]) -> Result<()> {
        let encode = |shared: &crate::shared::Shared<S>| {
            encode_push_with(shared, route, |buf| {
                buf.extend_from_slice(payload);
                Ok(())
            })
        };
        self.deliver(route, encode, |_| true)
    }

    /// Encodes once (with the first member's settings) and queues on every selected member.
    fn deliver(
        &self,
        route: &str,
        encode: impl FnOnce(&crate::shared::Shared<S>) -> Result<EncodedPush>,
        mut filter: impl FnMut(&Session<S>) -> bool,
    ) -> Result<()> {
        let st = self.state()?;
        let Some(first) = st.members.values().next() else {
            return Ok(());
        };
        let packet = encode(first.shared())?;
        for member in st.members.values() {
            if !filter(member) {
                continue;
            }
            if let Err(e) = member.send_push(route, &packet) {
                tracing::debug!(group = %self.inner.name, session = member.id(), error = %e, "broadcast not delivered to member");
            }
        }
        Ok(())
    }

    /// Closes the group: removes every member; later calls fail with `NANO-410`.
    pub fn close(&self) {
        let mut st = lock(&self.inner.state);
        st.closed = true;
        st.members.clear();
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
