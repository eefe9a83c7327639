//! The `#[component]` attribute macro of nano. Use it through the `nano` facade
//! (`nano::component`), which pins this crate to the exact version of the runtime it targets.
//!
//! # Layout
//!
//! One stage per module, run in this order by `expand::component`:
//!
//! - `attr`: parses `#[component(...)]` arguments and `#[handler(...)]` method attributes
//!   (`custom_keyword!` + `lookahead1`; duplicates are reported on the second keyword);
//! - `ast`: reads the `impl` block into a typed `Component` of handlers and lifecycle hooks,
//!   keeping references to the original syntax for spans;
//! - `valid`: checks receivers, argument lists, return types, route names and hooks;
//! - `expand`: generates the `impl Component`, spanning trait-bound checks on the user's types;
//! - `ctxt`: the error collector every stage reports into, so all errors show at once.
//!
//! On error the impl block is still emitted (minus `#[handler]` attributes), followed by the
//! `compile_error!`s and a stub `impl Component` with no routes, so that code using the type
//! keeps type-checking and only the real problems are reported.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns an inherent `impl` block into a nano component: a route table, a payload decoder and
/// a dispatcher, generated at compile time.
///
/// # Handlers
///
/// Every `pub` (or `pub(...)`) method with a `self` receiver is a handler, with one of these
/// signatures (any of them may be an `async fn`):
///
/// ```text
/// pub fn name(&self | &mut self, session: &Session<S>) -> Result<R>
/// pub fn name(&self | &mut self, session: &Session<S>, payload: P) -> Result<R>
/// pub fn name(&self | &mut self, session: &Session<S>, [payload: P,] reply: Responder<R>)
/// ```
///
/// After the session, in any order: at most one payload, optionally `ctx: &Context<Self>` (the
/// component's context: timers, `spawn`, `run`, `call`; no need to store it from `init`), and
/// optionally `reply: Responder<R>` (recognized by the type name `Responder`).
///
/// - `S` is the serializer (`Session` alone means `Session<Json>`); all handlers of a component
///   must agree on it. The session type may be written through an alias.
/// - `P` is decoded with the serializer (it must implement `Decode<S>`: `serde::Deserialize`
///   for `Json`, `prost::Message` for `Protobuf`), except `Bytes` and `Vec<u8>`, which receive
///   the payload bytes untouched.
/// - The return type is any `Result<R>` or `Result<R, E>` (`nano::Result`, `std::result::Result`,
///   ...) with `E: Into<nano::Error>`. `R = ()` sends an empty response; `Bytes` and `Vec<u8>`
///   are sent as they are; any other `R` is encoded with the serializer (`Encode<S>`).
///
/// A handler with a `Responder<R>` returns nothing: it answers later, exactly once, through
/// the responder (`reply.ok(v)`, `reply.err(e)`, `reply.send(result)`), which it can move into
/// `ctx.spawn`, a timer or another thread; `R` is encoded like a returned `R`. Dropped
/// unanswered, the responder answers `NANO-500` "request dropped without an answer". For a
/// notify it answers nothing. Returning a value as well is a compile error.
///
/// An `async fn` handler holds its **whole scheduler** until its future completes: nothing else
/// runs on that scheduler meanwhile — no other message, timer or callback, of this component
/// *or of any other component sharing the scheduler* (by default every component shares one).
/// So an async handler suits short awaits; for slow work answer later with a `Responder` from
/// `ctx.spawn`. Awaiting, from an async handler, work that needs its own scheduler would never
/// finish: `Context::call` detects it and returns `NANO-500` at once. Its future must be `Send`
/// (so an `async fn(&self, ..)` handler needs a `Sync` component; `&mut self` does not).
///
/// Methods that are not `pub`, or have no receiver, are left alone. A `pub` helper method is
/// excluded with `#[handler(skip)]`.
///
/// # Routes
///
/// A route is `Component.Handler`. The component name defaults to the type name, the handler
/// name to the method name in UpperCamelCase (`send_message` → `Room.SendMessage`), as in
/// go-nano.
///
/// | attribute | effect |
/// |---|---|
/// | `#[component(name = "room")]` | component name (not renamed) |
/// | `#[component(rename_all = "lowercase")]` | handler naming rule: `"PascalCase"` (default, also `"UpperCamelCase"`), `"lowercase"` (`sendmessage`), `"UPPERCASE"`, `"camelCase"`, `"snake_case"`, `"SCREAMING_SNAKE_CASE"`, `"kebab-case"`, `"SCREAMING-KEBAB-CASE"` |
/// | `#[component(serializer = Protobuf)]` | the serializer, instead of taking it from the handlers' session type (required to pick a non-JSON serializer for a component without handlers) |
/// | `#[component(crate = ::nano_core)]` | where the runtime is: generated code uses `<path>::__private` (default `::nano`) |
/// | `#[handler(name = "join")]` | exact handler name (`rename_all` does not apply) |
/// | `#[handler(skip)]` | not a handler (nor a lifecycle hook) |
///
/// # Lifecycle hooks
///
/// Methods named `init`, `after_init`, `before_shutdown` or `shutdown` (any visibility) must
/// have the signature `fn init(&mut self, ctx: &Context<Self>)`; they are called by the
/// application at startup and shutdown (see `nano::Component`).
///
/// # Errors
///
/// Misuse is a compile error on the offending tokens: a receiver other than `&self` /
/// `&mut self`, a missing `&Session`, too many arguments, a return type that is not a `Result`,
/// a duplicate route, generic handlers or impl blocks, a bad hook signature, an unknown or
/// duplicate attribute argument, or a payload / response type the serializer cannot handle.
///
/// # Examples
///
/// ```
/// use nano::prelude::*;
///
/// #[derive(Serialize, Deserialize)]
/// struct Chat { text: String }
///
/// struct Room { said: usize }
///
/// #[component(rename_all = "lowercase")]
/// impl Room {
///     /// Route `Room.say`: decodes a JSON `Chat`, answers with an empty body.
///     pub fn say(&mut self, _s: &Session, _msg: Chat) -> Result<()> {
///         self.said += 1;
///         Ok(())
///     }
///
///     /// Route `Room.count`: no payload, answers with a JSON number.
///     pub fn count(&self, _s: &Session) -> Result<usize> {
///         Ok(self.said)
///     }
///
///     /// Route `Room.echo`: raw bytes in and out.
///     pub async fn echo(&self, _s: &Session, data: Bytes) -> Result<Bytes> {
///         Ok(data)
///     }
///
///     /// Not a route.
///     #[handler(skip)]
///     pub fn reset(&mut self) {
///         self.said = 0;
///     }
/// }
///
/// use nano::__private::Component;
/// let routes: Vec<_> = Room::HANDLERS.iter().map(|h| h.route).collect();
/// assert_eq!(routes, ["Room.say", "Room.count", "Room.echo"]);
/// ```
#[proc_macro_attribute]
pub fn component(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::component(args.into(), input.into()).into()
}
