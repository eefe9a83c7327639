//! The admin listener over real sockets on 127.0.0.1: `/metrics` scraped after known traffic
//! (parsed with a Prometheus text-format parser, every count checked against what was sent),
//! `/debug/nano/node.json` against the server's own state, the page, and what the listener
//! refuses.

use std::net::SocketAddr;
use std::time::Duration;

use nano::prelude::*;
use nano::{Client, Server, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::http_request;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

#[derive(Default)]
struct Echo {
    notified: u32,
}

#[component]
impl Echo {
    /// Answers `n + 1`.
    pub fn ok(&mut self, _s: &Session, p: Ping) -> Result<u32> {
        Ok(p.n + 1)
    }

    /// Always fails with an application code.
    pub fn fail(&mut self, _s: &Session, _p: Ping) -> Result<u32> {
        Err(Error::new("GAME-7", "no"))
    }

    /// A notify.
    pub fn note(&mut self, _s: &Session, _p: Ping) -> Result<()> {
        self.notified += 1;
        Ok(())
    }

    /// Binds the uid it is given.
    pub fn login(&mut self, s: &Session, uid: String) -> Result<()> {
        s.bind(uid)
    }

    /// Kicks the caller with a reason.
    pub fn leave(&mut self, s: &Session) -> Result<()> {
        s.kick_with_reason(Some("bye"));
        Ok(())
    }
}

async fn start() -> Server<Json> {
    nano::app()
        .component(Echo::default())
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .admin("127.0.0.1:0")
        .start()
        .await
        .unwrap()
}

/// The scrape parsed by prometheus-parse: each sample's value by metric name and labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn of(admin: SocketAddr) -> Scrape {
        let (status, headers, body) = http_request(admin, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"].starts_with("application/openmetrics-text"),
            "{headers:?}"
        );
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("not the Prometheus text format"))
    }

    /// The value of the sample named `name` whose labels include `labels`; `None` without one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.0.samples.iter().filter(|s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        });
        let sample = found.next()?;
        assert!(
            found.next().is_none(),
            "{name} {labels:?} matches more than one sample"
        );
        Some(match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            other => panic!("{name}: unexpected value {other:?}"),
        })
    }

    /// The `(le, cumulative count)` buckets of a histogram sample.
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => {
                    Some(b.iter().map(|b| (b.less_than, b.count)).collect())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"))
    }
}

