//! Serializers: how payloads become bytes and back.
//!
//! An application picks one serializer ([`Json`] or [`Protobuf`], or its own) and every
//! component, session and group of that application is typed by it. The traits [`Decode`] and
//! [`Encode`] tie a payload type to a serializer, so a payload the chosen serializer cannot
//! handle is a compile error at the handler that takes it.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{JsonError, ProtoError};
use crate::Error;

/// A wire format for payloads, chosen once per application.
///
/// Implementations are zero-sized markers; the work is done by [`Decode`] and [`Encode`] impls
/// for the payload types.
pub trait Serializer: Send + Sync + 'static {
    /// The name reported to clients in the handshake (`sys.serializer`).
    const NAME: &'static str;

    /// Writes the body of an error response for `err`.
    fn encode_error(err: &Error, dst: &mut BytesMut);

    /// Reads the body of an error response (used by clients and tests).
    fn decode_error(bytes: &[u8]) -> Result<Error, Error>;
}

/// JSON via `serde_json`: payloads implement `serde::Serialize` / `serde::Deserialize`.
///
/// # Examples
///
/// ```
/// use nano_core::{Decode, Encode, Json};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Hello { name: String }
///
/// let mut buf = bytes::BytesMut::new();
/// Encode::<Json>::encode(&Hello { name: "a".into() }, &mut buf).unwrap();
/// assert_eq!(&buf[..], br#"{"name":"a"}"#);
/// let back: Hello = Decode::<Json>::decode(&buf).unwrap();
/// assert_eq!(back.name, "a");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

/// Protocol buffers via `prost`: payloads implement `prost::Message`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protobuf;

impl Serializer for Json {
    const NAME: &'static str = "json";

    fn encode_error(err: &Error, dst: &mut BytesMut) {
        let body = JsonError {
            code: Cow::Borrowed(err.code()),
            msg: Cow::Borrowed(err.message()),
            metadata: err.metadata().clone(),
        };
        // Serializing strings and a string map into memory cannot fail.
        if serde_json::to_writer(dst.writer(), &body).is_err() {
            tracing::error!("could not serialize an error response");
        }
    }

    fn decode_error(bytes: &[u8]) -> Result<Error, Error> {
        let e: JsonError<'_> = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("undecodable error response: {e}")))?;
        Ok(Error::from_parts(
            e.code.into_owned(),
            e.msg.into_owned(),
            e.metadata,
        ))
    }
}

impl Serializer for Protobuf {
    const NAME: &'static str = "protobuf";

    fn encode_error(err: &Error, dst: &mut BytesMut) {
        let body = ProtoError {
            code: err.code().to_owned(),
            msg: err.message().to_owned(),
            metadata: err.metadata().clone(),
        };
        if prost::Message::encode(&body, dst).is_err() {
            tracing::error!("could not serialize an error response");
        }
    }

    fn decode_error(bytes: &[u8]) -> Result<Error, Error> {
        let e: ProtoError = prost::Message::decode(bytes)
            .map_err(|e| Error::bad_request(format!("undecodable error response: {e}")))?;
        Ok(Error::from_parts(e.code, e.msg, e.metadata))
    }
}

/// A payload type that serializer `S` can decode.
///
/// Implemented for every `serde::de::DeserializeOwned` type under [`Json`] and every
/// `prost::Message + Default` type under [`Protobuf`]. Raw payloads (`Bytes`, `Vec<u8>`) need
/// no serializer and are handled by the `#[component]` macro directly.
#[diagnostic::on_unimplemented(
    message = "the payload type `{Self}` cannot be decoded by the `{S}` serializer",
    label = "not decodable by `{S}`",
    note = "with `Json`, derive `serde::Deserialize`; with `Protobuf`, derive `prost::Message`; for raw bytes take `Bytes` or `Vec<u8>`"
)]
pub trait Decode<S>: Sized {
    /// Decodes a payload.
    ///
    /// # Errors
    ///
    /// A `NANO-400` error when the bytes are not a valid encoding of `Self`.
    fn decode(bytes: &[u8]) -> Result<Self, Error>;
}

/// A value that serializer `S` can encode (responses, pushes, broadcasts).
#[diagnostic::on_unimplemented(
    message = "the type `{Self}` cannot be encoded by the `{S}` serializer",
    label = "not encodable by `{S}`",
    note = "with `Json`, derive `serde::Serialize`; with `Protobuf`, derive `prost::Message`"
)]
pub trait Encode<S> {
    /// Appends the encoding of `self` to `dst`.
    ///
    /// # Errors
    ///
    /// A `NANO-500` error when the value cannot be serialized (e.g. a map with non-string keys
    /// in JSON).
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Error>;
}

impl<T: DeserializeOwned> Decode<Json> for T {
    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        // nano clients send an empty body for "no payload"; read it as `null`, then `{}`, so
        // `()`, `Option<T>` and all-default structs accept it.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"null")
                .or_else(|_| serde_json::from_slice(b"{}"))
                .map_err(|e| Error::bad_request(format!("empty payload: {e}")));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("undecodable payload: {e}")))
    }
}

impl<T: Serialize + ?Sized> Encode<Json> for T {
    #[inline]
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        serde_json::to_writer(dst.writer(), self)
            .map_err(|e| Error::internal(format!("could not serialize: {e}")))
    }
}

impl<T: prost::Message + Default> Decode<Protobuf> for T {
    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        T::decode(bytes).map_err(|e| Error::bad_request(format!("undecodable payload: {e}")))
    }
}

impl<T: prost::Message> Encode<Protobuf> for T {
    #[inline]
    fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.reserve(self.encoded_len());
        prost::Message::encode(self, dst)
            .map_err(|e| Error::internal(format!("could not serialize: {e}")))
    }
}
