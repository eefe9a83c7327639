//! Sessions: one per client connection.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use bytes::Bytes;

use crate::group::Membership;
use crate::link::{Link, SendError};
use crate::pipeline::Envelope;
use crate::protocol::{DataPacketWriter, Dictionary, MessageType};
use crate::shared::Shared;
use crate::{Encode, Error, Json, Result, Serializer};

mod inflight;

pub use inflight::InFlight;
use inflight::Limit;
pub(crate) use inflight::Outcome;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// A client's session: a cheap, clonable handle, safe to keep in component state.
///
/// A session has a unique id, an optional bound user id, a typed key/value store, and an
/// outbound path (`push`, `kick`, `close`). `S` is the application's serializer: it decides how
/// pushed values are encoded, and is checked at compile time.
///
/// # Examples
///
/// ```
/// # use nano_core::testing::Harness;
/// # let h = Harness::<nano_core::Json>::empty();
/// # let client = h.connect();
/// let session = client.session();
/// session.bind("alice").unwrap();
/// assert_eq!(session.uid().as_deref(), Some("alice"));
///
/// session.set("level", 7u32);
/// assert_eq!(session.get::<u32>("level"), Some(7));
/// assert!(session.remove("level"));
/// assert!(!session.contains("level"));
/// ```
pub struct Session<S = Json> {
    inner: Arc<Inner<S>>,
}

/// Field order is layout (`repr(C)`): what every message touches (the id, the link, the
/// shared settings, the in-flight count, the closed flag) first, in one cache line with the
/// reference counts.
#[repr(C)]
struct Inner<S> {
    id: u64,
    link: Arc<dyn Link>,
    shared: Arc<Shared<S>>,
    closed: AtomicBool,
    /// Set once the client sent a route as a code of nano's `dict`: from then on, pushes to it
    /// are compressed. Read once per push.
    uses_dict: AtomicBool,
    /// Limits the messages of the session in flight on the schedulers.
    inflight: Limit,
    uid: RwLock<Option<Arc<str>>>,
    data: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    /// The groups the session is in, one entry per group. Its lock is taken before a group's
    /// (join, leave) so that membership and close stay consistent; see [`Session::join_group`].
    groups: Mutex<Vec<Weak<dyn Membership>>>,
    /// The message rate bucket, made on the first message when the application has a limit.
    rate: OnceLock<crate::rate::Bucket>,
    /// Serialized values that travel with the session to the cluster nodes serving it.
    shared_data: Mutex<std::collections::BTreeMap<String, Bytes>>,
    /// Bumped whenever the uid or the shared data change (what a cluster gate resends).
    version: AtomicU64,
    /// The id of the last request the client sent (0: none yet), for the monitor page.
    last_message_id: AtomicU64,
    /// Its connection dropped; it waits for its client to resume it (see [`Session::suspend`]).
    suspended: AtomicBool,
}

