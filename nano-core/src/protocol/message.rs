//! The message layer: the body of a data packet.
//!
//! ```text
//! flag (1 byte) | id (varint; request/response) | route (request/notify/push) | payload
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::packet::{header_bytes, HEADER_LEN, MAX_BODY_LEN};
use super::varint::{decode_varint, encode_varint, varint_len};
use super::{CodecError, Dictionary, MessageError, PacketType, RouteName};

/// Longest route that can be sent uncompressed (its length is one byte).
pub const MAX_ROUTE_LEN: usize = 255;

/// Flag bit 0: the route is a 2-byte dictionary code.
const FLAG_ROUTE_COMPRESSED: u8 = 0x01;
/// Flag bits 1–3: the message type.
const FLAG_TYPE_MASK: u8 = 0x0E;
/// Flag bit 4: the payload is compressed (pitaya); refused.
const FLAG_PAYLOAD_COMPRESSED: u8 = 0x10;
/// Flag bit 5: the response carries an error object (pitaya).
const FLAG_ERROR: u8 = 0x20;
/// Flag bits 6–7: reserved, must be zero.
const FLAG_RESERVED: u8 = 0xC0;

/// Default room for the payload of a [`DataPacketWriter`] when no hint is given.
const DEFAULT_PAYLOAD_CAPACITY: usize = 128;

/// The type of a message (flag bits 1–3).
///
/// # Examples
///
/// ```
/// use nano_core::protocol::MessageType;
///
/// assert!(MessageType::Request.has_id() && MessageType::Request.has_route());
/// assert!(!MessageType::Push.has_id() && MessageType::Push.has_route());
/// assert!(MessageType::Response.has_id() && !MessageType::Response.has_route());
/// ```
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client → server, expects exactly one response with the same id.
    Request = 0,
    /// Client → server, fire and forget.
    Notify = 1,
    /// Server → client, answers a request.
    Response = 2,
    /// Server → client, unsolicited event.
    Push = 3,
}

impl MessageType {
    /// `true` for the types that carry a message id (request, response).
    #[inline]
    #[must_use]
    pub const fn has_id(self) -> bool {
        matches!(self, MessageType::Request | MessageType::Response)
    }

    /// `true` for the types that carry a route (request, notify, push).
    #[inline]
    #[must_use]
    pub const fn has_route(self) -> bool {
        !matches!(self, MessageType::Response)
    }

    /// Lower-case name, for errors and logs.
    const fn name(self) -> &'static str {
        match self {
            MessageType::Request => "request",
            MessageType::Notify => "notify",
            MessageType::Response => "response",
            MessageType::Push => "push",
        }
    }
}

impl TryFrom<u8> for MessageType {
    type Error = MessageError;

    /// Converts the 3-bit type value (not the whole flag byte).
    #[inline]
    fn try_from(value: u8) -> Result<Self, MessageError> {
        Ok(match value {
            0 => MessageType::Request,
            1 => MessageType::Notify,
            2 => MessageType::Response,
            3 => MessageType::Push,
            other => return Err(MessageError::BadMessageType(other)),
        })
    }
}

/// A decoded (or to-be-encoded) message.
///
/// # Examples
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use nano_core::protocol::{Dictionary, Message, MessageType};
///
/// let dict = Dictionary::from_routes(["Room.Join"]);
/// let mut out = BytesMut::new();
/// Message::request(7, "Room.Join", "{}").encode_packet(Some(&dict), &mut out)?;
/// assert_eq!(&out[..], b"\x04\x00\x00\x06\x01\x07\x00\x01{}"); // route sent as code 1
///
/// let msg = Message::decode(Bytes::copy_from_slice(&out[4..]), Some(&dict))?;
/// assert_eq!(msg.kind, MessageType::Request);
/// assert_eq!((msg.id, msg.route_code), (7, Some(1)));
/// assert_eq!(msg.route.unwrap(), "Room.Join");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, notify, response or push.
    pub kind: MessageType,
    /// Message id: set for request and response, 0 for notify and push.
    pub id: u64,
    /// The route: `None` for a response. When it arrived compressed it is the dictionary's
    /// route for [`route_code`](Self::route_code).
    pub route: Option<RouteName>,
    /// `Some(code)` when the route arrived compressed.
    pub route_code: Option<u16>,
    /// Error flag (`0x20`): the payload is an error object (pitaya extension).
    pub error: bool,
    /// The payload, a zero-copy slice of the packet body.
    pub payload: Bytes,
}

