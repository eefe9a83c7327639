//! A Rust client for nano / pomelo servers: bots, load tests, integration tests.
//!
//! [`Client::builder`] (or [`Client::connect_tcp`] / [`Client::connect_ws`] with the
//! defaults) connects over TCP, TLS or WebSocket, performs the nano handshake and returns a
//! [`Client`]: a cheap, cloneable handle usable from many tasks at once.
//!
//! - [`request`](Client::request) sends a request and waits for its response (matched by
//!   id, so responses may arrive in any order); an error response becomes
//!   [`ClientError::Server`], no answer within the timeout [`ClientError::Timeout`].
//! - [`notify`](Client::notify) sends a fire-and-forget message.
//! - [`on`](Client::on) subscribes to the pushes of one route, [`on_any`](Client::on_any)
//!   to all of them.
//! - [`closed`](Client::closed) tells how the connection ended: [`ClientEvent::Kicked`],
//!   [`ClientEvent::Disconnected`] or [`ClientEvent::Error`].
//!
//! Routes in the handshake's `dict` are sent compressed, and compressed pushes are decoded
//! with it. Heartbeats are sent at the interval the server announced. Everything the server
//! sends is validated: a malformed packet ends the connection with
//! [`ClientEvent::Error`], it never panics.
//!
//! # Examples
//!
//! A bot that joins a room, says hello and prints the chat:
//!
//! ```no_run
//! use nano_net::client::{Client, ClientError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct Join<'a> {
//!     room: &'a str,
//! }
//!
//! #[derive(Deserialize, Debug)]
//! struct Joined {
//!     members: Vec<String>,
//! }
//!
//! #[derive(Deserialize, Debug)]
//! struct Chat {
//!     from: String,
//!     text: String,
//! }
//!
//! # async fn bot() -> Result<(), ClientError> {
//! let client: Client = Client::builder()
//!     .handshake_user(serde_json::json!({"name": "bot-1"}))
//!     .connect_ws("ws://127.0.0.1:3250/nano")
//!     .await?;
//!
//! // Subscribe before triggering the pushes.
//! let mut chat = client.on("onMessage");
//!
//! let joined: Joined = client.request("Room.Join", &Join { room: "lobby" }).await?;
//! println!("in the room with {:?}", joined.members);
//! client
//!     .notify("Room.Say", &serde_json::json!({"text": "hello"}))
//!     .await?;
//!
//! while let Some(payload) = chat.recv().await {
//!     let msg: Chat = client.decode(&payload)?;
//!     println!("{}: {}", msg.from, msg.text);
//! }
//! println!("connection ended: {:?}", client.closed().await);
//! # Ok(())
//! # }
//! ```

mod builder;
mod conn;
mod error;
mod insecure;
mod resume;
mod ws;

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{DataPacketWriter, Dictionary, MessageType};
use nano_core::{Decode, Encode, Json, Serializer};
use tokio::net::ToSocketAddrs;
use tokio::sync::mpsc;

pub use builder::{ClientBuilder, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SERVER_NAME};
pub use error::ClientError;

use conn::Inner;

/// How long [`Client::close`] waits for queued packets to be written and the socket shut.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's handshake answer.
///
/// # Examples
///
/// A typical answer is
/// `{"code": 200, "sys": {"heartbeat": 30, "dict": {"Room.Join": 1}, "serializer": "json"}}`.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// `code`: 200 (a refused handshake fails the connect with [`ClientError::Handshake`]).
    pub code: u16,
    /// `sys.heartbeat`: the heartbeat interval; `None` when absent or 0.
    pub heartbeat: Option<Duration>,
    /// `sys.dict`: the route-compression dictionary; `None` when absent or empty.
    pub dict: Option<Dictionary>,
    /// `sys.serializer` (a pitaya extension): `"json"`, `"protobuf"`, …
    pub serializer: Option<String>,
    /// The whole answer as received (including `user`).
    pub raw: serde_json::Value,
}

