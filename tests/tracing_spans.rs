//! The spans a server traces, captured by a test subscriber over real sockets on 127.0.0.1:
//! one `conn` span per connection (remote, transport, session) and one `message` span per
//! handled message (route, id, kind, session, uid, outcome, duration), with errors and kicks as
//! events inside them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nano::prelude::*;
use nano::{Client, Transport};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

type Fields = HashMap<String, String>;

/// A span as captured: its name and fields, once closed.
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    fields: Fields,
}

/// An event with its message, fields and the spans it was in (innermost first).
#[derive(Debug, Clone)]
struct CapturedEvent {
    fields: Fields,
    scope: Vec<Captured>,
}

#[derive(Default)]
struct Log {
    open: HashMap<u64, Captured>,
    closed: Vec<Captured>,
    events: Vec<CapturedEvent>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Log>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let span = Captured {
            name: attrs.metadata().name(),
            fields,
        };
        self.0.lock().unwrap().open.insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().open.get_mut(&id.into_u64()) {
            values.record(&mut Visitor(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let mut log = self.0.lock().unwrap();
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .filter_map(|s| log.open.get(&s.id().into_u64()).cloned())
                    .collect()
            })
            .unwrap_or_default();
        log.events.push(CapturedEvent { fields, scope });
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut log = self.0.lock().unwrap();
        if let Some(span) = log.open.remove(&id.into_u64()) {
            log.closed.push(span);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

struct Echo;

#[component]
impl Echo {
    pub fn login(&mut self, s: &Session, uid: String) -> Result<()> {
        s.bind(uid)
    }

    pub fn ok(&mut self, _s: &Session, p: Ping) -> Result<u32> {
        Ok(p.n + 1)
    }

    pub fn fail(&mut self, _s: &Session, _p: Ping) -> Result<u32> {
        Err(Error::new("GAME-7", "no"))
    }

    pub fn boom(&mut self, _s: &Session) -> Result<u32> {
        panic!("boom")
    }

    pub async fn later(&mut self, _s: &Session, p: Ping) -> Result<u32> {
        tokio::task::yield_now().await;
        Ok(p.n * 2)
    }

    pub fn note(&mut self, _s: &Session, _p: Ping) -> Result<()> {
        Ok(())
    }

    pub fn leave(&mut self, s: &Session) -> Result<()> {
        s.kick_with_reason(Some("bye"));
        Ok(())
    }
}

/// The closed span named `name` whose fields include `want`.
fn find<'a>(spans: &'a [Captured], name: &str, want: &[(&str, &str)]) -> &'a Captured {
    spans
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.fields.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} span with {want:?} among {spans:#?}"))
}

// One thread: every task of the server and the client runs where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn connections_and_messages_are_spans_with_their_fields_and_outcome() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let server = nano::app()
        .component(Echo)
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let c: Client = Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    c.request::<_, ()>("Echo.Login", &"alice").await.unwrap();
    assert_eq!(
        c.request::<_, u32>("Echo.Ok", &Ping { n: 1 })
            .await
            .unwrap(),
        2
    );
    assert!(c
        .request::<_, u32>("Echo.Fail", &Ping { n: 1 })
        .await
        .is_err());
    assert!(c.request::<_, u32>("Echo.Boom", &()).await.is_err());
    assert_eq!(
        c.request::<_, u32>("Echo.Later", &Ping { n: 4 })
            .await
            .unwrap(),
        8
    );
    c.notify("Echo.Note", &Ping { n: 0 }).await.unwrap();
    let _ = c.request::<_, ()>("Echo.Leave", &()).await;
    c.closed().await;
    server.shutdown().await;

    let log = capture.0.lock().unwrap();
    let spans = &log.closed;
    let conn = find(spans, "conn", &[("transport", "tcp")]);
    assert!(conn.fields["remote"].starts_with("127.0.0.1:"), "{conn:?}");
    let session = conn
        .fields
        .get("session")
        .expect("the session id is recorded")
        .clone();

    let s = session.as_str();
    let login = find(spans, "message", &[("route", "Echo.Login"), ("id", "1")]);
    assert_eq!(login.fields["kind"], "request");
    assert_eq!(login.fields["session"], s);
    assert_eq!(login.fields["outcome"], "ok");
    assert!(
        !login.fields.contains_key("uid"),
        "not bound before its login"
    );
    let ok = find(spans, "message", &[("route", "Echo.Ok"), ("id", "2")]);
    assert_eq!(ok.fields["uid"], "alice");
    assert_eq!(ok.fields["outcome"], "ok");
    assert!(ok.fields["duration_us"].parse::<u64>().is_ok(), "{ok:?}");
    let fail = find(spans, "message", &[("route", "Echo.Fail")]);
    assert_eq!(fail.fields["outcome"], "GAME-7");
    let boom = find(spans, "message", &[("route", "Echo.Boom")]);
    assert_eq!(boom.fields["outcome"], "NANO-500");
    let later = find(spans, "message", &[("route", "Echo.Later")]);
    assert_eq!(later.fields["outcome"], "ok");
    let note = find(spans, "message", &[("route", "Echo.Note")]);
    assert_eq!(note.fields["kind"], "notify");
    assert_eq!(note.fields["id"], "0");
    assert_eq!(note.fields["outcome"], "ok");

    // The panic is an error event inside its message's span.
    let panicked = log
        .events
        .iter()
        .find(|e| e.fields.get("message").map(String::as_str) == Some("handler panicked"))
        .expect("the panic was traced");
    let inner = panicked.scope.first().expect("in a span");
    assert_eq!(inner.name, "message");
    assert_eq!(inner.fields["route"], "Echo.Boom");
    // The kick is an event inside the connection's span.
    let kicked = log
        .events
        .iter()
        .find(|e| e.fields.get("message").map(String::as_str) == Some("kicked"))
        .expect("the kick was traced");
    assert_eq!(kicked.fields["reason"], "bye");
    let conn_scope = kicked
        .scope
        .iter()
        .find(|s| s.name == "conn")
        .expect("in the conn span");
    assert_eq!(
        conn_scope.fields.get("session").map(String::as_str),
        Some(s)
    );
}
