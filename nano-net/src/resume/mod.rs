//! Session resume: a session outlives a dropped connection for a grace period, and the client
//! that comes back with its token gets it back with everything sent to it meanwhile.
//!
//! On the wire it rides on the handshake (old clients ignore the extra keys):
//!
//! ```text
//! server → client  {"code":200,"sys":{…,"resume":{"token":"<32 hex>","grace":30,
//!                                                 "resumed":false}}}
//! client → server  {"sys":{…,"resume":{"token":"<32 hex>","received":17}},"user":{…}}
//! server → client  {"code":200,"sys":{…,"resume":{"token":"<new>","grace":30,
//!                                                 "resumed":true,"last_request":41}}}
//! ```
//!
//! `received` counts the Data packets (responses and pushes) the client read in the session,
//! over all its connections. On `resumed: true` the server queues the ones after those first,
//! in order, then carries on; requests with an id over `last_request` never reached the server
//! and the client sends them again. Every handshake gives a new token: a token resumes once.
//! `resumed: false` is a new session (the token was unknown, used, or its grace was over).
//!
//! A session is suspended when its connection drops: reset, a read or write failed, the
//! heartbeat found it silent, or a WebSocket ended without a close frame. Never when the peer
//! said goodbye (a WebSocket close frame, or over TCP its FIN, the only goodbye pomelo's TCP
//! clients have), when the server kicked or closed it, on a protocol error, or at shutdown.

mod link;
mod window;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nano_core::{Serializer, Session};
use serde_json::Value;

use crate::agent::ConnState;
use crate::config::ServerConfig;
use crate::ctx::ServerCtx;

pub(crate) use link::{Detached, ResumeLink};
use link::{Refused, Watch};

/// Session resume settings (see [`App::resume`](crate::App::resume)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nano_net::Resume;
///
/// // Sessions wait 30 s for their client; each keeps up to 128 packets (64 KiB) for it.
/// let resume = Resume::new(Duration::from_secs(30)).buffer(128, 64 * 1024);
/// assert_eq!(resume.grace(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    grace: Duration,
    max_packets: usize,
    max_bytes: usize,
}

impl Resume {
    /// Packets a session keeps by default (see [`Resume::buffer`]).
    pub const DEFAULT_PACKETS: usize = 256;
    /// Bytes a session keeps by default.
    pub const DEFAULT_BYTES: usize = 256 * 1024;

    /// Sessions whose connection drops wait `grace` for their client, keeping up to
    /// [`DEFAULT_PACKETS`](Self::DEFAULT_PACKETS) packets and
    /// [`DEFAULT_BYTES`](Self::DEFAULT_BYTES) bytes for it.
    pub fn new(grace: Duration) -> Self {
        Resume {
            grace,
            max_packets: Self::DEFAULT_PACKETS,
            max_bytes: Self::DEFAULT_BYTES,
        }
    }

    /// Bounds what a session keeps for its client, in packets and in bytes: the last packets
    /// sent while it is connected (the ones a dying socket may have lost), and, separately,
    /// everything sent while it is suspended. A suspended session past either bound is closed.
    /// Both are capped at half the send queue's bounds, so that what is replayed always fits
    /// a new connection's queue. Memory: a session holds up to twice `bytes` (the window and,
    /// while suspended, what is held), in practice its last `packets` packets (256 packets
    /// of 50 bytes: 12.5 KiB per session).
    ///
    /// The window's size is what resuming costs under load (see the README's "What session
    /// resume costs"); a client that read most of it before the drop resumes from where it
    /// is, one that missed more than the window gets a new session.
    #[must_use]
    pub fn buffer(mut self, packets: usize, bytes: usize) -> Self {
        self.max_packets = packets.max(1);
        self.max_bytes = bytes;
        self
    }

