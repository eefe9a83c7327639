//! One live stream to a peer: the bounded send queue, the batching writer, the requests waiting
//! for an answer, and the reader that dispatches what the peer sends.
//!
//! The same machinery serves both ends of a link: the dialing side (whose writer is the body
//! of its gRPC call) and the accepting side (whose writer is the response stream).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::proto::{self, frame::Kind};
use super::{Inbound, LinkConfig, LinkError, NodeLink, PROTOCOL_VERSION};

/// Per-frame overhead of the `repeated Frame` field (tag + length prefix), counted in batches.
const FRAME_OVERHEAD: usize = 6;

type Answer = oneshot::Sender<Result<Bytes, LinkError>>;

/// Cumulative counters of a link, across its reconnections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    messages_sent: AtomicU64,
    frames_sent: AtomicU64,
    messages_received: AtomicU64,
    frames_received: AtomicU64,
}

/// A snapshot of a link's traffic since it was created (all its connections together).
///
/// A `Frames` message carries one or more frames: `frames_sent / messages_sent` is the mean
/// batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// `Frames` messages written to the stream.
    pub messages_sent: u64,
    /// Frames written, summed over those messages.
    pub frames_sent: u64,
    /// `Frames` messages read from the stream.
    pub messages_received: u64,
    /// Frames read, summed over those messages (the peer's `Hello`s included).
    pub frames_received: u64,
}

impl Counters {
    /// Counts one received `Frames` message of `frames` frames.
    pub(crate) fn count_received(&self, frames: usize) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.frames_received
            .fetch_add(frames as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        LinkStats {
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
        }
    }
}

/// The requests sent on one connection and not answered yet.
struct Pending {
    answers: HashMap<u64, Answer>,
    /// Set once the connection is lost: no request registers after that (it would hang).
    closed: bool,
}

/// One stream to a peer. Dropped when the stream ends and nobody answers on it any more.
pub(crate) struct Conn {
    tx: mpsc::Sender<proto::Frame>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    closed: CancellationToken,
    capacity: usize,
    max_frame: usize,
}

impl Conn {
    /// A connection and its outbound stream: everything queued on the connection, in `Frames`
    /// batches of whatever is queued when the stream is polled.
    pub(crate) fn new(
        config: &LinkConfig,
        counters: Arc<Counters>,
    ) -> (
        Arc<Conn>,
        impl Stream<Item = proto::Frames> + Send + 'static,
    ) {
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let closed = CancellationToken::new();
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(Pending {
                answers: HashMap::new(),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            closed: closed.clone(),
            capacity,
            max_frame: config.max_frame_bytes(),
        });
        let writer = Writer {
            rx,
            closed,
            counters,
            max_frames: config.max_batch_frames.max(1),
            max_bytes: config.max_batch_bytes.max(1),
        };
        (
            conn,
            futures_util::stream::unfold(writer, Writer::next_batch),
        )
    }

    /// Queues one frame, or fails at once.
    pub(crate) fn send(&self, kind: Kind) -> Result<(), LinkError> {
        if self.closed.is_cancelled() {
            return Err(LinkError::Unavailable("connection lost"));
        }
        let frame = proto::Frame { kind: Some(kind) };
        let size = frame.encoded_len();
        if size > self.max_frame {
            return Err(LinkError::TooLarge {
                size,
                limit: self.max_frame,
            });
        }
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LinkError::QueueFull(self.capacity),
            mpsc::error::TrySendError::Closed(_) => LinkError::Unavailable("connection lost"),
        })
    }

    /// Sends `req` with a fresh request id and waits for its answer, at most `deadline`.
    pub(crate) async fn request(
        self: &Arc<Self>,
        mut req: proto::Request,
        deadline: Duration,
    ) -> Result<Bytes, LinkError> {
        if deadline.is_zero() {
            return Err(LinkError::DeadlineExceeded(deadline));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        {
            let mut pending = self.lock_pending();
            if pending.closed {
                return Err(LinkError::Unavailable("connection lost"));
            }
            pending.answers.insert(id, answer);
        }
        // Removes the entry however this future ends: answered, timed out, or dropped.
        let _guard = PendingGuard { conn: self, id };
        req.request_id = id;
        req.deadline_ms = deadline_ms(deadline);
        self.send(Kind::Request(req))?;
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LinkError::Unavailable("connection lost")),
            Err(_) => Err(LinkError::DeadlineExceeded(deadline)),
        }
    }

    /// Hands a response to the request waiting for it; a late or unknown one is dropped.
    fn complete(&self, resp: proto::Response) {
        let Some(answer) = self.lock_pending().answers.remove(&resp.request_id) else {
            tracing::debug!(
                request_id = resp.request_id,
                "response to no pending request"
            );
            return;
        };
        let result = match resp.result {
            Some(proto::response::Result::Payload(p)) => Ok(p),
            Some(proto::response::Result::Error(e)) => Err(LinkError::Remote(
                nano_core::Error::from_parts(e.code, e.msg, e.metadata.into_iter().collect()),
            )),
            None => Ok(Bytes::new()),
        };
        let _ = answer.send(result);
    }

    /// Ends the stream (the writer stops) and answers every pending request with `NANO-503`.
    pub(crate) fn close(&self) {
        self.closed.cancel();
        let answers = {
            let mut pending = self.lock_pending();
            pending.closed = true;
            std::mem::take(&mut pending.answers)
        };
        for (_, answer) in answers {
            let _ = answer.send(Err(LinkError::Unavailable("connection lost")));
        }
    }

    /// Resolves once the connection is closed.
    pub(crate) fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct PendingGuard<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.lock_pending().answers.remove(&self.id);
    }
}

