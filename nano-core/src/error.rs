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
/// `NANO-503`: the server is shutting down or a component is gone (in a cluster: the node
/// serving the route is unavailable).
pub const CODE_UNAVAILABLE: &str = "NANO-503";
/// `NANO-504`: in a cluster, the node serving the route did not answer within the forward
/// deadline.
pub const CODE_DEADLINE_EXCEEDED: &str = "NANO-504";

/// A client-visible error: a stable string code, a human-readable message and string metadata.
///
/// Handlers return `Result<T, Error>` (see [`Result`]); an `Err` is answered to the client as
/// an error response. An error made with a code ([`Error::new`], [`Error::bad_request`], ...)
/// reaches the client as it is.
///
/// # Errors from elsewhere never reach clients
///
/// `?` converts the common library errors (`std::io::Error`, `serde_json::Error`, prost's
/// errors, number and UTF-8 parse errors, `std::fmt::Error`, tokio's `JoinError`) into a
/// `NANO-500` whose message is only `"internal error"`: their text (file paths, SQL, addresses)
/// is traced with `tracing::error!`, never sent. Any other error converts the same way with
/// [`Error::internal_from`] or [`OrInternal::or_internal`], and with the `anyhow` feature
/// `anyhow::Error` converts with `?`.
///
/// `Error` implements `std::error::Error`, so `?` also works the other way, into
/// `anyhow::Result` or `Box<dyn std::error::Error>`.
///
/// ```
/// use nano_core::{Error, OrInternal, Result};
///
/// fn load(path: &str) -> Result<String> {
///     let text = std::fs::read_to_string(path)?; // io::Error: NANO-500 "internal error"
///     let n: u32 = text.trim().parse()?; // ParseIntError: the same
///     let _ = u8::try_from(n).or_internal()?; // any other std error
///     Ok(text)
/// }
///
/// let e = load("/no/such/file").unwrap_err();
/// assert_eq!((e.code(), e.message()), ("NANO-500", "internal error"));
/// ```
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

    /// `NANO-504`: no answer within a deadline (a request forwarded to another node).
    pub fn deadline_exceeded(msg: impl Into<String>) -> Self {
        Self::new(CODE_DEADLINE_EXCEEDED, msg)
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

impl std::error::Error for Error {}

/// The message clients get for an error converted from another type.
pub const INTERNAL_MESSAGE: &str = "internal error";

impl Error {
    /// `NANO-500` with the generic message `"internal error"` for an error from elsewhere; its
    /// text and debug form go to the trace (`tracing::error!`), never to the client.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::Error;
    ///
    /// let secret = std::io::Error::other("cannot open /etc/game/db.conf");
    /// let e = Error::internal_from(secret);
    /// assert_eq!(e.code(), "NANO-500");
    /// assert_eq!(e.message(), "internal error");
    /// ```
    pub fn internal_from(e: impl fmt::Display + fmt::Debug) -> Self {
        tracing::error!(error = %e, detail = ?e, "internal error (sent to the client as NANO-500 \"internal error\")");
        Error::internal(INTERNAL_MESSAGE)
    }
}

/// Converts the error of a `Result` into a generic `NANO-500` [`Error`] (see
/// [`Error::internal_from`]), for errors without a `From` conversion.
///
/// ```
/// use nano_core::{OrInternal, Result};
///
/// fn small(n: u32) -> Result<u8> {
///     u8::try_from(n).or_internal()
/// }
/// assert_eq!(small(300).unwrap_err().message(), "internal error");
/// ```
pub trait OrInternal<T> {
    /// The value, or a `NANO-500` "internal error" with the detail traced.
    ///
    /// # Errors
    ///
    /// `NANO-500` when `self` is an `Err`.
    fn or_internal(self) -> Result<T>;
}

impl<T, E: fmt::Display + fmt::Debug> OrInternal<T> for std::result::Result<T, E> {
    fn or_internal(self) -> Result<T> {
        self.map_err(Error::internal_from)
    }
}

/// `From` conversions into a generic `NANO-500` for the error types handlers meet most.
macro_rules! internal_from {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::internal_from(e)
            }
        }
    )*};
}

internal_from!(
    std::io::Error,
    std::fmt::Error,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::num::TryFromIntError,
    std::str::ParseBoolError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::net::AddrParseError,
    std::time::SystemTimeError,
    serde_json::Error,
    prost::DecodeError,
    prost::EncodeError,
    tokio::task::JoinError,
    crate::engine::BuildError,
);

#[cfg(feature = "anyhow")]
impl From<anyhow::Error> for Error {
    /// A generic `NANO-500`; the error chain is traced.
    fn from(e: anyhow::Error) -> Self {
        Error::internal_from(e)
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

#[cfg(all(test, feature = "anyhow"))]
mod anyhow_tests {
    use super::*;

    #[test]
    fn an_anyhow_error_becomes_a_generic_internal_error() {
        fn handler() -> Result<()> {
            Err(anyhow::anyhow!("select * from users: syntax error"))?;
            Ok(())
        }
        let e = handler().unwrap_err();
        assert_eq!((e.code(), e.message()), (CODE_INTERNAL, INTERNAL_MESSAGE));
    }
}
