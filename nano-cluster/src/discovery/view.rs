//! A node's view of the cluster (members + whether it holds its own lease), published through a
//! `watch` channel, and [`Watch`], the stream of [`Change`]s a subscriber derives from it.
//!
//! Subscribers diff each new view against the last one they saw, so a slow subscriber never
//! loses a change and never makes the publisher buffer: it sees the net effect.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use super::{Change, Member, NodeId};

/// What one node currently knows.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    /// The members, this node included once it is registered.
    pub members: BTreeMap<NodeId, Member>,
    /// Whether this node holds its lease.
    pub registered: bool,
    /// Set when the discovery handle is gone: watchers end.
    pub closed: bool,
}

pub(crate) type ViewTx = watch::Sender<Arc<View>>;

pub(crate) fn channel() -> ViewTx {
    watch::Sender::new(Arc::new(View::default()))
}

/// Changes `tx`'s view with `f`, notifying watchers only if something changed.
/// The members in a view (the `Discovery::members` of every implementation).
pub(crate) fn members(tx: &ViewTx) -> Vec<Member> {
    tx.borrow().members.values().cloned().collect()
}

/// Whether a view says this node holds its lease.
pub(crate) fn registered(tx: &ViewTx) -> bool {
    tx.borrow().registered
}

pub(crate) fn update(tx: &ViewTx, f: impl FnOnce(&mut View)) {
    tx.send_if_modified(|view| {
        let mut next = View::clone(view);
        f(&mut next);
        let changed = next.members != view.members
            || next.registered != view.registered
            || next.closed != view.closed;
        if changed {
            *view = Arc::new(next);
        }
        changed
    });
}

/// The member list as a stream of [`Change`]s: first an [`Change::Insert`] for every member
/// already known (and [`Change::Registered`] if this node holds its lease), then every change.
/// Ends when the discovery handle is shut down or dropped.
///
/// A slow reader loses nothing that matters: it sees the net effect of what happened since its
/// last read (a member that joined and left meanwhile is not reported; a node that restarted
/// meanwhile is, as a remove then an insert, since its [`Member::incarnation`] changed).
///
/// # Examples
///
/// ```no_run
/// # async fn demo(discovery: &dyn nano_cluster::Discovery) {
/// use futures_util::StreamExt;
/// use nano_cluster::Change;
/// let mut changes = discovery.watch();
/// while let Some(change) = changes.next().await {
///     match change {
///         Change::Insert(id, member) => println!("{id} hosts {:?}", member.services),
///         Change::Remove(id) => println!("{id} left"),
///         Change::LeaseLost => println!("this node lost its lease; re-registering"),
///         Change::Registered => println!("this node is registered"),
///     }
/// }
/// # }
/// ```
pub struct Watch {
    views: WatchStream<Arc<View>>,
    known: BTreeMap<NodeId, Member>,
    registered: bool,
    pending: VecDeque<Change>,
    done: bool,
}

impl Watch {
    pub(crate) fn new(tx: &ViewTx) -> Self {
        Watch {
            views: WatchStream::new(tx.subscribe()),
            known: BTreeMap::new(),
            registered: false,
            pending: VecDeque::new(),
            done: false,
        }
    }

    fn diff(&mut self, view: &View) {
        if self.registered && !view.registered {
            self.pending.push_back(Change::LeaseLost);
        }
        // Removes first: the members gone, and those that restarted (another incarnation).
        for (id, known) in &self.known {
            match view.members.get(id) {
                None => self.pending.push_back(Change::Remove(id.clone())),
                Some(member) if member.incarnation != known.incarnation => {
                    self.pending.push_back(Change::Remove(id.clone()));
                }
                Some(_) => {}
            }
        }
        for (id, member) in &view.members {
            if self.known.get(id) != Some(member) {
                self.pending
                    .push_back(Change::Insert(id.clone(), member.clone()));
            }
        }
        if !self.registered && view.registered {
            self.pending.push_back(Change::Registered);
        }
        self.known.clone_from(&view.members);
        self.registered = view.registered;
        self.done = view.closed;
    }
}

impl Stream for Watch {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Poll::Ready(Some(change));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.views).poll_next(cx) {
                Poll::Ready(Some(view)) => self.diff(&view),
                Poll::Ready(None) => self.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("known", &self.known.len())
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn set(tx: &ViewTx, members: &[&Member], registered: bool) {
        update(tx, |v| {
            v.members = members
                .iter()
                .map(|m| (m.id.clone(), (*m).clone()))
                .collect();
            v.registered = registered;
        });
    }

    async fn next(w: &mut Watch) -> Change {
        tokio::time::timeout(std::time::Duration::from_secs(1), w.next())
            .await
            .expect("a change")
            .expect("not ended")
    }

    #[tokio::test]
    async fn a_watch_reports_the_net_effect_and_restarts_as_remove_then_insert() {
        let tx = channel();
        let a = Member::new("a", "a:1");
        let b = Member::new("b", "b:1");
        set(&tx, &[&a], true);
        let mut w = Watch::new(&tx);
        assert_eq!(next(&mut w).await, Change::Insert(a.id.clone(), a.clone()));
        assert_eq!(next(&mut w).await, Change::Registered);

        // b joins and leaves before the watcher reads: nothing to report for it.
        set(&tx, &[&a, &b], true);
        set(&tx, &[&a], true);
        // a changes its services (same process): an insert replaces it.
        let a2 = a.clone().service("Room");
        set(&tx, &[&a2], true);
        assert_eq!(next(&mut w).await, Change::Insert(a.id.clone(), a2.clone()));

        // a restarted (new incarnation): remove, then insert.
        let a3 = Member::new("a", "a:1");
        assert_ne!(a3.incarnation, a2.incarnation);
        set(&tx, &[&a3], false);
        assert_eq!(next(&mut w).await, Change::LeaseLost);
        assert_eq!(next(&mut w).await, Change::Remove(a.id.clone()));
        assert_eq!(next(&mut w).await, Change::Insert(a.id.clone(), a3));

        update(&tx, |v| v.closed = true);
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(1), w.next()).await,
            Ok(None)
        );
    }
}