/// `deadline` in whole milliseconds for the wire: rounded up, saturated.
fn deadline_ms(deadline: Duration) -> u32 {
    let ms = deadline.as_micros().div_ceil(1000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// The outbound half: drains the queue into batches.
struct Writer {
    rx: mpsc::Receiver<proto::Frame>,
    closed: CancellationToken,
    counters: Arc<Counters>,
    max_frames: usize,
    max_bytes: usize,
}

impl Writer {
    async fn next_batch(mut self) -> Option<(proto::Frames, Writer)> {
        let first = tokio::select! {
            biased;
            _ = self.closed.cancelled() => return None,
            frame = self.rx.recv() => frame?,
        };
        let mut bytes = first.encoded_len() + FRAME_OVERHEAD;
        let mut frames = vec![first];
        while frames.len() < self.max_frames && bytes < self.max_bytes {
            match self.rx.try_recv() {
                Ok(frame) => {
                    bytes += frame.encoded_len() + FRAME_OVERHEAD;
                    frames.push(frame);
                }
                Err(_) => break,
            }
        }
        self.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.counters
            .frames_sent
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        Some((proto::Frames { frames }, self))
    }
}

/// The `Hello` that opens a stream.
pub(crate) fn hello(local_id: &str) -> Kind {
    Kind::Hello(proto::Hello {
        node_id: local_id.to_owned(),
        protocol_version: PROTOCOL_VERSION,
    })
}

/// Splits the first message of a stream into the peer's `Hello` and the frames after it.
///
/// # Errors
///
/// A human-readable reason when the message does not start with a `Hello` of our protocol
/// version.
pub(crate) fn split_hello(
    first: proto::Frames,
) -> Result<(proto::Hello, Vec<proto::Frame>), String> {
    let mut frames = first.frames.into_iter();
    match frames.next().and_then(|f| f.kind) {
        Some(Kind::Hello(hello)) if hello.protocol_version == PROTOCOL_VERSION => {
            if hello.node_id.is_empty() {
                return Err("Hello without node id".into());
            }
            Ok((hello, frames.collect()))
        }
        Some(Kind::Hello(hello)) => Err(format!(
            "peer speaks link protocol {}, this node {PROTOCOL_VERSION}",
            hello.protocol_version
        )),
        _ => Err("the first frame is not a Hello".into()),
    }
}

/// Reads the peer's frames until the stream ends or the connection is closed, then closes the
/// connection (answering its pending requests) and detaches it from the link.
pub(crate) async fn read_loop(
    conn: Arc<Conn>,
    link: NodeLink,
    mut inbound: tonic::Streaming<proto::Frames>,
    first: Vec<proto::Frame>,
    counters: Arc<Counters>,
) {
    for frame in first {
        dispatch(&conn, &link, frame);
    }
    let closed = conn.closed();
    loop {
        let message = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            m = inbound.message() => m,
        };
        match message {
            Ok(Some(frames)) => {
                counters.count_received(frames.frames.len());
                for frame in frames.frames {
                    dispatch(&conn, &link, frame);
                }
            }
            Ok(None) => {
                tracing::debug!(peer = ?link.peer_id(), "link stream ended by the peer");
                break;
            }
            Err(status) => {
                tracing::debug!(peer = ?link.peer_id(), %status, "link stream failed");
                break;
            }
        }
    }
    conn.close();
    link.detach(&conn);
}

fn dispatch(conn: &Arc<Conn>, link: &NodeLink, frame: proto::Frame) {
    let inbound = match frame.kind {
        Some(Kind::Response(resp)) => return conn.complete(resp),
        Some(Kind::Request(req)) => {
            let responder = Responder::new(conn.clone(), req.request_id, req.deadline_ms);
            Inbound::Request(req, responder)
        }
        Some(Kind::Notify(n)) => Inbound::Notify(n),
        Some(Kind::Push(p)) => Inbound::Push(p),
        Some(Kind::Kick(k)) => Inbound::Kick(k),
        Some(Kind::Close(c)) => Inbound::Close(c),
        Some(Kind::SessionClosed(s)) => Inbound::SessionClosed(s),
        Some(Kind::Bind(b)) => Inbound::Bind(b),
        Some(Kind::Holding(h)) => Inbound::Holding(h),
        Some(Kind::UidBound(u)) => Inbound::UidBound(u),
        Some(Kind::Hello(_)) => {
            tracing::debug!(peer = ?link.peer_id(), "second Hello on a link ignored");
            return;
        }
        // A kind added by a newer peer: ignored, as the protocol promises.
        None => return,
    };
    link.handler().on_inbound(link, inbound);
}

/// The way back for one inbound request: answer it exactly once.
///
/// Dropping a `Responder` without answering sends a `NANO-500` error, so the requesting node
/// never waits for its deadline because of a lost answer. An answer after the connection was
/// lost, or after the requester's deadline, goes nowhere.
pub struct Responder {
    conn: Arc<Conn>,
    request_id: u64,
    deadline: Option<Instant>,
    answered: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("request_id", &self.request_id)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Responder {
    fn new(conn: Arc<Conn>, request_id: u64, deadline_ms: u32) -> Self {
        let deadline = (deadline_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(deadline_ms)));
        Responder {
            conn,
            request_id,
            deadline,
            answered: false,
        }
    }

    /// The request's id on its link.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// When the requester gives up (received as the remaining time, measured from arrival);
    /// `None` when the request carried no deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the requester has given up already: the work can be skipped.
    pub fn is_expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sends the answer: the serialized response, or an error delivered to the client as is.
    pub fn respond(mut self, result: Result<Bytes, nano_core::Error>) {
        self.answered = true;
        self.send(result);
    }

    fn send(&self, result: Result<Bytes, nano_core::Error>) {
        let result = match result {
            Ok(payload) => proto::response::Result::Payload(payload),
            Err(e) => proto::response::Result::Error(proto::Error {
                code: e.code().to_owned(),
                msg: e.message().to_owned(),
                metadata: e
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
        };
        let resp = proto::Response {
            request_id: self.request_id,
            result: Some(result),
        };
        match self.conn.send(Kind::Response(resp)) {
            Ok(()) => {}
            // The requester had its answer already: NANO-503 when the stream was lost.
            Err(e @ LinkError::Unavailable(_)) => {
                tracing::debug!(request_id = self.request_id, error = %e, "link response not sent");
            }
            // The requester's deadline answers it.
            Err(e) => {
                tracing::warn!(request_id = self.request_id, error = %e, "link response not sent");
            }
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            self.send(Err(nano_core::Error::internal(
                "the request was dropped without an answer",
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(kinds: Vec<Kind>) -> proto::Frames {
        proto::Frames {
            frames: kinds
                .into_iter()
                .map(|k| proto::Frame { kind: Some(k) })
                .collect(),
        }
    }

    #[test]
    fn deadlines_go_on_the_wire_in_whole_milliseconds_rounded_up() {
        assert_eq!(deadline_ms(Duration::from_micros(1)), 1);
        assert_eq!(deadline_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(deadline_ms(Duration::from_micros(1500)), 2);
        assert_eq!(deadline_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn a_stream_must_open_with_a_hello_of_our_version() {
        let ok = frames(vec![
            hello("n1"),
            Kind::Close(proto::Close { session_id: 3 }),
        ]);
        let (h, rest) = split_hello(ok).unwrap();
        assert_eq!(h.node_id, "n1");
        assert_eq!(rest.len(), 1);

        let no_hello = frames(vec![Kind::Close(proto::Close { session_id: 3 })]);
        assert!(split_hello(no_hello).unwrap_err().contains("not a Hello"));
        assert!(split_hello(proto::Frames::default()).is_err());
        let anonymous = frames(vec![hello("")]);
        assert!(split_hello(anonymous).unwrap_err().contains("node id"));
        let future = frames(vec![Kind::Hello(proto::Hello {
            node_id: "n2".into(),
            protocol_version: PROTOCOL_VERSION + 1,
        })]);
        assert!(split_hello(future).unwrap_err().contains("protocol"));
    }

    #[tokio::test]
    async fn the_writer_batches_what_is_queued_within_its_limits() {
        use futures_util::StreamExt;
        let config = LinkConfig {
            max_batch_frames: 3,
            ..LinkConfig::default()
        };
        let counters = Arc::new(Counters::default());
        let (conn, outbound) = Conn::new(&config, counters.clone());
        let mut outbound = std::pin::pin!(outbound);
        for id in 0..7 {
            conn.send(Kind::SessionClosed(proto::SessionClosed { session_id: id }))
                .unwrap();
        }
        let sizes: Vec<usize> = [
            outbound.next().await.unwrap(),
            outbound.next().await.unwrap(),
            outbound.next().await.unwrap(),
        ]
        .iter()
        .map(|f| f.frames.len())
        .collect();
        assert_eq!(sizes, [3, 3, 1]);
        let stats = counters.snapshot();
        assert_eq!((stats.messages_sent, stats.frames_sent), (3, 7));

        // A request on a closed connection fails at once, and so does a pending one.
        let pending = {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.request(proto::Request::default(), Duration::from_secs(60))
                    .await
            })
        };
        assert!(outbound.next().await.is_some(), "the request was queued");
        conn.close();
        assert!(matches!(
            pending.await.unwrap(),
            Err(LinkError::Unavailable(_))
        ));
        assert!(
            outbound.next().await.is_none(),
            "the writer ends with the connection"
        );
        assert!(matches!(
            conn.request(proto::Request::default(), Duration::from_secs(60))
                .await,
            Err(LinkError::Unavailable(_))
        ));
    }
}
