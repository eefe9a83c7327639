//! The API description and the typed client stubs from a route table: payload types and
//! schemas per route, declared pushes (which join the route dictionary), codes that match the
//! handshake's, internal routes left out; and the chat example's committed stubs are the ones
//! its `--export-api` writes today.

use nano::prelude::*;
use schemars::JsonSchema;
use serde_json::Value;

mod common;

/// A typed request.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Move {
    /// Where to.
    x: f64,
    y: f64,
    /// Optional speed.
    speed: Option<u32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Event {
    Hit { by: String },
    Miss,
}

/// No schema: a type without the derive.
#[derive(Serialize, Deserialize)]
struct Opaque {
    n: u8,
}

#[component(pushes(onEvent = Event, "world.tick" = u64, onOpaque = Opaque))]
impl World {
    pub fn walk(&mut self, _s: &Session, m: Move) -> Result<Vec<Event>> {
        Ok(vec![Event::Miss; usize::from(m.x > m.y)])
    }

    pub fn raw(&mut self, _s: &Session, data: Bytes) -> Result<Bytes> {
        Ok(data)
    }

    pub fn opaque(&mut self, _s: &Session, o: Opaque) -> Result<()> {
        let _ = o.n;
        Ok(())
    }

    pub fn ping(&mut self, _s: &Session) -> Result<String> {
        Ok("pong".into())
    }

