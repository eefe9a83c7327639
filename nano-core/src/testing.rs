//! Testing components without sockets.
//!
//! [`Harness`] runs an [`Engine`] in memory; [`TestClient`] plays a connected client through
//! the real codec (requests are encoded to packets, decoded and dispatched exactly as from a
//! socket) and records everything the server sends it: responses, pushes, kicks.
//!
//! # Examples
//!
//! ```
//! use nano_core::testing::Harness;
//! use nano_core::{EngineBuilder, Json};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let harness = Harness::start(EngineBuilder::<Json>::new()).await.unwrap();
//! let client = harness.connect();
//! let err = client
//!     .request::<_, serde_json::Value>("Room.Nope", &serde_json::json!({}))
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.code(), "NANO-404");
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::protocol::{DataPacketWriter, Message, MessageType, PacketCodec, PacketType};
use crate::session::lock;
use crate::{
    BuildError, Decode, DispatchError, Encode, Engine, EngineBuilder, Error, Json, Link, SendError,
    Serializer, Session,
};

/// How long a [`TestClient`] waits for a response or push before failing.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An engine running in memory.
pub struct Harness<S = Json> {
    engine: Engine<S>,
}

impl<S: Serializer> Harness<S> {
    /// Builds and starts the engine (runs the `init` and `after_init` hooks).
    ///
    /// # Errors
    ///
    /// As [`EngineBuilder::build`].
    pub async fn start(builder: EngineBuilder<S>) -> Result<Self, BuildError> {
        let engine = builder.build()?;
        engine.start().await;
        Ok(Harness { engine })
    }

    /// A harness with no components, not started (for sessions and groups only).
    pub fn empty() -> Self {
        match EngineBuilder::<S>::new().build() {
            Ok(engine) => Harness { engine },
            Err(e) => unreachable!("an empty engine always builds: {e}"),
        }
    }

    /// The engine under test.
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// Connects a client whose queue is unbounded.
    pub fn connect(&self) -> TestClient<S> {
        self.connect_with_capacity(usize::MAX)
    }

    /// Connects a client whose outbound queue holds `capacity` packets; further sends fail with
    /// [`SendError::Full`] (a client that stopped reading).
    pub fn connect_with_capacity(&self, capacity: usize) -> TestClient<S> {
        let link = Arc::new(MemoryLink {
            capacity,
            ..MemoryLink::default()
        });
        let session = self.engine.open_session(link.clone());
        TestClient {
            engine: self.engine.clone(),
            session,
            link,
            next_id: AtomicU64::new(1),
        }
    }

    /// Runs `before_shutdown` and `shutdown` and stops the schedulers.
    pub async fn shutdown(&self) {
        self.engine.before_shutdown().await;
        self.engine.shutdown().await;
    }
}

/// A link that records packets in memory.
#[derive(Default)]
struct MemoryLink {
    capacity: usize,
    packets: Mutex<Vec<Bytes>>,
    kicked: Mutex<Option<Option<String>>>,
    closed: AtomicBool,
    notify: Notify,
}

impl Link for MemoryLink {
    fn send(&self, packet: Bytes) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let mut packets = lock(&self.packets);
        if packets.len() >= self.capacity {
            return Err(SendError::Full);
        }
        packets.push(packet);
        drop(packets);
        self.notify.notify_waiters();
        Ok(())
    }

    fn kick(&self, reason: Option<&str>) {
        *lock(&self.kicked) = Some(reason.map(str::to_owned));
        self.close();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// A push the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The push route (event name).
    pub route: String,
    /// The serialized payload.
    pub payload: Bytes,
}

/// A response the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request id it answers.
    pub id: u64,
    /// Whether it is an error response (flag 0x20).
    pub error: bool,
    /// The serialized payload.
    pub payload: Bytes,
}

/// A client connected to a [`Harness`], recording what the server sends.
pub struct TestClient<S = Json> {
    engine: Engine<S>,
    session: Session<S>,
    link: Arc<MemoryLink>,
    next_id: AtomicU64,
}

impl<S: Serializer> TestClient<S> {
    /// The server-side session of this client.
    pub fn session(&self) -> &Session<S> {
        &self.session
    }

    /// Sends a request and waits for its response.
    ///
    /// # Errors
    ///
    /// The server's error response, or `NANO-408` when no response came within
    /// [`TEST_TIMEOUT`].
    pub async fn request<T: Encode<S> + ?Sized, R: Decode<S>>(
        &self,
        route: &str,
        value: &T,
    ) -> Result<R, Error> {
        let mut payload = BytesMut::new();
        value.encode(&mut payload)?;
        let resp = self.request_raw(route, &payload).await?;
        R::decode(&resp)
    }