impl Message {
    /// A request with `id` to `route`.
    #[inline]
    pub fn request(id: u64, route: impl Into<RouteName>, payload: impl Into<Bytes>) -> Self {
        Message::with(MessageType::Request, id, Some(route.into()), payload.into())
    }

    /// A notify to `route`.
    #[inline]
    pub fn notify(route: impl Into<RouteName>, payload: impl Into<Bytes>) -> Self {
        Message::with(MessageType::Notify, 0, Some(route.into()), payload.into())
    }

    /// A response to the request `id`.
    #[inline]
    pub fn response(id: u64, payload: impl Into<Bytes>) -> Self {
        Message::with(MessageType::Response, id, None, payload.into())
    }

    /// A push of event `route`.
    #[inline]
    pub fn push(route: impl Into<RouteName>, payload: impl Into<Bytes>) -> Self {
        Message::with(MessageType::Push, 0, Some(route.into()), payload.into())
    }

    /// An error response (flag `0x20`) to the request `id`; `payload` is the serialized
    /// `{"code": …, "msg": …}` object.
    #[inline]
    pub fn error_response(id: u64, payload: impl Into<Bytes>) -> Self {
        Message {
            error: true,
            ..Message::response(id, payload)
        }
    }

    #[inline]
    fn with(kind: MessageType, id: u64, route: Option<RouteName>, payload: Bytes) -> Self {
        Message {
            kind,
            id,
            route,
            route_code: None,
            error: false,
            payload,
        }
    }

    /// `true` for the kinds a client may send (request, notify). A server should refuse
    /// other kinds from a client; [`decode`](Self::decode) itself accepts every kind.
    #[inline]
    #[must_use]
    pub fn is_client_kind(&self) -> bool {
        matches!(self.kind, MessageType::Request | MessageType::Notify)
    }

    /// Decodes the body of a data packet. The route (when uncompressed) and the payload are
    /// zero-copy slices of `body`. `dict` resolves compressed routes.
    ///
    /// Like nano and pomelo, a route-compressed flag on a response (which has no route) is
    /// ignored: pomelo servers set it.
    ///
    /// # Errors
    ///
    /// [`MessageError::Empty`], [`ReservedFlags`](MessageError::ReservedFlags),
    /// [`BadMessageType`](MessageError::BadMessageType) (4–7),
    /// [`CompressedPayload`](MessageError::CompressedPayload) (flag `0x10`),
    /// [`VarintTooLong`](MessageError::VarintTooLong),
    /// [`Truncated`](MessageError::Truncated) (`"message id"`, `"route code"`,
    /// `"route length"`, `"route"`), [`RouteNotUtf8`](MessageError::RouteNotUtf8),
    /// [`MissingDictionary`](MessageError::MissingDictionary) or
    /// [`UnknownRouteCode`](MessageError::UnknownRouteCode) for a compressed route.
    pub fn decode(mut body: Bytes, dict: Option<&Dictionary>) -> Result<Message, MessageError> {
        let buf: &[u8] = &body;
        let Some(&flag) = buf.first() else {
            return Err(MessageError::Empty);
        };
        if flag & FLAG_RESERVED != 0 {
            return Err(MessageError::ReservedFlags(flag));
        }
        let kind = MessageType::try_from((flag & FLAG_TYPE_MASK) >> 1)?;
        if flag & FLAG_PAYLOAD_COMPRESSED != 0 {
            return Err(MessageError::CompressedPayload);
        }
        let mut pos = 1;

        let mut id = 0;
        if kind.has_id() {
            let (value, n) = decode_varint(&buf[pos..]).map_err(|e| match e {
                MessageError::Truncated(_) => MessageError::Truncated("message id"),
                other => other,
            })?;
            id = value;
            pos += n;
        }

        let mut route = None;
        let mut route_code = None;
        if kind.has_route() {
            if flag & FLAG_ROUTE_COMPRESSED != 0 {
                let Some(&[hi, lo]) = buf.get(pos..pos + 2) else {
                    return Err(MessageError::Truncated("route code"));
                };
                let code = u16::from_be_bytes([hi, lo]);
                pos += 2;
                let dict = dict.ok_or(MessageError::MissingDictionary)?;
                let name = dict
                    .route(code)
                    .ok_or(MessageError::UnknownRouteCode(code))?;
                route = Some(name.clone());
                route_code = Some(code);
            } else {
                let Some(&len) = buf.get(pos) else {
                    return Err(MessageError::Truncated("route length"));
                };
                let len = usize::from(len);
                pos += 1;
                if buf.len() - pos < len {
                    return Err(MessageError::Truncated("route"));
                }
                route = Some(RouteName::try_from_bytes(body.slice(pos..pos + len))?);
                pos += len;
            }
        }

        body.advance(pos);
        Ok(Message {
            kind,
            id,
            route,
            route_code,
            error: flag & FLAG_ERROR != 0,
            payload: body,
        })
    }

