//! The link of a session that can outlive its connection.
//!
//! Every Data packet sent to the session (responses and pushes) is numbered, in the order its
//! connection's queue gets it, which is the order the client reads them in. The last ones stay
//! here after they were queued (a bounded window: packets written to a socket that then died
//! may never have reached the client), and while the session has no connection every packet
//! is kept (bounded too: overflow ends the session). A client that comes back says how many it
//! read; the ones after those are queued again on its new connection, in order, once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use nano_core::{Link, SendError};
use tokio::sync::Notify;

use super::window::Window;
use crate::agent::ConnState;

/// Where a session's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A connection serves it.
    Live,
    /// Its connection dropped; it waits for its client.
    Suspended,
    /// A client presented its token; the new connection's handshake is under way.
    Claimed,
    /// The server kicked or closed it, or its buffer overflowed: it cannot be resumed.
    Ended,
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The session was ended (kicked, closed, expired, overflowed).
    Ended,
    /// The client's count of packets is not one the link can continue from: more than it
    /// sent, or older than what it kept.
    Count,
}

/// What became of a session when its connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detached {
    /// It waits for its client (number of this suspension).
    Suspended(u64),
    /// Another connection took the session over: nothing to do.
    NotCurrent,
    /// The session ends: close it.
    Close,
}

/// What a suspension's watcher sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Still waiting for the client (or its handshake is under way).
    Waiting { claimed: bool },
    /// Resumed, or suspended again later (another watcher's): this watcher is done.
    Over,
    /// The session ends.
    Ended,
}

struct State {
    phase: Phase,
    conn: Option<Arc<ConnState>>,
    remote: SocketAddr,
    /// Data packets sent to the session so far: the number of the last one.
    sent: u64,
    /// The last packets sent, oldest first: the `i`th is packet `sent - kept.len() + 1 + i`.
    kept: Window,
    /// Packets and bytes kept since the connection dropped (what the bound applies to).
    held: usize,
    held_bytes: usize,
    /// Bumped on every suspension: a watcher knows its own.
    suspension: u64,
    /// The session's current resume token.
    token: u128,
}

/// The [`Link`] of a resumable session (see the module docs).
pub(crate) struct ResumeLink {
    state: Mutex<State>,
    /// Rung when the phase changes, for the suspension's watcher.
    changed: Notify,
    max_packets: usize,
    max_bytes: usize,
}