impl HandshakeInfo {
    /// Parses the body of the server's handshake packet.
    ///
    /// A non-200 `code` is returned as is (the caller turns it into
    /// [`ClientError::Handshake`]); the `sys` fields are only checked on success.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ClientError> {
        let raw: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            ClientError::Protocol(format!("handshake answer is not valid JSON: {e}"))
        })?;
        let code = raw
            .get("code")
            .and_then(serde_json::Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .ok_or_else(|| {
                ClientError::Protocol(format!("handshake answer without a valid code: {raw}"))
            })?;
        let mut info = HandshakeInfo {
            code,
            heartbeat: None,
            dict: None,
            serializer: None,
            raw,
        };
        if code != 200 {
            return Ok(info);
        }
        let sys = match info.raw.get("sys") {
            None | Some(serde_json::Value::Null) => return Ok(info),
            Some(sys @ serde_json::Value::Object(_)) => sys,
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "handshake `sys` is not an object: {other}"
                )))
            }
        };
        info.heartbeat = match sys.get("heartbeat") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let secs = v.as_f64().filter(|s| *s >= 0.0).ok_or_else(|| {
                    ClientError::Protocol(format!("bad handshake heartbeat: {v}"))
                })?;
                let d = Duration::try_from_secs_f64(secs)
                    .map_err(|_| ClientError::Protocol(format!("bad handshake heartbeat: {v}")))?;
                (!d.is_zero()).then_some(d)
            }
        };
        info.dict = match sys.get("dict") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let dict = Dictionary::from_json(v)
                    .map_err(|e| ClientError::Protocol(format!("bad handshake dict: {e}")))?;
                (!dict.is_empty()).then_some(dict)
            }
        };
        info.serializer = match sys.get("serializer") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(ClientError::Protocol(format!(
                    "bad handshake serializer: {v}"
                )))
            }
        };
        Ok(info)
    }
}

/// How a connection ended (see [`Client::closed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server sent a Kick packet; `reason` is its `{"reason": …}` (pomelo) or `None`
    /// for an empty body (nano).
    Kicked {
        /// The kick reason, if the server gave one.
        reason: Option<String>,
    },
    /// The connection was closed without a Kick: end of stream, WebSocket close frame, or
    /// [`Client::close`].
    Disconnected,
    /// The connection failed: I/O error, malformed data from the server, heartbeat timeout.
    Error(String),
}

/// What happened to the connection of a client whose server resumes sessions (see
/// [`Client::connection_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The connection dropped (not a Kick): the client dials again, with backoff, for the
    /// grace period the server announced. Requests wait meanwhile (within their timeout).
    Lost(ClientEvent),
    /// Back on the same session: uid, groups and data are as they were, what the server sent
    /// meanwhile arrives now, in order, once, and pending requests get their answers.
    Resumed,
    /// Back, but on a new session (the old one ended): requests that were pending failed
    /// with [`ClientError::Closed`]; log in and join again.
    NewSession,
}

/// The pushes of one route (see [`Client::on`]): their payloads, in arrival order.
///
/// Ends (`None`) when the connection ends. Unbounded: read it, or drop it to unsubscribe.
/// Also a [`futures_util::Stream`].
#[derive(Debug)]
pub struct PushStream {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl PushStream {
    /// The next push payload; `None` once the connection has ended and all were read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// The next push payload if one is already there.
    ///
    /// # Errors
    ///
    /// `Empty` when nothing is waiting, `Disconnected` when the stream has ended.
    pub fn try_recv(&mut self) -> Result<Bytes, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// The underlying tokio receiver.
    #[must_use]
    pub fn into_inner(self) -> mpsc::UnboundedReceiver<Bytes> {
        self.rx
    }
}

impl futures_util::Stream for PushStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}

/// Every push (see [`Client::on_any`]) as `(route, payload)`, in arrival order.
///
/// Ends (`None`) when the connection ends. Also a [`futures_util::Stream`].
#[derive(Debug)]
pub struct AnyPushStream {
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
}

impl AnyPushStream {
    /// The next push; `None` once the connection has ended and all were read.
    pub async fn recv(&mut self) -> Option<(String, Bytes)> {
        self.rx.recv().await
    }

    /// The next push if one is already there.
    ///
    /// # Errors
    ///
    /// `Empty` when nothing is waiting, `Disconnected` when the stream has ended.
    pub fn try_recv(&mut self) -> Result<(String, Bytes), mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// The underlying tokio receiver.
    #[must_use]
    pub fn into_inner(self) -> mpsc::UnboundedReceiver<(String, Bytes)> {
        self.rx
    }
}

impl futures_util::Stream for AnyPushStream {
    type Item = (String, Bytes);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(String, Bytes)>> {
        self.rx.poll_recv(cx)
    }
}