    /// Appends this message as a complete data packet (header + message) to `dst`.
    ///
    /// The route is sent as its dictionary code when `dict` has it, else as a string. A
    /// message without `route` but with a `route_code` is sent compressed when `dict` knows
    /// that code. `id` is written only for request/response, the route only for
    /// request/notify/push. Only the 24-bit limit is enforced; use [`DataPacketWriter`]
    /// to enforce a configured limit.
    ///
    /// # Errors
    ///
    /// Nothing is written on error:
    /// - [`MessageError::RouteTooLong`] for an uncompressed route over 255 bytes;
    /// - [`MessageError::MissingRoute`], or [`MessageError::MissingDictionary`] /
    ///   [`MessageError::UnknownRouteCode`] for a code-only route the dictionary lacks;
    /// - [`CodecError::TooLarge`] if the body exceeds [`MAX_BODY_LEN`].
    pub fn encode_packet(
        &self,
        dict: Option<&Dictionary>,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let route = if self.kind.has_route() {
            match (&self.route, self.route_code) {
                (Some(route), _) => RouteRepr::resolve(route, dict)?,
                (None, Some(code)) => match dict {
                    Some(d) if d.route(code).is_some() => RouteRepr::Code(code),
                    Some(_) => return Err(MessageError::UnknownRouteCode(code).into()),
                    None => return Err(MessageError::MissingDictionary.into()),
                },
                (None, None) => return Err(MessageError::MissingRoute(self.kind.name()).into()),
            }
        } else {
            RouteRepr::Absent
        };
        let head = MessageHead {
            kind: self.kind,
            id: self.id,
            route,
            error: self.error,
        };
        let body_len = head.len() + self.payload.len();
        let header = header_bytes(PacketType::Data, body_len)?;
        dst.reserve(HEADER_LEN + body_len);
        dst.extend_from_slice(&header);
        head.put(dst);
        dst.extend_from_slice(&self.payload);
        Ok(())
    }
}

/// How the route is written.
#[derive(Debug, Clone, Copy)]
enum RouteRepr<'a> {
    /// No route (response).
    Absent,
    /// 2-byte dictionary code.
    Code(u16),
    /// Length byte + UTF-8 bytes (at most 255).
    Name(&'a [u8]),
}

impl<'a> RouteRepr<'a> {
    /// The dictionary code of `route` if it has one, else the checked string.
    #[inline]
    fn resolve(route: &'a str, dict: Option<&Dictionary>) -> Result<Self, MessageError> {
        if let Some(code) = dict.and_then(|d| d.code(route)) {
            return Ok(RouteRepr::Code(code));
        }
        if route.len() > MAX_ROUTE_LEN {
            return Err(MessageError::RouteTooLong(route.len()));
        }
        Ok(RouteRepr::Name(route.as_bytes()))
    }
}

/// Everything of a message before its payload.
#[derive(Debug, Clone, Copy)]
struct MessageHead<'a> {
    kind: MessageType,
    id: u64,
    route: RouteRepr<'a>,
    error: bool,
}

impl MessageHead<'_> {
    /// Encoded length of flag, id and route.
    #[inline]
    fn len(&self) -> usize {
        let id = if self.kind.has_id() {
            varint_len(self.id)
        } else {
            0
        };
        let route = match self.route {
            RouteRepr::Absent => 0,
            RouteRepr::Code(_) => 2,
            RouteRepr::Name(name) => 1 + name.len(),
        };
        1 + id + route
    }

    /// Writes flag, id and route.
    #[inline]
    fn put(&self, dst: &mut BytesMut) {
        let mut flag = (self.kind as u8) << 1;
        if matches!(self.route, RouteRepr::Code(_)) {
            flag |= FLAG_ROUTE_COMPRESSED;
        }
        if self.error {
            flag |= FLAG_ERROR;
        }
        dst.put_u8(flag);
        if self.kind.has_id() {
            encode_varint(self.id, dst);
        }
        match self.route {
            RouteRepr::Absent => {}
            RouteRepr::Code(code) => dst.put_u16(code),
            RouteRepr::Name(name) => {
                // `resolve` checked name.len() <= 255.
                dst.put_u8(name.len() as u8);
                dst.extend_from_slice(name);
            }
        }
    }
}

