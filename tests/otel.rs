//! Feature `otel`: nano's spans exported through an OpenTelemetry tracer provider, over real
//! sockets on 127.0.0.1. The exporter here keeps what it is given, so the test reads exactly
//! what an OTLP exporter would send.

use std::sync::{Arc, Mutex};

use nano::otel::opentelemetry::Value;
use nano::otel::opentelemetry_sdk::error::OTelSdkResult;
use nano::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use nano::prelude::*;
use nano::{Client, Transport};
use tracing_subscriber::prelude::*;

#[derive(Debug, Clone, Default)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Keep {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

struct Echo;

#[component]
impl Echo {
    pub fn ok(&mut self, _s: &Session, n: u32) -> Result<u32> {
        Ok(n + 1)
    }

    pub fn fail(&mut self, _s: &Session) -> Result<u32> {
        Err(Error::new("GAME-7", "no"))
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(v: Option<&Value>) -> String {
    v.map(|v| v.as_str().into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
async fn connection_and_message_spans_reach_the_exporter_with_their_fields() {
    let kept = Keep::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(nano::otel::layer(&provider)),
    );

    let server = nano::app()
        .component(Echo)
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let c: Client = Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    assert_eq!(c.request::<_, u32>("Echo.Ok", &1).await.unwrap(), 2);
    assert!(c.request::<_, u32>("Echo.Fail", &()).await.is_err());
    c.close().await;
    server.shutdown().await;
    provider.force_flush().unwrap();

    let spans = kept.0.lock().unwrap();
    let message = |route: &str| {
        spans
            .iter()
            .find(|s| s.name == "message" && text(attr(s, "route")) == route)
            .unwrap_or_else(|| panic!("no message span for {route} among {spans:#?}"))
    };
    let ok = message("Echo.Ok");
    assert_eq!(text(attr(ok, "outcome")), "ok");
    assert_eq!(text(attr(ok, "kind")), "request");
    assert!(attr(ok, "duration_us").is_some(), "{ok:#?}");
    assert_eq!(ok.instrumentation_scope.name(), "nano");
    let fail = message("Echo.Fail");
    assert_eq!(text(attr(fail, "outcome")), "GAME-7");
    let conn = spans
        .iter()
        .find(|s| s.name == "conn")
        .expect("the connection's span");
    assert_eq!(text(attr(conn, "transport")), "tcp");
    assert!(text(attr(conn, "remote")).starts_with("127.0.0.1:"));
    // The session recorded on the connection is the one its messages carry.
    assert_eq!(text(attr(conn, "session")), text(attr(ok, "session")));
    assert!(conn.end_time >= ok.end_time);
}