    /// How long a suspended session waits for its client.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The bounds, capped to what a connection's send queue holds twice.
    fn limits(&self, config: &ServerConfig) -> (usize, usize) {
        (
            self.max_packets.min(config.send_queue / 2).max(1),
            self.max_bytes.min(config.send_queue_bytes / 2),
        )
    }
}

impl From<Duration> for Resume {
    fn from(grace: Duration) -> Self {
        Resume::new(grace)
    }
}

/// What the handshake decided for a connection of a server that resumes sessions.
pub(crate) enum Resuming<S> {
    /// A new session, under this token.
    Fresh { token: u128 },
    /// The client's session, claimed for this connection.
    Resumed {
        session: Session<S>,
        link: Arc<ResumeLink>,
        received: u64,
    },
}

/// A server's resumable sessions, by token.
pub(crate) struct Resumer<S> {
    grace: Duration,
    max_packets: usize,
    max_bytes: usize,
    sessions: Mutex<HashMap<u128, Entry<S>>>,
}

struct Entry<S> {
    session: Session<S>,
    link: Arc<ResumeLink>,
}

impl<S: Serializer> Resumer<S> {
    pub fn new(settings: &Resume, config: &ServerConfig) -> Self {
        let (max_packets, max_bytes) = settings.limits(config);
        Resumer {
            grace: settings.grace,
            max_packets,
            max_bytes,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u128, Entry<S>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides a handshake whose `sys` is `sys`: a resume when it carries a live token with a
    /// count the session can continue from, else a fresh session. Returns that and the
    /// handshake response's `sys.resume`; `None` when no token can be made (no randomness).
    pub fn begin(&self, sys: &Value) -> Option<(Resuming<S>, Value)> {
        let token = new_token()?;
        let asked = sys.get("resume");
        let presented = asked
            .and_then(|r| r.get("token"))
            .and_then(Value::as_str)
            .and_then(parse_token);
        let received = asked
            .and_then(|r| r.get("received"))
            .and_then(Value::as_u64);
        let mut answer = serde_json::json!({
            "token": format_token(token),
            "grace": self.grace.as_secs_f64(),
            "resumed": false,
        });
        if asked.is_some() {
            match (presented, received) {
                (Some(old), Some(received)) => {
                    if let Some(resumed) = self.claim(old, token, received) {
                        answer["resumed"] = true.into();
                        if let Resuming::Resumed { session, .. } = &resumed {
                            answer["last_request"] = session.last_message_id().into();
                        }
                        return Some((resumed, answer));
                    }
                }
                _ => tracing::debug!("resume asked without a valid token and count"),
            }
        }
        Some((Resuming::Fresh { token }, answer))
    }

    /// Claims the session under `old` for a new connection, under the token `new`.
    fn claim(&self, old: u128, new: u128, received: u64) -> Option<Resuming<S>> {
        let mut sessions = self.lock();
        let Some(entry) = sessions.remove(&old) else {
            tracing::debug!("resume refused: unknown, used or expired token");
            return None;
        };
        match entry.link.claim(received, new) {
            Ok(previous) => {
                let resumed = Resuming::Resumed {
                    session: entry.session.clone(),
                    link: entry.link.clone(),
                    received,
                };
                sessions.insert(new, entry);
                drop(sessions);
                if let Some(conn) = previous {
                    tracing::debug!(remote = %conn.remote(), "resumed session taken from a connection still open");
                    conn.abort();
                }
                Some(resumed)
            }
            Err(Refused::Ended) => {
                tracing::debug!(
                    session = entry.session.id(),
                    "resume refused: the session ended"
                );
                None
            }
            Err(Refused::Count) => {
                tracing::info!(
                    session = entry.session.id(),
                    received,
                    "resume refused: the client's count of packets cannot be continued"
                );
                // Kept (under its old token): a connection still serving it goes on, a
                // suspended one expires.
                sessions.insert(old, entry);
                None
            }
        }
    }

    /// A fresh resumable session, under `token`.
    pub fn insert(&self, token: u128, session: &Session<S>, link: &Arc<ResumeLink>) {
        self.lock().insert(
            token,
            Entry {
                session: session.clone(),
                link: link.clone(),
            },
        );
    }

    /// A link for a fresh session on `conn`.
    pub fn link(&self, conn: Arc<ConnState>, token: u128) -> Arc<ResumeLink> {
        Arc::new(ResumeLink::new(
            conn,
            token,
            self.max_packets,
            self.max_bytes,
        ))
    }

    /// Forgets a session that ended.
    pub fn forget(&self, link: &ResumeLink) {
        let token = link.token();
        let mut sessions = self.lock();
        if sessions
            .get(&token)
            .is_some_and(|e| std::ptr::eq(Arc::as_ptr(&e.link), link))
        {
            sessions.remove(&token);
        }
    }

    /// The suspended sessions, with the packets and bytes each holds.
    pub fn suspended(&self) -> Vec<(Session<S>, (usize, usize))> {
        self.lock()
            .values()
            .filter(|e| e.session.is_suspended())
            .map(|e| (e.session.clone(), e.link.held()))
            .collect()
    }

    /// Closes every suspended session (shutdown).
    pub fn close_suspended(&self) {
        let suspended: Vec<Entry<S>> = {
            let mut sessions = self.lock();
            let tokens: Vec<u128> = sessions
                .iter()
                .filter(|(_, e)| e.session.is_suspended())
                .map(|(t, _)| *t)
                .collect();
            tokens.iter().filter_map(|t| sessions.remove(t)).collect()
        };
        for e in suspended {
            e.link.end();
            close(&e.session);
        }
    }

    /// How long a suspended session waits.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// Watches suspension `suspension` of `session`: closes it when its grace period passes, its
/// buffer overflows, the server ends it or shuts down; returns when it was resumed.
pub(crate) async fn watch<S: Serializer>(
    ctx: Arc<ServerCtx<S>>,
    session: Session<S>,
    link: Arc<ResumeLink>,
    suspension: u64,
) {
    let Some(resumer) = ctx.resumer.as_ref() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + resumer.grace();
    let mut expired = false;
    loop {
        let changed = link.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match link.watch(suspension) {
            Watch::Over => return,
            Watch::Ended => break,
            Watch::Waiting { claimed } => {
                // Past the deadline, a handshake under way finishes (within its own bound).
                if expired && !claimed && link.expire(suspension) {
                    break;
                }
            }
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep_until(deadline), if !expired => {
                expired = true;
                if link.expire(suspension) {
                    tracing::debug!(session = session.id(), "grace period over: closing the session");
                    break;
                }
            }
            () = ctx.shutting_down.cancelled() => {
                link.end();
                break;
            }
            () = ctx.dropped.cancelled() => {
                link.end();
                break;
            }
        }
    }
    resumer.forget(&link);
    close(&session);
    tracing::debug!(session = session.id(), "suspended session closed");
}

/// Closes a session that has no connection: its session-closed callbacks run (once).
fn close<S: Serializer>(session: &Session<S>) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| session.closed())).is_err() {
        tracing::error!(session = session.id(), "a session-closed callback panicked");
    }
}

/// A new token: 128 bits from the operating system's generator.
fn new_token() -> Option<u128> {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(u128::from_le_bytes(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a resume token: session not resumable");
            None
        }
    }
}

fn format_token(token: u128) -> String {
    format!("{token:032x}")
}

/// A token as the client sends it back: exactly 32 hex digits.
fn parse_token(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_digits_and_parse_back() {
        let t = new_token().unwrap();
        let s = format_token(t);
        assert_eq!(s.len(), 32);
        assert_eq!(parse_token(&s), Some(t));
        assert_eq!(parse_token(&format_token(1)), Some(1));
        assert_ne!(new_token(), new_token());
        for bad in [
            "",
            "+0000000000000000000000000000001",
            "xyz",
            &"f".repeat(33),
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }
}