/// Builds a whole data packet in one buffer, so a serializer writes the payload straight into
/// the output: the packet header is reserved, the message head written, the payload appended
/// through [`payload_mut`](Self::payload_mut), and [`finish`](Self::finish) patches the
/// 24-bit length. No intermediate payload buffer, no copy.
///
/// # Examples
///
/// ```
/// use bytes::BufMut;
/// use nano_core::protocol::{DataPacketWriter, DEFAULT_MAX_PACKET_SIZE};
///
/// let mut w = DataPacketWriter::response(1, false).with_capacity_hint(32);
/// serde_json::to_writer(w.payload_mut().writer(), &serde_json::json!({"code": 0}))?;
/// let packet = w.finish(DEFAULT_MAX_PACKET_SIZE)?;
/// assert_eq!(&packet[..], b"\x04\x00\x00\x0c\x04\x01{\"code\":0}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DataPacketWriter {
    /// Packet header placeholder, message head, then the payload.
    buf: BytesMut,
    /// Length of header + message head: where the payload starts.
    payload_start: usize,
}

impl DataPacketWriter {
    /// Starts a packet whose message head is `head`.
    #[inline]
    fn start(head: MessageHead<'_>) -> Self {
        let payload_start = HEADER_LEN + head.len();
        let mut buf = BytesMut::with_capacity(payload_start + DEFAULT_PAYLOAD_CAPACITY);
        buf.put_slice(&[PacketType::Data as u8, 0, 0, 0]);
        head.put(&mut buf);
        DataPacketWriter { buf, payload_start }
    }

    /// Starts a routed message, compressing the route when `dict` has it.
    #[inline]
    fn routed(
        kind: MessageType,
        id: u64,
        route: &str,
        dict: Option<&Dictionary>,
    ) -> Result<Self, MessageError> {
        Ok(Self::start(MessageHead {
            kind,
            id,
            route: RouteRepr::resolve(route, dict)?,
            error: false,
        }))
    }

    /// Starts a response to request `id`; `error` sets the error flag (`0x20`).
    #[inline]
    #[must_use]
    pub fn response(id: u64, error: bool) -> Self {
        Self::start(MessageHead {
            kind: MessageType::Response,
            id,
            route: RouteRepr::Absent,
            error,
        })
    }

    /// Starts a push of event `route`.
    ///
    /// # Errors
    ///
    /// [`MessageError::RouteTooLong`] if the route is not in `dict` and exceeds 255 bytes.
    #[inline]
    pub fn push(route: &str, dict: Option<&Dictionary>) -> Result<Self, MessageError> {
        Self::routed(MessageType::Push, 0, route, dict)
    }

    /// Starts a request with `id` to `route` (client side).
    ///
    /// # Errors
    ///
    /// [`MessageError::RouteTooLong`] if the route is not in `dict` and exceeds 255 bytes.
    #[inline]
    pub fn request(id: u64, route: &str, dict: Option<&Dictionary>) -> Result<Self, MessageError> {
        Self::routed(MessageType::Request, id, route, dict)
    }

    /// Starts a notify to `route` (client side).
    ///
    /// # Errors
    ///
    /// [`MessageError::RouteTooLong`] if the route is not in `dict` and exceeds 255 bytes.
    #[inline]
    pub fn notify(route: &str, dict: Option<&Dictionary>) -> Result<Self, MessageError> {
        Self::routed(MessageType::Notify, 0, route, dict)
    }

    /// Reserves room for at least `n` more payload bytes.
    #[inline]
    #[must_use]
    pub fn with_capacity_hint(mut self, n: usize) -> Self {
        self.buf.reserve(n);
        self
    }

    /// The buffer to append the payload to (`BufMut`, or `.writer()` for `io::Write`).
    /// Only append: the bytes already in it are the packet and message headers.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Number of payload bytes written so far.
    #[inline]
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.buf.len().saturating_sub(self.payload_start)
    }

    /// Patches the length into the header and returns the whole packet.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] if the body exceeds `max_packet_size` (or [`MAX_BODY_LEN`]);
    /// [`MessageError::Truncated`] if bytes before the payload were removed through
    /// [`payload_mut`](Self::payload_mut).
    #[inline]
    pub fn finish(mut self, max_packet_size: usize) -> Result<Bytes, CodecError> {
        if self.buf.len() < self.payload_start {
            return Err(MessageError::Truncated("message head").into());
        }
        let len = self.buf.len() - HEADER_LEN;
        let max = max_packet_size.min(MAX_BODY_LEN);
        if len > max {
            return Err(CodecError::TooLarge { len, max });
        }
        self.buf[..HEADER_LEN].copy_from_slice(&header_bytes(PacketType::Data, len)?);
        Ok(self.buf.freeze())
    }
}
