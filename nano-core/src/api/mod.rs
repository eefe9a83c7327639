//! The application's API as its clients see it: every route with its kind, compressed code
//! and payload types, every push a component declares, and the payload schemas (JSON Schema,
//! from [`schemars`]), ready to be written out for client developers or turned into typed
//! client stubs ([`typescript`]).
//!
//! `#[component]` records each handler's request and response types, and the pushes declared
//! with `#[component(pushes(onMessage = UserMessage))]`. A type that implements
//! [`schemars::JsonSchema`] gets its schema; any other (raw bytes, protobuf messages, types
//! without the derive) is described by its name only.
//!
//! # Examples
//!
//! ```
//! use nano_core::{EngineBuilder, Json};
//!
//! let engine = EngineBuilder::<Json>::new().push_routes(["onTick"]).build().unwrap();
//! let api = engine.api();
//! assert_eq!(api.serializer, "json");
//! assert!(api.routes.is_empty());
//! ```

use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;

pub mod typescript;

pub use schemars;

/// A push a component declares (`#[component(pushes(onMessage = UserMessage))]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushInfo {
    /// The push route (`onMessage`).
    pub route: &'static str,
    /// Its payload type as written.
    pub payload_type: &'static str,
}

/// The schemas of one component's payloads, in the order of its
/// [`HANDLERS`](crate::Component::HANDLERS) and [`PUSHES`](crate::Component::PUSHES).
#[derive(Debug, Default)]
pub struct ComponentSchemas {
    /// Each handler's request payload.
    pub requests: Vec<TypeInfo>,
    /// Each handler's response.
    pub responses: Vec<TypeInfo>,
    /// Each declared push's payload.
    pub pushes: Vec<TypeInfo>,
}

/// What is known of one payload type beyond its name.
#[derive(Debug, Default)]
pub struct TypeInfo {
    /// Its JSON Schema, when it implements [`JsonSchema`].
    pub schema: Option<Schema>,
    /// Its protobuf message name (`package.Message`), when it implements [`prost::Name`].
    pub message: Option<String>,
}

/// The schema of `T` when it has one: `(&&SchemaOf::<T>::new()).schema(gen)` is `Some` for a
/// [`JsonSchema`] type and `None` for any other (what `#[component]` generates; the choice is
/// made at compile time, per concrete type).
pub struct SchemaOf<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> SchemaOf<T> {
    /// The probe.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        SchemaOf(PhantomData)
    }
}

/// The schema of a [`JsonSchema`] type (the preferred method of [`SchemaOf`]).
pub trait HasSchema {
    /// `T`'s schema (a reference into the generator's definitions for a named type).
    fn schema(&self, gen: &mut SchemaGenerator) -> Option<Schema>;
}

impl<T: JsonSchema + ?Sized> HasSchema for &SchemaOf<T> {
    fn schema(&self, gen: &mut SchemaGenerator) -> Option<Schema> {
        Some(gen.subschema_for::<T>())
    }
}

/// No schema (the fallback of [`SchemaOf`]).
pub trait NoSchema {
    /// `None`.
    fn schema(&self, gen: &mut SchemaGenerator) -> Option<Schema>;
}

impl<T: ?Sized> NoSchema for SchemaOf<T> {
    fn schema(&self, _gen: &mut SchemaGenerator) -> Option<Schema> {
        None
    }
}

/// The protobuf message name of `T` when it has one: `(&&MessageOf::<T>::new()).message()`
/// is `Some` for a [`prost::Name`] type and `None` for any other.
pub struct MessageOf<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> MessageOf<T> {
    /// The probe.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        MessageOf(PhantomData)
    }
}

/// The message name of a [`prost::Name`] type (the preferred method of [`MessageOf`]).
pub trait HasMessage {
    /// `package.Message`.
    fn message(&self) -> Option<String>;
}

impl<T: prost::Name> HasMessage for &MessageOf<T> {
    fn message(&self) -> Option<String> {
        Some(T::full_name())
    }
}

/// No message name (the fallback of [`MessageOf`]).
pub trait NoMessage {
    /// `None`.
    fn message(&self) -> Option<String>;
}

impl<T: ?Sized> NoMessage for MessageOf<T> {
    fn message(&self) -> Option<String> {
        None
    }
}

/// The whole API (see the [module docs](self)); serializes as the `api.json` clients read.
#[derive(Debug, Clone, Serialize)]
pub struct Api {
    /// The serializer's name (`json`, `protobuf`).
    pub serializer: &'static str,
    /// Every route clients may call (internal ones are left out), in registration order.
    pub routes: Vec<RouteApi>,
    /// Every declared push.
    pub pushes: Vec<PushApi>,
    /// The named types the schemas refer to (`#/$defs/Name`).
    #[serde(rename = "$defs")]
    pub definitions: serde_json::Map<String, serde_json::Value>,
}

/// One route of the [`Api`].
#[derive(Debug, Clone, Serialize)]
pub struct RouteApi {
    /// `room.join`.
    pub route: String,
    /// The component (service) part.
    pub component: String,
    /// The handler part.
    pub handler: String,
    /// `sync`, `async` or `deferred` (see [`HandlerInfo::kind`](crate::HandlerInfo::kind)).
    pub kind: &'static str,
    /// Its code in the handshake's route dictionary.
    pub code: Option<u16>,
    /// The request payload; `None` when the handler takes none.
    pub request: Option<TypeApi>,
    /// What a request is answered with.
    pub response: TypeApi,
}

/// One push of the [`Api`].
#[derive(Debug, Clone, Serialize)]
pub struct PushApi {
    /// `onMessage`.
    pub route: String,
    /// The component that declared it.
    pub component: String,
    /// Its code in the handshake's route dictionary.
    pub code: Option<u16>,
    /// Its payload.
    pub payload: TypeApi,
}

/// A payload type: its name as written in Rust, whether it travels as raw bytes, and its
/// schema when it has one.
#[derive(Debug, Clone, Serialize)]
pub struct TypeApi {
    /// `JoinRequest`, `Vec<u8>`, `()`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Raw bytes: no serializer, the handler sees them as sent.
    pub raw: bool,
    /// The JSON Schema of the serialized value (for the JSON serializer).
    pub schema: Option<serde_json::Value>,
    /// The protobuf message it is (for the protobuf serializer), `package.Message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl TypeApi {
    pub(crate) fn new(type_name: &str, raw: bool, info: TypeInfo) -> Self {
        TypeApi {
            type_name: type_name.to_owned(),
            raw,
            schema: info.schema.map(Schema::to_value),
            message: info.message,
        }
    }
}

impl Api {
    /// The route of `component.handler`, if the API has it.
    pub fn route(&self, route: &str) -> Option<&RouteApi> {
        self.routes.iter().find(|r| r.route == route)
    }

    /// The pretty-printed JSON clients read (`api.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