impl ResumeLink {
    /// A live link on `conn`, keeping up to `max_packets` / `max_bytes` (each way: the window
    /// of sent packets, and what is held while suspended).
    pub fn new(conn: Arc<ConnState>, token: u128, max_packets: usize, max_bytes: usize) -> Self {
        ResumeLink {
            state: Mutex::new(State {
                phase: Phase::Live,
                remote: conn.remote(),
                conn: Some(conn),
                sent: 0,
                kept: Window::default(),
                held: 0,
                held_bytes: 0,
                suspension: 0,
                token,
            }),
            changed: Notify::new(),
            max_packets: max_packets.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's current token.
    pub fn token(&self) -> u128 {
        self.lock().token
    }

    /// `conn` ended. With `suspend` (the connection dropped: no kick, no close, no protocol
    /// error), a session it was serving is suspended; otherwise it ends.
    pub fn detach(&self, conn: &Arc<ConnState>, suspend: bool) -> Detached {
        let mut st = self.lock();
        if st.phase == Phase::Ended {
            return Detached::Close;
        }
        if !st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return Detached::NotCurrent;
        }
        st.conn = None;
        let how = if suspend {
            st.phase = Phase::Suspended;
            st.held = 0;
            st.held_bytes = 0;
            st.suspension += 1;
            Detached::Suspended(st.suspension)
        } else {
            st.phase = Phase::Ended;
            Detached::Close
        };
        drop(st);
        self.changed.notify_waiters();
        how
    }

    /// A client presents this session's token with `received`, the number of packets it read:
    /// the session is claimed for its new connection (a connection still serving it is
    /// stopped) and its token replaced by `token`. Returns the connection that was serving it,
    /// if any, for the caller to stop.
    pub fn claim(&self, received: u64, token: u128) -> Result<Option<Arc<ConnState>>, Refused> {
        let mut st = self.lock();
        if st.phase == Phase::Ended {
            return Err(Refused::Ended);
        }
        let first = st.sent - st.kept.len() as u64;
        if received < first || received > st.sent {
            return Err(Refused::Count);
        }
        let old = st.conn.take();
        if old.is_some() {
            // Taken over before its connection was seen to drop: no packet is sent to it from
            // now on (they are held, as while suspended).
            st.held = 0;
            st.held_bytes = 0;
            st.suspension += 1;
        }
        st.phase = Phase::Claimed;
        st.token = token;
        drop(st);
        self.changed.notify_waiters();
        Ok(old)
    }

    /// The claiming handshake failed: the session waits again (under its new token).
    pub fn unclaim(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Claimed {
            st.phase = Phase::Suspended;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// The claiming client's new connection is ready: the packets after its first `received`
    /// are queued on it, in order, and it serves the session from now on.
    pub fn attach(&self, conn: &Arc<ConnState>, received: u64) -> Result<usize, Refused> {
        let mut st = self.lock();
        if st.phase != Phase::Claimed {
            return Err(Refused::Ended);
        }
        let first = st.sent - st.kept.len() as u64;
        if received < first || received > st.sent {
            st.phase = Phase::Ended;
            drop(st);
            self.changed.notify_waiters();
            return Err(Refused::Count);
        }
        // What the client has is no longer needed.
        for _ in first..received {
            st.kept.pop_front();
        }
        let mut replayed = 0;
        for p in st.kept.packets() {
            // Into an empty queue sized for it (see `Resume::limits`); a connection that is
            // already gone again keeps them here for the next try.
            if conn.send(p).is_err() {
                break;
            }
            replayed += 1;
        }
        st.phase = Phase::Live;
        st.remote = conn.remote();
        st.conn = Some(conn.clone());
        self.trim(&mut st);
        drop(st);
        self.changed.notify_waiters();
        Ok(replayed)
    }

    /// What a suspension's watcher should do.
    pub fn watch(&self, suspension: u64) -> Watch {
        let st = self.lock();
        match st.phase {
            Phase::Ended => Watch::Ended,
            _ if st.suspension != suspension => Watch::Over,
            Phase::Live => Watch::Over,
            Phase::Suspended => Watch::Waiting { claimed: false },
            Phase::Claimed => Watch::Waiting { claimed: true },
        }
    }

    /// The grace period of suspension `suspension` is over: true when that ends the session
    /// (it is still suspended, not being claimed).
    pub fn expire(&self, suspension: u64) -> bool {
        let mut st = self.lock();
        if st.suspension == suspension && st.phase == Phase::Suspended {
            st.phase = Phase::Ended;
            return true;
        }
        st.phase == Phase::Ended
    }

    /// Ends the session's resumability (server shutdown, expiry).
    pub fn end(&self) {
        self.lock().phase = Phase::Ended;
        self.changed.notify_waiters();
    }

    /// Completes on the next change of phase. Enable it before reading the phase (see
    /// [`Notify::notified`]).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Packets held for the client now, and their bytes (the monitor page).
    pub fn held(&self) -> (usize, usize) {
        let st = self.lock();
        (st.held, st.held_bytes)
    }

    /// Drops the oldest kept packets over the window.
    fn trim(&self, st: &mut State) {
        while !st.kept.is_empty()
            && (st.kept.len() > self.max_packets || st.kept.bytes() > self.max_bytes)
        {
            st.kept.pop_front();
        }
    }

    /// Numbers and keeps (a copy of) a packet.
    fn keep(&self, st: &mut State, packet: &[u8]) {
        st.sent += 1;
        st.kept.push(packet);
    }
}

impl Link for ResumeLink {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        let mut st = self.lock();
        match st.phase {
            Phase::Ended => Err(SendError::Closed),
            Phase::Live => {
                if st.conn.is_none() {
                    return Err(SendError::Closed);
                }
                self.keep(&mut st, &packet);
                // Borrowed under the lock: no reference count touched per packet.
                let dropped = st
                    .conn
                    .as_deref()
                    .is_some_and(|conn| match conn.send(packet) {
                        Ok(()) => false,
                        // Its connection is ending: the packet is the client's on its return.
                        Err(SendError::Closed) => false,
                        // Full: if the queue policy disconnected the client, the same; if the
                        // packet was dropped (`DropAndWarn`), the client never gets it, so it is
                        // not numbered.
                        Err(SendError::Full) => !conn.is_closing(),
                    });
                if dropped {
                    st.kept.pop_back();
                    st.sent -= 1;
                    return Err(SendError::Full);
                }
                self.trim(&mut st);
                Ok(())
            }
            Phase::Suspended | Phase::Claimed => {
                let len = packet.len();
                if st.held >= self.max_packets || st.held_bytes + len > self.max_bytes {
                    tracing::info!(
                        held = st.held,
                        held_bytes = st.held_bytes,
                        "suspended session's buffer full: closing the session"
                    );
                    st.phase = Phase::Ended;
                    drop(st);
                    self.changed.notify_waiters();
                    return Err(SendError::Full);
                }
                st.held += 1;
                st.held_bytes += len;
                self.keep(&mut st, &packet);
                Ok(())
            }
        }
    }

    fn kick(&self, reason: Option<&str>) {
        let conn = {
            let mut st = self.lock();
            st.phase = Phase::Ended;
            st.conn.clone()
        };
        if let Some(conn) = conn {
            conn.kick(reason);
        }
        self.changed.notify_waiters();
    }

    fn close(&self) {
        let conn = {
            let mut st = self.lock();
            st.phase = Phase::Ended;
            st.conn.clone()
        };
        if let Some(conn) = conn {
            conn.close();
        }
        self.changed.notify_waiters();
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.lock().remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u8) -> Bytes {
        Bytes::from(vec![4, 0, 0, 1, n])
    }

    fn conn() -> Arc<ConnState> {
        Arc::new(ConnState::for_test())
    }

    fn last_bytes(packets: &[Bytes]) -> Vec<u8> {
        packets.iter().map(|p| p[4]).collect()
    }

    #[test]
    fn a_resume_replays_what_followed_the_clients_count_from_the_window() {
        let first = conn();
        let link = ResumeLink::new(first.clone(), 1, 4, 1 << 20);
        for n in 1..=10 {
            link.send(packet(n)).unwrap();
        }
        assert_eq!(first.queued().len(), 10);
        assert_eq!(link.detach(&first, true), Detached::Suspended(1));
        link.send(packet(11)).unwrap();
        // The window holds packets 7..=10, and 11 came after: a client that read 5 cannot be
        // continued, nor one that claims more than was sent.
        assert_eq!(link.claim(5, 2).err(), Some(Refused::Count));
        assert_eq!(link.claim(12, 2).err(), Some(Refused::Count));
        assert!(link.claim(8, 2).unwrap().is_none());
        assert_eq!(link.token(), 2);
        let second = conn();
        assert_eq!(link.attach(&second, 8), Ok(3));
        assert_eq!(last_bytes(&second.queued()), [9, 10, 11]);
        // Live again: on the new connection, numbered on.
        link.send(packet(12)).unwrap();
        assert_eq!(last_bytes(&second.queued()), [12]);
        assert_eq!(link.watch(1), Watch::Over);
    }

    #[test]
    fn a_suspended_session_holds_up_to_its_bound_then_ends() {
        let first = conn();
        let link = ResumeLink::new(first.clone(), 1, 3, 1 << 20);
        link.send(packet(0)).unwrap();
        let Detached::Suspended(s) = link.detach(&first, true) else {
            panic!("suspended")
        };
        for n in 1..=3 {
            link.send(packet(n)).unwrap();
        }
        assert_eq!(link.held(), (3, 15));
        assert_eq!(link.watch(s), Watch::Waiting { claimed: false });
        assert_eq!(link.send(packet(4)), Err(SendError::Full));
        assert_eq!(link.watch(s), Watch::Ended);
        assert_eq!(link.claim(1, 2).err(), Some(Refused::Ended));
        assert_eq!(link.send(packet(5)), Err(SendError::Closed));
    }

    #[test]
    fn the_server_ending_a_session_is_never_a_suspension() {
        let first = conn();
        let link = ResumeLink::new(first.clone(), 1, 8, 1 << 20);
        link.kick(Some("bye"));
        assert!(first.is_closing());
        assert_eq!(link.detach(&first, true), Detached::Close);
        assert_eq!(link.claim(0, 2).err(), Some(Refused::Ended));
    }

    #[test]
    fn a_claim_takes_a_session_from_the_connection_still_serving_it() {
        let first = conn();
        let link = ResumeLink::new(first.clone(), 1, 8, 1 << 20);
        link.send(packet(1)).unwrap();
        let old = link.claim(1, 2).unwrap().expect("the old connection");
        assert!(Arc::ptr_eq(&old, &first));
        // Held meanwhile, sent on the new connection once attached.
        link.send(packet(2)).unwrap();
        assert_eq!(link.detach(&first, true), Detached::NotCurrent);
        let second = conn();
        assert_eq!(link.attach(&second, 1), Ok(1));
        assert_eq!(last_bytes(&second.queued()), [2]);
    }

    #[test]
    fn a_grace_period_ends_only_its_own_unclaimed_suspension() {
        let first = conn();
        let link = ResumeLink::new(first.clone(), 1, 8, 1 << 20);
        let Detached::Suspended(s) = link.detach(&first, true) else {
            panic!("suspended")
        };
        assert!(link.claim(0, 2).is_ok());
        assert!(!link.expire(s), "a handshake under way finishes");
        link.unclaim();
        assert!(!link.expire(s + 1), "another suspension's deadline");
        assert!(link.expire(s));
        assert_eq!(link.watch(s), Watch::Ended);
    }
}