impl<S> Clone for Session<S> {
    fn clone(&self) -> Self {
        Session {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("uid", &self.uid())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<S: Serializer> Session<S> {
    pub(crate) fn new(link: Arc<dyn Link>, shared: Arc<Shared<S>>) -> Self {
        let n = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
        let id = match shared.session_id_base {
            0 => n,
            // The base owns the high bits: the counter keeps to the low 32.
            base => base | (n & 0xFFFF_FFFF),
        };
        Self::with_id(id, link, shared)
    }

    pub(crate) fn with_id(id: u64, link: Arc<dyn Link>, shared: Arc<Shared<S>>) -> Self {
        let inflight = Limit::new(shared.max_inflight);
        Session {
            inner: Arc::new(Inner {
                id,
                uid: RwLock::new(None),
                data: Mutex::new(HashMap::new()),
                link,
                shared,
                closed: AtomicBool::new(false),
                uses_dict: AtomicBool::new(false),
                groups: Mutex::new(Vec::new()),
                inflight,
                rate: OnceLock::new(),
                shared_data: Mutex::new(std::collections::BTreeMap::new()),
                version: AtomicU64::new(0),
                last_message_id: AtomicU64::new(0),
                suspended: AtomicBool::new(false),
            }),
        }
    }

    /// Encodes `value` and pushes it to the client under `route` (an event name such as
    /// `onMessage`). The route is compressed when the application's dictionary has it and the
    /// client uses the dictionary (see [`Session::uses_route_dict`]).
    ///
    /// # Errors
    ///
    /// `NANO-500` when the value cannot be serialized, `NANO-410` when the session is closed or
    /// its send queue is full.
    pub fn push<T: Encode<S> + ?Sized>(&self, route: &str, value: &T) -> Result<()> {
        let packet = encode_push::<S, T>(&self.inner.shared, route, self.uses_route_dict(), value)?;
        self.send_own_push(route, packet)
    }

    /// Sends `value` to `route` on behalf of this session, without reply (go-nano's
    /// `Session.RPC`): the route's handler runs with this session — here when this node hosts
    /// its service, else on the cluster node that does (through a cluster extension). Internal
    /// routes are reachable: this is server code, not the client.
    ///
    /// # Errors
    ///
    /// `NANO-500` when the value cannot be serialized, `NANO-503` when the application is
    /// gone. A route nobody serves is traced, not returned (as a notify's would be).
    pub fn rpc<T: Encode<S> + ?Sized>(&self, route: &str, value: &T) -> Result<()> {
        let mut payload = bytes::BytesMut::new();
        value.encode(&mut payload)?;
        let engine = self
            .inner
            .shared
            .engine
            .get()
            .and_then(crate::WeakEngine::upgrade)
            .ok_or_else(|| Error::unavailable("application stopped"))?;
        let msg = crate::protocol::Message::notify(route, payload.freeze());
        engine
            .dispatch_detached(self, msg, crate::Origin::Node)
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// Stores `value`, serialized, under `key` as *shared* data: unlike [`Session::set`], it
    /// travels with the session to the cluster nodes that serve it (a gate sends it along with
    /// the session's next message to each backend), where [`Session::get_shared`] reads it.
    ///
    /// # Errors
    ///
    /// `NANO-500` when the value cannot be serialized.
    ///
    /// # Examples
    ///
    /// ```
    /// # use nano_core::testing::Harness;
    /// # let h = Harness::<nano_core::Json>::empty();
    /// # let client = h.connect();
    /// # let session = client.session();
    /// session.set_shared("room", &7u32).unwrap();
    /// assert_eq!(session.get_shared::<u32>("room"), Some(7));
    /// ```
    pub fn set_shared<T: Encode<S> + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let mut buf = bytes::BytesMut::new();
        value.encode(&mut buf)?;
        self.set_shared_raw(key, buf.freeze());
        Ok(())
    }

    /// The shared value under `key`, decoded as `T`; `None` when there is none or it does not
    /// decode as `T`.
    pub fn get_shared<T: crate::Decode<S>>(&self, key: &str) -> Option<T> {
        let bytes = lock(&self.inner.shared_data).get(key).cloned()?;
        T::decode(&bytes).ok()
    }

    /// Pushes a raw, already-serialized payload.
    ///
    /// # Errors
    ///
    /// As [`Session::push`].
    pub fn push_raw(&self, route: &str, payload: &[u8]) -> Result<()> {
        let packet = encode_push_with(&self.inner.shared, route, self.uses_route_dict(), |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        })?;
        self.send_own_push(route, packet)
    }

    /// Answers request `id` with an already-serialized payload (a response forwarded from
    /// another node, ...). Handlers answer by returning; this is for extensions.
    pub fn respond_raw(&self, id: u64, payload: &[u8]) {
        let mut w = DataPacketWriter::response(id, false);
        w.payload_mut().extend_from_slice(payload);
        self.respond(id, Ok(w));
    }

    /// Answers request `id` with an error response. Handlers answer by returning `Err`; this
    /// is for extensions.
    pub fn respond_error(&self, id: u64, err: &Error) {
        self.respond(id, Err(err.clone()));
    }

    /// Whether a shared push may go to this session: open, and allowed by the outbound
    /// pipeline. Then its link's [`fanout_key`](Link::fanout_key), if it has one.
    pub(crate) fn admit_shared_push(
        &self,
        route: &str,
        packet: &EncodedPush,
    ) -> Result<Option<usize>> {
        if self.is_closed() {
            return Err(Error::closed("session closed"));
        }
        self.outbound_allows(route, packet)?;
        Ok(self.inner.link.fanout_key())
    }

    /// The session's link.
    pub(crate) fn link(&self) -> &Arc<dyn Link> {
        &self.inner.link
    }

    /// Queues this session's own encoded push: the bytes move, no shared handle is made.
    fn send_own_push(&self, route: &str, packet: EncodedPush) -> Result<()> {
        self.outbound_allows(route, &packet)?;
        self.send_packet(packet.bytes)
    }

    fn outbound_allows(&self, route: &str, packet: &EncodedPush) -> Result<()> {
        let outbound = &self.inner.shared.pipeline.outbound;
        if !outbound.is_empty() {
            let env = Envelope {
                kind: MessageType::Push,
                id: 0,
                route: Some(route),
                payload: packet.payload(),
            };
            if let Err(e) = outbound.run(self, &env) {
                tracing::debug!(session = self.id(), route, error = %e, "push refused by pipeline");
                return Err(e);
            }
        }
        Ok(())
    }

    /// The application's shared state, as its handle.
    pub(crate) fn shared_arc(&self) -> &Arc<Shared<S>> {
        &self.inner.shared
    }

    /// Answers request `id` with a serialized payload, or an error response.
    pub(crate) fn respond(&self, id: u64, result: Result<DataPacketWriter>) {
        let shared = &self.inner.shared;
        let (writer, is_error) = match result {
            Ok(w) => (w, false),
            Err(err) => (error_response::<S>(id, &err), true),
        };
        let payload_len = writer.payload_len();
        let packet = match finish(writer, payload_len, shared.max_packet_size) {
            Ok(p) => p,
            Err(err) => {
                // The response is too large to send: answer with an error instead.
                tracing::warn!(session = self.id(), id, error = %err, "response not sendable");
                let w = error_response::<S>(id, &err);
                let len = w.payload_len();
                match finish(w, len, shared.max_packet_size) {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let outbound = &shared.pipeline.outbound;
        if !outbound.is_empty() {
            let env = Envelope {
                kind: MessageType::Response,
                id,
                route: None,
                payload: packet.payload(),
            };
            if let Err(e) = outbound.run(self, &env) {
                tracing::debug!(session = self.id(), id, error = %e, "response refused by pipeline");
                // The request still gets exactly one answer, without running the pipeline
                // again: a refused (or panicking) interceptor on a response turns it into the
                // interceptor's error; on an error response, the error response goes as is.
                if !is_error {
                    let w = error_response::<S>(id, &e);
                    let len = w.payload_len();
                    if let Ok(p) = finish(w, len, shared.max_packet_size) {
                        let _ = self.send_packet(p.bytes);
                    }
                } else {
                    let _ = self.send_packet(packet.bytes);
                }
                return;
            }
        }
        if let Err(e) = self.send_packet(packet.bytes) {
            tracing::debug!(session = self.id(), id, error = %e, "response not delivered");
        }
    }
}

impl<S> Session<S> {
    /// The session's unique id (unique within the process).
    #[inline]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Binds a user id to the session.
    ///
    /// # Errors
    ///
    /// `NANO-400` when `uid` is empty.
    pub fn bind(&self, uid: impl Into<String>) -> Result<()> {
        let uid = uid.into();
        if uid.is_empty() {
            return Err(Error::bad_request("cannot bind an empty uid"));
        }
        self.inner.link.bound(&uid);
        *write(&self.inner.uid) = Some(uid.as_str().into());
        self.inner.version.fetch_add(1, Ordering::Release);
        let hooks = lock(&self.inner.shared.bound_hooks).clone();
        for hook in hooks {
            hook(self, &uid);
        }
        Ok(())
    }

    /// The bound user id, if any.
    pub fn uid(&self) -> Option<String> {
        read(&self.inner.uid).as_deref().map(str::to_owned)
    }

    /// Whether the bound uid equals `uid`.
    pub(crate) fn uid_is(&self, uid: &str) -> bool {
        read(&self.inner.uid).as_deref() == Some(uid)
    }

    /// Stores a value under `key`, replacing any previous one.
    pub fn set<T: Any + Send + Sync>(&self, key: impl Into<String>, value: T) {
        lock(&self.inner.data).insert(key.into(), Box::new(value));
    }

    /// A clone of the value under `key`, if there is one of type `T`.
    pub fn get<T: Any + Clone>(&self, key: &str) -> Option<T> {
        lock(&self.inner.data)
            .get(key)
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    /// Calls `f` with a reference to the value under `key`, if there is one of type `T`.
    pub fn with<T: Any, R>(&self, key: &str, f: impl FnOnce(&T) -> R) -> Option<R> {
        lock(&self.inner.data)
            .get(key)
            .and_then(|v| v.downcast_ref::<T>())
            .map(f)
    }

    /// Removes the value under `key`; returns whether there was one.
    pub fn remove(&self, key: &str) -> bool {
        lock(&self.inner.data).remove(key).is_some()
    }

    /// Whether a value is stored under `key`.
    pub fn contains(&self, key: &str) -> bool {
        lock(&self.inner.data).contains_key(key)
    }

    /// Removes every stored value.
    pub fn clear(&self) {
        lock(&self.inner.data).clear();
    }

    /// Stores already-serialized shared data under `key` (see
    /// [`Session::set_shared`]); extensions apply what another node sent with it.
    pub fn set_shared_raw(&self, key: impl Into<String>, value: Bytes) {
        let key = key.into();
        let mut data = lock(&self.inner.shared_data);
        if data.get(&key) != Some(&value) {
            data.insert(key, value);
            self.inner.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Removes the shared value under `key`; returns whether there was one.
    pub fn remove_shared(&self, key: &str) -> bool {
        let removed = lock(&self.inner.shared_data).remove(key).is_some();
        if removed {
            self.inner.version.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Every shared value, serialized (what travels with the session).
    pub fn shared_data(&self) -> Vec<(String, Bytes)> {
        lock(&self.inner.shared_data)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A number that changes whenever the uid or the shared data change: an extension resends
    /// the session's state to another node only when it differs from what it sent last.
    pub fn state_version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The peer's address, when the transport has one.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.link.remote_addr()
    }

    /// Whether pushes to this session get compressed routes: true once the client sent a route
    /// as a code of the handshake's `dict`, so it has shown it reads the dictionary. A client
    /// that never does (a string-route-only client, or one that compresses with pomelo 2.x's
    /// `routeToCode`, see [`Dictionary`]) gets every push with its string route.
    #[inline]
    pub fn uses_route_dict(&self) -> bool {
        self.inner.uses_dict.load(Ordering::Relaxed)
    }

    /// Notes the route code of a message from the client (`None`: a string route). One of
    /// nano's `dict` codes turns route compression toward the session on; a code of the
    /// pomelo 2.x form is replaced by nano's code for the same route and turns nothing on.
    #[inline]
    pub(crate) fn note_route_code(&self, code: &mut Option<u16>, dict: &Dictionary) {
        let Some(c) = *code else { return };
        if dict.is_pomelo_code(c) {
            *code = Some(c & !Dictionary::POMELO_CODE_BIT);
        } else if !self.inner.uses_dict.load(Ordering::Relaxed) {
            self.inner.uses_dict.store(true, Ordering::Relaxed);
        }
    }

    /// The id of the last request the client sent; 0 before the first.
    pub fn last_message_id(&self) -> u64 {
        self.inner.last_message_id.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn note_message_id(&self, id: u64) {
        self.inner.last_message_id.store(id, Ordering::Relaxed);
    }

    /// Whether the session has been closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Sends a Kick packet, then closes the connection and runs the session-closed callbacks.
    pub fn kick(&self) {
        self.kick_with_reason(None);
    }

    /// Like [`Session::kick`], with a reason sent as pomelo's `{"reason": ...}` body.
    pub fn kick_with_reason(&self, reason: Option<&str>) {
        if !self.is_closed() {
            self.inner.link.kick(reason);
        }
        self.closed();
    }

    /// Closes the connection (after flushing what is queued) and runs the session-closed
    /// callbacks. Closing twice is harmless.
    pub fn close(&self) {
        if !self.is_closed() {
            self.inner.link.close();
        }
        self.closed();
    }

    /// Marks the session closed: leaves its groups and runs the session-closed callbacks,
    /// once. Transports call this when the connection ends.
    pub fn closed(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.suspended.store(false, Ordering::Release);
        let groups = std::mem::take(&mut *lock(&self.inner.groups));
        for g in groups.iter().filter_map(Weak::upgrade) {
            g.remove_member(self.id());
        }
        let hooks = lock(&self.inner.shared.closed_hooks).clone();
        for hook in hooks {
            hook(self);
        }
    }

    /// Whether the session is suspended: its connection dropped and it waits for its client to
    /// come back (an application that resumes sessions; see [`Session::suspend`]).
    pub fn is_suspended(&self) -> bool {
        self.inner.suspended.load(Ordering::Acquire)
    }

    /// Marks the session suspended and runs the session-suspended callbacks, once per
    /// suspension: its connection dropped, and it stays open (uid, data, groups) while its
    /// link keeps what is sent to it for the client's return. Transports that resume sessions
    /// call this; a closed session is not suspended.
    pub fn suspend(&self) {
        if self.is_closed() || self.inner.suspended.swap(true, Ordering::AcqRel) {
            return;
        }
        let hooks = lock(&self.inner.shared.suspended_hooks).clone();
        for hook in hooks {
            hook(self);
        }
    }

    /// Marks a suspended session resumed (its client is back on a new connection) and runs
    /// the session-resumed callbacks. Transports call this; it does nothing to a session that
    /// is not suspended.
    pub fn resume(&self) {
        if self.is_closed() || !self.inner.suspended.swap(false, Ordering::AcqRel) {
            return;
        }
        let hooks = lock(&self.inner.shared.resumed_hooks).clone();
        for hook in hooks {
            hook(self);
        }
    }

    /// Queues an encoded packet on the link.
    ///
    /// # Errors
    ///
    /// `NANO-410` when the session is closed or its queue is full.
    pub fn send_packet(&self, packet: Bytes) -> Result<()> {
        if self.is_closed() {
            return Err(Error::closed("session closed"));
        }
        self.inner.link.send(packet).map_err(|e| match e {
            SendError::Closed => Error::closed("session closed"),
            SendError::Full => Error::closed("send queue full"),
        })
    }

    /// The session's message rate bucket (made on first use).
    pub(crate) fn rate_bucket(&self) -> &crate::rate::Bucket {
        self.inner.rate.get_or_init(crate::rate::Bucket::new)
    }

    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.inner.shared
    }

    /// Joins a group: under the session's membership lock, fails if the session is closed,
    /// runs `insert` (which adds the session to the group under the group's lock), and records
    /// the group once. [`Session::closed`] marks the session closed before it takes that lock,
    /// so a join either sees the close and fails or is recorded before the close reads the
    /// list: after both, a closed session is in no group.
    pub(crate) fn join_group(
        &self,
        group: Weak<dyn Membership>,
        insert: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut groups = lock(&self.inner.groups);
        if self.is_closed() {
            return Err(Error::closed("session closed"));
        }
        insert()?;
        let id = group_id(&group);
        groups.retain(|g| g.strong_count() > 0);
        if !groups.iter().any(|g| group_id(g) == id) {
            groups.push(group);
        }
        Ok(())
    }

    /// Leaves the group `id`: under the session's membership lock, runs `remove` (which takes
    /// the session out of the group) and, when it did, forgets the group.
    pub(crate) fn leave_group(&self, id: *const (), remove: impl FnOnce() -> bool) -> bool {
        let mut groups = lock(&self.inner.groups);
        let removed = remove();
        if removed {
            groups.retain(|g| group_id(g) != id);
        }
        removed
    }

    /// Forgets the group `id` after the group dropped the session (`leave_all`, `close`),
    /// unless `still_member` says it has joined again since.
    pub(crate) fn forget_group(&self, id: *const (), still_member: impl FnOnce() -> bool) {
        let mut groups = lock(&self.inner.groups);
        if !still_member() {
            groups.retain(|g| group_id(g) != id);
        }
    }

    /// Number of entries in the session's list of groups.
    #[cfg(test)]
    pub(crate) fn group_entries(&self) -> usize {
        lock(&self.inner.groups).len()
    }

    /// Whether two handles are the same session.
    pub fn same(&self, other: &Session<S>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The identity of a group: the address of its shared state.
pub(crate) fn group_id(group: &Weak<dyn Membership>) -> *const () {
    group.as_ptr().cast::<()>()
}

/// An encoded push packet plus where its payload starts (for pipelines).
pub(crate) struct EncodedPush {
    pub bytes: Bytes,
    payload_len: usize,
}

impl EncodedPush {
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.bytes.len() - self.payload_len..]
    }
}

/// Serializes `value` and encodes a whole push packet, once.
/// `compress`: whether the route is compressed when the dictionary has it.
pub(crate) fn encode_push<S: Serializer, T: Encode<S> + ?Sized>(
    shared: &Shared<S>,
    route: &str,
    compress: bool,
    value: &T,
) -> Result<EncodedPush> {
    encode_push_with(shared, route, compress, |buf| value.encode(buf))
}

/// Encodes a whole push packet whose payload `write` appends.
pub(crate) fn encode_push_with<S>(
    shared: &Shared<S>,
    route: &str,
    compress: bool,
    write: impl FnOnce(&mut bytes::BytesMut) -> Result<()>,
) -> Result<EncodedPush> {
    let mut w = DataPacketWriter::push(route, shared.dict_for(compress))
        .map_err(|e| Error::internal(e.to_string()))?;
    write(w.payload_mut())?;
    let len = w.payload_len();
    finish(w, len, shared.max_packet_size)
}

fn finish(w: DataPacketWriter, payload_len: usize, max: usize) -> Result<EncodedPush> {
    let bytes = w.finish(max).map_err(|e| Error::internal(e.to_string()))?;
    Ok(EncodedPush { bytes, payload_len })
}

fn error_response<S: Serializer>(id: u64, err: &Error) -> DataPacketWriter {
    let mut w = DataPacketWriter::response(id, true);
    S::encode_error(err, w.payload_mut());
    w
}

// The locks below guard plain data; a panic while holding one cannot leave it half-written in a
// way that matters, so poisoning is ignored.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