/// Owned by the client handles: closes the connection when the last handle is dropped.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.finish(ClientEvent::Disconnected);
    }
}

/// A connection to a nano server (see the [module documentation](self)).
///
/// Cloning is cheap and every clone drives the same connection; the connection is closed
/// when the last clone is dropped. `S` is the application's serializer ([`Json`] by
/// default).
pub struct Client<S = Json> {
    handle: Arc<Handle>,
    _serializer: PhantomData<fn() -> S>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Client {
            handle: Arc::clone(&self.handle),
            _serializer: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("Client")
            .field("handshake", &inner.handshake.raw)
            .field("closed", &inner.event())
            .finish_non_exhaustive()
    }
}

impl<S: Serializer> Client<S> {
    /// Wraps a started connection.
    fn from_inner(inner: Arc<Inner>) -> Self {
        Client {
            handle: Arc::new(Handle { inner }),
            _serializer: PhantomData,
        }
    }

    #[inline]
    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// A [`ClientBuilder`] with the default options.
    #[must_use]
    pub fn builder() -> ClientBuilder<S> {
        ClientBuilder::new()
    }

    /// Connects over plain TCP with the default options.
    ///
    /// # Errors
    ///
    /// See [`ClientBuilder::connect_tcp`].
    pub async fn connect_tcp(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        Self::builder().connect_tcp(addr).await
    }

    /// Connects to a `ws://` URL with the default options.
    ///
    /// # Errors
    ///
    /// See [`ClientBuilder::connect_ws`].
    pub async fn connect_ws(url: &str) -> Result<Self, ClientError> {
        Self::builder().connect_ws(url).await
    }

    /// The server's handshake answer.
    #[must_use]
    pub fn handshake(&self) -> &HandshakeInfo {
        &self.inner().handshake
    }

    /// Sends a request to `route` with `value` encoded by `S`, and decodes the response.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] for an error response, [`ClientError::Timeout`],
    /// [`ClientError::Closed`] (before or while waiting), [`ClientError::Encode`],
    /// [`ClientError::Decode`] (the response is not an `R`).
    pub async fn request<T, R>(&self, route: &str, value: &T) -> Result<R, ClientError>
    where
        T: Encode<S> + ?Sized,
        R: Decode<S>,
    {
        let id = self.inner().next_id();
        let packet = self.build(MessageType::Request, id, route, |dst| value.encode(dst))?;
        let payload = self.round_trip(id, packet).await?;
        R::decode(&payload).map_err(ClientError::Decode)
    }

    /// Sends a request whose payload is `payload` as is; returns the response payload.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request) (an error response is still decoded with `S`).
    pub async fn request_raw(&self, route: &str, payload: &[u8]) -> Result<Bytes, ClientError> {
        let id = self.inner().next_id();
        let packet = self.build(MessageType::Request, id, route, |dst| {
            dst.extend_from_slice(payload);
            Ok(())
        })?;
        self.round_trip(id, packet).await
    }

