//! The error type handlers return and clients receive.
//!
//! Every failure a client can cause has a stable string code. A request always gets exactly one
//! response: the handler's value, or an error response (flag `0x20`) whose body is the
//! serialized `{code, msg, metadata}` object of an [`Error`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// `NANO-400`: the payload could not be decoded, or the message was malformed.
pub const CODE_BAD_REQUEST: &str = "NANO-400";
/// `NANO-403`: the pipeline refused the message.
pub const CODE_FORBIDDEN: &str = "NANO-403";
/// `NANO-404`: no handler is registered for the route.
pub const CODE_NOT_FOUND: &str = "NANO-404";
/// `NANO-410`: the session is closed.
pub const CODE_CLOSED: &str = "NANO-410";
/// `NANO-429`: the session sent more messages than its rate limit allows (see
/// [`RateLimit`](crate::RateLimit)).
pub const CODE_TOO_MANY_REQUESTS: &str = "NANO-429";
/// `NANO-500`: the handler failed or panicked.
pub const CODE_INTERNAL: &str = "NANO-500";
/// `NANO-503`: the server is shutting down or a component is gone.
pub const CODE_UNAVAILABLE: &str = "NANO-503";

/// A client-visible error: a stable string code, a human-readable message and string metadata.
///
/// Handlers return `Result<T, Error>` (see [`Result`]); an `Err` is answered to the client as
/// an error response. Any `std::error::Error` converts into an `Error` with code `NANO-500`, so
/// `?` works on I/O, parse and database errors inside handlers.
///
/// # Examples
///
/// ```
/// use nano_core::Error;
///
/// let e = Error::new("GAME-001", "room is full").with_metadata("room", "lobby");
/// assert_eq!(e.code(), "GAME-001");
/// assert_eq!(e.message(), "room is full");
/// assert_eq!(e.metadata().get("room").map(String::as_str), Some("lobby"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: Cow<'static, str>,
    msg: String,
    metadata: BTreeMap<String, String>,
}

/// `Result` with [`Error`] as the default error type, the return type of handlers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code of the application's choosing and a message.
    pub fn new(code: impl Into<Cow<'static, str>>, msg: impl Into<String>) -> Self {
        Error {
            code: code.into(),
            msg: msg.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// `NANO-400`: undecodable payload or malformed message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(CODE_BAD_REQUEST, msg)
    }

    /// `NANO-403`: refused by a pipeline interceptor.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(CODE_FORBIDDEN, msg)
    }

    /// `NANO-404`: unknown route.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(CODE_NOT_FOUND, msg)
    }

    /// `NANO-410`: the session is closed.
    pub fn closed(msg: impl Into<String>) -> Self {
        Self::new(CODE_CLOSED, msg)
    }

    /// `NANO-429`: over the session's message rate limit.
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(CODE_TOO_MANY_REQUESTS, msg)
    }

    /// `NANO-500`: handler failure or panic.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(CODE_INTERNAL, msg)
    }

    /// `NANO-503`: the server is shutting down.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(CODE_UNAVAILABLE, msg)
    }

    /// Adds one metadata entry (sent to the client with the error).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The stable code, e.g. `NANO-404`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.msg
    }

    /// The metadata entries.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Rebuilds an error from the parts of a decoded error response (used by clients).
    pub fn from_parts(
        code: impl Into<Cow<'static, str>>,
        msg: impl Into<String>,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        Error {
            code: code.into(),
            msg: msg.into(),
            metadata,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code).field("msg", &self.msg);
        if !self.metadata.is_empty() {
            d.field("metadata", &self.metadata);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Self {
        Error::internal(e.to_string())
    }
}

/// The body of an error response as JSON: `{"code", "msg", "metadata"?}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct JsonError<'a> {
    pub code: Cow<'a, str>,
    pub msg: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The body of an error response as protobuf, field numbers as pitaya's `protos.Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoError {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub msg: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}