    #[handler(internal)]
    pub fn secret(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

struct World;

#[test]
fn the_route_table_describes_payload_types_schemas_and_pushes() {
    let api = nano::app().component(World).api().unwrap();
    assert_eq!(api.serializer, "json");
    let routes: Vec<&str> = api.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(
        routes,
        ["World.Walk", "World.Raw", "World.Opaque", "World.Ping"],
        "internal routes are not the clients'"
    );

    let walk = api.route("World.Walk").unwrap();
    assert_eq!(walk.kind, "sync");
    let req = walk.request.as_ref().unwrap();
    assert_eq!(req.type_name, "Move");
    assert_eq!(req.schema.as_ref().unwrap()["$ref"], "#/$defs/Move");
    assert_eq!(walk.response.type_name, "Vec<Event>");
    assert_eq!(
        walk.response.schema.as_ref().unwrap()["items"]["$ref"],
        "#/$defs/Event"
    );
    let mv = &api.definitions["Move"];
    assert_eq!(mv["properties"]["x"]["description"], "Where to.");
    assert_eq!(mv["required"], serde_json::json!(["x", "y"]));

    let raw = api.route("World.Raw").unwrap();
    assert!(raw.request.as_ref().unwrap().raw && raw.response.raw);
    let opaque = api.route("World.Opaque").unwrap();
    assert!(
        opaque.request.as_ref().unwrap().schema.is_none(),
        "no JsonSchema: named only"
    );
    assert!(api.route("World.Ping").unwrap().request.is_none());

    // Declared pushes are in the dictionary, with the codes the handshake gives.
    let pushes: Vec<(&str, &str)> = api
        .pushes
        .iter()
        .map(|p| (p.route.as_str(), p.payload.type_name.as_str()))
        .collect();
    assert_eq!(
        pushes,
        [
            ("onEvent", "Event"),
            ("world.tick", "u64"),
            ("onOpaque", "Opaque")
        ]
    );
    let engine = nano::engine::EngineBuilder::<Json>::new()
        .component(World)
        .build()
        .unwrap();
    for p in &api.pushes {
        assert_eq!(p.code, engine.dictionary().code(&p.route), "{}", p.route);
        assert!(p.code.is_some(), "{} is in the dictionary", p.route);
    }
    for r in &api.routes {
        assert_eq!(r.code, engine.dictionary().code(&r.route), "{}", r.route);
    }
}

#[test]
fn typescript_stubs_type_every_call_and_push() {
    let api = nano::app().component(World).api().unwrap();
    let stubs = nano::api::typescript::generate(&api);
    for want in [
        "export type Move = {",
        "  /** Where to. */\n  x: number;",
        "  speed?: number | null;",
        "walk(payload: Move): Promise<Array<Event>>;",
        "raw(payload: Uint8Array): Promise<Uint8Array>;",
        "opaque(payload: unknown): Promise<void>;",
        "ping(): Promise<string>;",
        "\"onEvent\": Event;",
        "\"world.tick\": number;",
        "\"onOpaque\": unknown;",
    ] {
        assert!(
            stubs.dts.contains(want),
            "{want:?} missing from:\n{}",
            stubs.dts
        );
    }
    let event = stubs
        .dts
        .lines()
        .find(|l| l.starts_with("export type Event"))
        .unwrap();
    assert!(
        event.contains("\"hit\"") && event.contains("\"miss\"") && event.contains(" | "),
        "{event}"
    );
    assert!(!stubs.dts.contains("secret") && !stubs.js.contains("World.Secret"));
    let code = api.route("World.Walk").unwrap().code.unwrap();
    assert!(
        stubs.js.contains(&format!("\"World.Walk\": {code},")),
        "{}",
        stubs.js
    );
    assert!(stubs
        .js
        .contains("walk: (payload) => client.request(\"World.Walk\", payload),"));
    assert!(stubs
        .js
        .contains("ping: () => client.notify(\"World.Ping\"),"));
}

#[test]
fn export_api_writes_the_description_and_the_stubs() {
    let dir = std::env::temp_dir().join(format!("nano-api-test-{}", std::process::id()));
    let api = nano::app().component(World).export_api(&dir).unwrap();
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("api.json")).unwrap()).unwrap();
    assert_eq!(json["routes"].as_array().unwrap().len(), api.routes.len());
    assert_eq!(json["$defs"]["Move"]["type"], "object");
    let stubs = nano::api::typescript::generate(&api);
    assert_eq!(
        std::fs::read_to_string(dir.join("api.js")).unwrap(),
        stubs.js
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("api.d.ts")).unwrap(),
        stubs.dts
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The chat page imports `examples/chat/web/api.js`: it must be what the example's
/// `--export-api` writes from its route table now.
#[cfg(unix)]
#[tokio::test]
async fn the_chat_examples_committed_stubs_are_up_to_date() {
    let dir = std::env::temp_dir().join(format!("nano-chat-api-{}", std::process::id()));
    let mut chat =
        common::process::Example::spawn("chat", &["--export-api", dir.to_str().unwrap()]);
    assert!(
        chat.exit_within(common::T).await.success(),
        "{}",
        chat.stderr()
    );
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chat/web");
    for file in ["api.json", "api.js", "api.d.ts"] {
        let fresh = std::fs::read_to_string(dir.join(file)).unwrap();
        let committed = std::fs::read_to_string(web.join(file)).unwrap();
        assert!(
            fresh == committed,
            "examples/chat/web/{file} is stale: run `cargo run --example chat -- --export-api examples/chat/web`"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A protobuf message with its name (as prost-build generates it).
#[derive(Clone, PartialEq, prost::Message)]
struct Join {
    #[prost(string, tag = "1")]
    name: String,
}

impl prost::Name for Join {
    const NAME: &'static str = "Join";
    const PACKAGE: &'static str = "game";
}

struct Lobby;

#[component]
impl Lobby {
    pub fn join(&mut self, _s: &Session<Protobuf>, j: Join) -> Result<Join> {
        Ok(j)
    }
}

#[test]
fn protobuf_payloads_reference_their_message_types() {
    let api = nano::app_with(Protobuf).component(Lobby).api().unwrap();
    assert_eq!(api.serializer, "protobuf");
    let join = api.route("Lobby.Join").unwrap();
    let req = join.request.as_ref().unwrap();
    assert_eq!(
        (req.type_name.as_str(), req.message.as_deref()),
        ("Join", Some("game.Join"))
    );
    assert_eq!(join.response.message.as_deref(), Some("game.Join"));
    let stubs = nano::api::typescript::generate(&api);
    assert!(
        stubs
            .dts
            .contains("join(payload: Uint8Array): Promise<Uint8Array>;"),
        "{}",
        stubs.dts
    );
}