    /// Sends a notify to `route` with `value` encoded by `S` (no answer expected).
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`], [`ClientError::Encode`].
    pub async fn notify<T>(&self, route: &str, value: &T) -> Result<(), ClientError>
    where
        T: Encode<S> + ?Sized,
    {
        let packet = self.build(MessageType::Notify, 0, route, |dst| value.encode(dst))?;
        self.send_raw(packet).await
    }

    /// Sends a notify whose payload is `payload` as is.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`], [`ClientError::Encode`] (route or packet too long).
    pub async fn notify_raw(&self, route: &str, payload: &[u8]) -> Result<(), ClientError> {
        let packet = self.build(MessageType::Notify, 0, route, |dst| {
            dst.extend_from_slice(payload);
            Ok(())
        })?;
        self.send_raw(packet).await
    }

    /// Subscribes to the pushes of `route` (payloads only). Several subscribers per route
    /// are fine; subscribe before triggering the push, earlier pushes are not replayed.
    #[must_use]
    pub fn on(&self, route: &str) -> PushStream {
        PushStream {
            rx: self.inner().subscribe(route),
        }
    }

    /// Subscribes to every push, as `(route, payload)`.
    #[must_use]
    pub fn on_any(&self) -> AnyPushStream {
        AnyPushStream {
            rx: self.inner().subscribe_any(),
        }
    }

    /// Decodes a payload (for example a push) with the application's serializer.
    ///
    /// # Errors
    ///
    /// [`ClientError::Decode`] when the bytes are not a `T`.
    pub fn decode<T: Decode<S>>(&self, payload: &[u8]) -> Result<T, ClientError> {
        T::decode(payload).map_err(ClientError::Decode)
    }

    /// Writes `bytes` to the connection verbatim, in order with the other packets (tests use
    /// it to send invalid packets). Over WebSocket they travel in one binary frame (possibly
    /// with other queued packets).
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] when the connection has ended.
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), ClientError> {
        self.inner().enqueue(bytes).await
    }

    /// Waits until the connection ends and tells how. Returns at once if it already has.
    pub async fn closed(&self) -> ClientEvent {
        let inner = self.inner();
        inner.shutdown.cancelled().await;
        inner.event().unwrap_or(ClientEvent::Disconnected)
    }

    /// `true` once the connection has ended.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner().is_closed()
    }

    /// Closes the connection: pending requests fail with [`ClientError::Closed`], the
    /// packets already queued are written, then the socket is shut down (TCP FIN / TLS
    /// close_notify / WebSocket close frame). Returns when that is done (at most ~2 s).
    /// [`closed`](Self::closed) then reports [`ClientEvent::Disconnected`], unless the
    /// connection had already ended otherwise.
    pub async fn close(&self) {
        let inner = self.inner();
        inner.finish(ClientEvent::Disconnected);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, inner.writer_done.cancelled()).await;
    }

    /// Subscribes to what happens to the connection: lost, resumed, or replaced by a new
    /// session. Only a server that resumes sessions makes the client reconnect; the stream
    /// ends when the client does.
    #[must_use]
    pub fn connection_events(&self) -> mpsc::UnboundedReceiver<ConnectionEvent> {
        self.inner().watch()
    }

    /// Data packets (responses and pushes) received in the session so far, over all its
    /// connections: what the client tells the server when it resumes.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.inner()
            .received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the client will reconnect and resume its session when the connection drops
    /// (the server offered it, and [`ClientBuilder::reconnect`] is on).
    #[must_use]
    pub fn is_resumable(&self) -> bool {
        conn::lock(&self.inner().resume).is_some()
    }

    /// Number of Heartbeat packets received from the server.
    #[must_use]
    pub fn heartbeats_received(&self) -> u64 {
        self.inner().heartbeats()
    }

    /// Builds a request or notify packet; `payload` appends the payload.
    fn build(
        &self,
        kind: MessageType,
        id: u64,
        route: &str,
        payload: impl FnOnce(&mut BytesMut) -> Result<(), nano_core::Error>,
    ) -> Result<Bytes, ClientError> {
        let inner = self.inner();
        let dict = inner.handshake.dict.as_ref();
        let writer = match kind {
            MessageType::Request => DataPacketWriter::request(id, route, dict),
            _ => DataPacketWriter::notify(route, dict),
        };
        let mut writer = writer
            .map_err(|e| ClientError::Encode(nano_core::Error::new(e.code(), e.to_string())))?;
        payload(writer.payload_mut()).map_err(ClientError::Encode)?;
        writer
            .finish(inner.max_packet_size)
            .map_err(|e| ClientError::Encode(nano_core::Error::new(e.code(), e.to_string())))
    }

    /// Registers request `id`, sends its packet and waits for the response payload.
    async fn round_trip(&self, id: u64, packet: Bytes) -> Result<Bytes, ClientError> {
        let inner = self.inner();
        let rx = inner.register(id, &packet)?;
        let mut guard = PendingGuard {
            inner,
            id,
            armed: true,
        };
        let exchange = async {
            inner.enqueue(packet).await?;
            rx.await.map_err(|_| ClientError::Closed)
        };
        let reply = match tokio::time::timeout(inner.request_timeout, exchange).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(reply) => reply?,
        };
        // Answered: the reader removed the entry already.
        guard.armed = false;
        if reply.error {
            let err = S::decode_error(&reply.payload).map_err(ClientError::Decode)?;
            return Err(ClientError::Server(err));
        }
        Ok(reply.payload)
    }
}

/// Removes a pending request that will not be answered (timeout, cancelled future).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.unregister(self.id);
        }
    }
}