    /// Sends a request with a raw payload; returns the raw response payload.
    ///
    /// # Errors
    ///
    /// As [`TestClient::request`].
    pub async fn request_raw(&self, route: &str, payload: &[u8]) -> Result<Bytes, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut w = DataPacketWriter::request(id, route, None)
            .map_err(|e| Error::bad_request(e.to_string()))?;
        w.payload_mut().extend_from_slice(payload);
        let packet = w
            .finish(self.engine.max_packet_size())
            .map_err(|e| Error::bad_request(e.to_string()))?;
        self.send_packet(packet)
            .await
            .map_err(|e| Error::bad_request(e.to_string()))?;
        let resp = self.wait_response(id).await?;
        if resp.error {
            return Err(S::decode_error(&resp.payload)?);
        }
        Ok(resp.payload)
    }

    /// Sends a notify.
    ///
    /// # Errors
    ///
    /// `NANO-400` when the value cannot be encoded or the message is refused as malformed.
    pub async fn notify<T: Encode<S> + ?Sized>(&self, route: &str, value: &T) -> Result<(), Error> {
        let mut w =
            DataPacketWriter::notify(route, None).map_err(|e| Error::bad_request(e.to_string()))?;
        value.encode(w.payload_mut())?;
        let packet = w
            .finish(self.engine.max_packet_size())
            .map_err(|e| Error::bad_request(e.to_string()))?;
        self.send_packet(packet)
            .await
            .map_err(|e| Error::bad_request(e.to_string()))
    }

    /// Feeds raw bytes (one or more whole packets) through the real packet and message
    /// decoders, as a socket would.
    ///
    /// # Errors
    ///
    /// What a transport would close the connection for.
    pub async fn send_packet(&self, bytes: Bytes) -> Result<(), TestSendError> {
        let mut codec = PacketCodec::new(self.engine.max_packet_size());
        let mut buf = BytesMut::from(&bytes[..]);
        while let Some(packet) = codec.decode(&mut buf)? {
            if packet.kind != PacketType::Data {
                continue;
            }
            self.engine.handle_data(&self.session, packet.body).await?;
        }
        if !buf.is_empty() {
            return Err(TestSendError::Incomplete);
        }
        Ok(())
    }

    /// Every packet received so far, encoded (header included).
    pub fn packets(&self) -> Vec<Bytes> {
        lock(&self.link.packets).clone()
    }

    /// Every push received so far, in order.
    pub fn pushes(&self) -> Vec<Push> {
        self.messages()
            .into_iter()
            .filter(|m| m.kind == MessageType::Push)
            .map(|m| Push {
                route: m.route.map(|r| r.to_string()).unwrap_or_default(),
                payload: m.payload,
            })
            .collect()
    }

    /// Every response received so far, in order.
    pub fn responses(&self) -> Vec<Response> {
        self.messages()
            .into_iter()
            .filter(|m| m.kind == MessageType::Response)
            .map(|m| Response {
                id: m.id,
                error: m.error,
                payload: m.payload,
            })
            .collect()
    }

    /// Decodes the `n`-th push's payload.
    ///
    /// # Errors
    ///
    /// `NANO-404` when there is no such push, or the decode error.
    pub fn push_as<T: Decode<S>>(&self, n: usize) -> Result<T, Error> {
        let pushes = self.pushes();
        let p = pushes
            .get(n)
            .ok_or_else(|| Error::not_found(format!("no push #{n}")))?;
        T::decode(&p.payload)
    }

    /// Waits until at least `n` pushes have arrived.
    ///
    /// # Errors
    ///
    /// `NANO-408` on timeout.
    pub async fn wait_pushes(&self, n: usize) -> Result<Vec<Push>, Error> {
        self.wait_for(|c| {
            let p = c.pushes();
            (p.len() >= n).then_some(p)
        })
        .await
    }

    /// Waits for the response to request `id`.
    ///
    /// # Errors
    ///
    /// `NANO-408` on timeout.
    pub async fn wait_response(&self, id: u64) -> Result<Response, Error> {
        self.wait_for(|c| c.responses().into_iter().find(|r| r.id == id))
            .await
    }

    async fn wait_for<T>(&self, mut check: impl FnMut(&Self) -> Option<T>) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            let notified = self.link.notify.notified();
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new("NANO-408", "timed out waiting for the server"));
            }
        }
    }

    /// Whether the server kicked this client, and the reason it gave.
    pub fn kicked(&self) -> Option<Option<String>> {
        lock(&self.link.kicked).clone()
    }

    /// Whether the connection was closed by the server.
    pub fn is_closed(&self) -> bool {
        self.link.closed.load(Ordering::Acquire)
    }

    /// Simulates the client disconnecting: the session closes and its callbacks run.
    pub fn disconnect(&self) {
        self.link.close();
        self.session.closed();
    }

    fn messages(&self) -> Vec<Message> {
        let dict = self.engine.dictionary();
        let mut codec = PacketCodec::new(crate::protocol::MAX_BODY_LEN);
        let mut out = Vec::new();
        for p in self.packets() {
            let mut buf = BytesMut::from(&p[..]);
            if let Ok(Some(packet)) = codec.decode(&mut buf) {
                if packet.kind == PacketType::Data {
                    if let Ok(m) = Message::decode(packet.body, Some(dict)) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }
}

/// Why [`TestClient::send_packet`] failed: what a transport would close the connection for.
#[derive(Debug, thiserror::Error)]
pub enum TestSendError {
    /// The packet layer refused the bytes.
    #[error(transparent)]
    Codec(#[from] crate::protocol::CodecError),
    /// The message layer refused the message.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The bytes ended inside a packet.
    #[error("bytes ended inside a packet")]
    Incomplete,
}