/// Scrapes until `done` holds for a scrape (work the server does after answering, such as a
/// notify's handler or a disconnect's bookkeeping, shows up a moment later); at most 10 s.
async fn scrape_until(admin: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::of(admin).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never got there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const RESPONSE_TIME: &str = "nano_handler_response_time_seconds";

#[tokio::test]
async fn metrics_count_the_traffic_that_was_sent() {
    let server = start().await;
    let admin = server.admin_addr().expect("admin bound");
    let tcp = server.addr(Transport::Tcp).unwrap();
    assert_ne!(
        Some(admin),
        Some(tcp),
        "the admin listener has its own port"
    );

    let c: Client = Client::connect_tcp(tcp).await.unwrap();
    const OK: u32 = 7;
    const FAILED: u32 = 3;
    const NOTIFIES: u32 = 4;
    for n in 0..OK {
        let r: u32 = c.request("Echo.Ok", &Ping { n }).await.unwrap();
        assert_eq!(r, n + 1);
    }
    for n in 0..FAILED {
        assert!(c.request::<_, u32>("Echo.Fail", &Ping { n }).await.is_err());
    }
    for n in 0..NOTIFIES {
        c.notify("Echo.Note", &Ping { n }).await.unwrap();
    }
    assert!(c
        .request::<_, u32>("Echo.Nope", &Ping { n: 0 })
        .await
        .is_err());
    let ws: Client = Client::connect_ws(&format!(
        "ws://{}/nano",
        server.addr(Transport::WebSocket).unwrap()
    ))
    .await
    .unwrap();

    let notify = [("route", "Echo.Note"), ("status", "ok"), ("type", "notify")];
    let s = scrape_until(admin, |s| {
        s.value(&format!("{RESPONSE_TIME}_count"), &notify) == Some(f64::from(NOTIFIES))
    })
    .await;
    let ok = [
        ("route", "Echo.Ok"),
        ("status", "ok"),
        ("code", ""),
        ("type", "request"),
    ];
    let failed = [
        ("route", "Echo.Fail"),
        ("status", "failed"),
        ("code", "GAME-7"),
        ("type", "request"),
    ];
    let count = format!("{RESPONSE_TIME}_count");
    assert_eq!(s.value(&count, &ok), Some(f64::from(OK)));
    assert_eq!(s.value(&count, &failed), Some(f64::from(FAILED)));
    // Routes nobody called are there at zero; nothing else was answered.
    assert_eq!(
        s.value(
            &count,
            &[
                ("route", "Echo.Login"),
                ("status", "ok"),
                ("type", "request")
            ]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.value(&count, &[("route", "Echo.Ok"), ("status", "failed")]),
        None
    );
    // The buckets are cumulative, end at +Inf with the count, and the sum is positive.
    let buckets = s.buckets(RESPONSE_TIME, &ok);
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, f64::from(OK))));
    assert!(s.value(&format!("{RESPONSE_TIME}_sum"), &ok).unwrap() > 0.0);
    // Every handled message waited in the logic scheduler's queue first.
    assert_eq!(
        s.value(
            "nano_handler_delay_seconds_count",
            &[("scheduler", "logic")]
        ),
        Some(f64::from(OK + FAILED + NOTIFIES))
    );
    assert_eq!(
        s.value("nano_scheduler_queue_size", &[("scheduler", "logic")]),
        Some(0.0)
    );
    // The unknown route was refused before any handler.
    assert_eq!(
        s.value("nano_refused_messages_total", &[("code", "NANO-404")]),
        Some(1.0)
    );
    // Clients by transport, sessions, traffic.
    assert_eq!(
        s.value("nano_connected_clients", &[("transport", "tcp")]),
        Some(1.0)
    );
    assert_eq!(
        s.value("nano_connected_clients", &[("transport", "websocket")]),
        Some(1.0)
    );
    assert_eq!(s.value("nano_sessions", &[]), Some(2.0));
    let sent = OK + FAILED + NOTIFIES + 1;
    assert_eq!(
        s.value("nano_messages_in_total", &[("transport", "tcp")]),
        Some(f64::from(sent))
    );
    assert_eq!(
        s.value("nano_messages_in_total", &[("transport", "websocket")]),
        Some(0.0)
    );
    // Requests were answered (plus the handshake): at least one packet out per request.
    let out = s
        .value("nano_messages_out_total", &[("transport", "tcp")])
        .unwrap();
    assert!(out >= f64::from(OK + FAILED + 1), "{out}");
    assert!(
        s.value("nano_bytes_in_total", &[("transport", "tcp")])
            .unwrap()
            > f64::from(sent) * 4.0
    );
    assert!(
        s.value("nano_bytes_out_total", &[("transport", "tcp")])
            .unwrap()
            > 0.0
    );

    // A kick with a reason, then the client's own close: kicks and disconnects by reason.
    // (The kick comes before the handler's answer, which then has no connection to go to.)
    let _ = c.request::<_, ()>("Echo.Leave", &()).await;
    c.closed().await;
    ws.close().await;
    let s = scrape_until(admin, |s| {
        s.value("nano_disconnects_total", &[("reason", "client closed")]) == Some(1.0)
            && s.value("nano_disconnects_total", &[("reason", "kicked")]) == Some(1.0)
    })
    .await;
    assert_eq!(s.value("nano_kicks_total", &[("reason", "bye")]), Some(1.0));
    assert_eq!(s.value("nano_sessions", &[]), Some(0.0));
    assert_eq!(
        s.value("nano_connected_clients", &[("transport", "tcp")]),
        Some(0.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn node_json_matches_the_server_state() {
    let server = start().await;
    let admin = server.admin_addr().unwrap();
    let tcp: Client = Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    tcp.request::<_, ()>("Echo.Login", &"alice").await.unwrap();
    for n in 0..5 {
        tcp.request::<_, u32>("Echo.Ok", &Ping { n }).await.unwrap();
    }
    let ws: Client = Client::connect_ws(&format!(
        "ws://{}/nano",
        server.addr(Transport::WebSocket).unwrap()
    ))
    .await
    .unwrap();

    let (status, headers, body) = http_request(admin, "GET", "/debug/nano/node.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let node: Value = serde_json::from_str(&body).unwrap();

    // Options and listeners are the server's.
    assert_eq!(node["node"]["serializer"], "json");
    assert_eq!(
        node["node"]["options"]["max_packet_size"],
        server.engine().max_packet_size()
    );
    let listeners: Vec<String> = node["node"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["transport"].as_str().unwrap(),
                l["addr"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        listeners,
        server
            .local_addrs()
            .iter()
            .map(|(t, a)| format!("{} {a}", t.as_str()))
            .collect::<Vec<_>>()
    );

    // The route table, with kinds and payload types from `#[component]`.
    let echo = &node["components"][0];
    assert_eq!(echo["name"], "Echo");
    assert_eq!(echo["scheduler"], "logic");
    let routes: Vec<&Value> = echo["routes"].as_array().unwrap().iter().collect();
    let route = |name: &str| *routes.iter().find(|r| r["route"] == name).unwrap();
    assert_eq!(routes.len(), server.engine().routes().count());
    assert_eq!(route("Echo.Ok")["kind"], "sync");
    assert_eq!(route("Echo.Ok")["payload"], "Ping");
    assert_eq!(route("Echo.Ok")["response"], "u32");
    assert_eq!(route("Echo.Note")["response"], "()");
    assert_eq!(route("Echo.Login")["payload"], "String");
    assert_eq!(route("Echo.Leave")["payload"], "");
    assert_eq!(route("Echo.Leave")["response"], "()");
    assert_eq!(node["schedulers"][0]["name"], "logic");
    assert_eq!(node["schedulers"][0]["components"][0], "Echo");

    // The sessions: alice on TCP with her last request id, and an anonymous WebSocket one.
    let sessions = node["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), server.sessions());
    let alice = sessions
        .iter()
        .find(|s| s["uid"] == "alice")
        .expect("alice");
    assert_eq!(alice["transport"], "tcp");
    // Login was request 1, then five more.
    assert_eq!(alice["last_message_id"], 6);
    assert_eq!(alice["queue"], 0);
    assert!(alice["connected_s"].as_f64().unwrap() >= 0.0);
    assert!(alice["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let other = sessions
        .iter()
        .find(|s| s["uid"].is_null())
        .expect("the ws session");
    assert_eq!(other["transport"], "websocket");
    assert_eq!(other["last_message_id"], 0);
    assert_ne!(alice["id"], other["id"]);
    let stats = &node["stats"];
    assert_eq!(stats["connected_clients"]["tcp"], 1);
    assert_eq!(stats["connected_clients"]["websocket"], 1);
    assert_eq!(stats["sessions"], 2);
    assert_eq!(stats["requests_total"], 6);
    assert_eq!(stats["messages_in_total"], 6);
    assert_eq!(node["extensions"], serde_json::json!([]));

    // The page is served, self-contained.
    let (status, headers, page) = http_request(admin, "GET", "/debug/nano/node").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/html"));
    assert!(page.contains("node.json") || page.contains(".json"));
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    drop((tcp, ws));
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_listener_refuses_what_it_does_not_serve_and_keeps_serving() {
    let server = start().await;
    let admin = server.admin_addr().unwrap();
    assert_eq!(http_request(admin, "GET", "/nope").await.0, 404);
    assert_eq!(http_request(admin, "POST", "/metrics").await.0, 405);
    assert_eq!(http_request(admin, "GET", "/").await.0, 301);
    // Garbage, then a client that connects and says nothing: neither stops the listener.
    let mut junk = TcpStream::connect(admin).await.unwrap();
    junk.write_all(b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    junk.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 400"));
    let _silent = TcpStream::connect(admin).await.unwrap();
    assert_eq!(http_request(admin, "GET", "/metrics").await.0, 200);
    // The client port does not serve the admin endpoints.
    let ws = server.addr(Transport::WebSocket).unwrap();
    assert_eq!(http_request(ws, "GET", "/metrics").await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_are_off_unless_asked_for() {
    let server = nano::app()
        .component(Echo::default())
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    assert!(server.admin_addr().is_none());
    assert!(server.metrics().is_none());
    assert!(server.engine().metrics().is_none());
    server.shutdown().await;

    // On without an admin listener: read in process.
    let server = nano::app()
        .component(Echo::default())
        .tcp("127.0.0.1:0")
        .metrics(true)
        .start()
        .await
        .unwrap();
    let c: Client = Client::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    c.request::<_, u32>("Echo.Ok", &Ping { n: 1 })
        .await
        .unwrap();
    let text = server.metrics().unwrap();
    assert!(text.contains(r#"nano_handler_response_time_seconds_count{route="Echo.Ok",status="ok",code="",type="request"} 1"#), "{text}");
    assert!(text.ends_with("# EOF\n"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_busy_admin_port_fails_the_start_with_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = nano::app()
        .component(Echo::default())
        .tcp("127.0.0.1:0")
        .admin(addr.clone())
        .start()
        .await
        .err()
        .expect("started on a busy admin port");
    assert!(err.to_string().contains(&addr), "{err}");
}
