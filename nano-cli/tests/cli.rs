//! `nano-cli` end to end: the built binary against in-process servers on 127.0.0.1.
//!
//! Every wait is bounded by [`T`]; a child still running then is killed (`kill_on_drop`) and
//! the test fails.

use std::process::{Output, Stdio};
use std::time::Duration;

use nano::prelude::*;
use nano::{Client, Server, TlsConfig, Transport};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// The failure bound of every wait.
const T: Duration = Duration::from_secs(20);

struct Lobby {
    group: Group,
}

#[component]
impl Lobby {
    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }

    /// Pushes `onPush` with the payload to the caller, then answers `"sent"`.
    pub fn hello(&mut self, s: &Session, v: Value) -> Result<&'static str> {
        s.push("onPush", &v)?;
        Ok("sent")
    }

    /// Joins the group (and pushes `onPush` to the joiner, which `listen --route` filters).
    pub fn join(&mut self, s: &Session) -> Result<usize> {
        self.group.add(s)?;
        s.push("onPush", &json!("welcome"))?;
        Ok(self.group.count())
    }

    pub fn shout(&mut self, _s: &Session, v: Value) -> Result<()> {
        self.group.broadcast("onShout", &v)
    }

    pub fn fail(&mut self, _s: &Session) -> Result<()> {
        Err(Error::new("GAME-1", "nope").with_metadata("why", "test"))
    }
}

async fn server() -> Server<Json> {
    nano::app()
        .component(Lobby {
            group: Group::new("lobby"),
        })
        .push_routes(["onPush", "onShout"])
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .expect("server starts")
}

fn tcp_url(s: &Server<Json>) -> String {
    format!("tcp://{}", s.addr(Transport::Tcp).unwrap())
}

fn ws_url(s: &Server<Json>) -> String {
    format!("ws://{}/nano", s.addr(Transport::WebSocket).unwrap())
}

fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nano-cli"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `nano-cli args…` to completion (killed after [`T`]).
async fn run(args: &[&str]) -> Output {
    let child = cli(args).spawn().expect("nano-cli starts");
    finish(child).await
}

async fn finish(child: Child) -> Output {
    timeout(T, child.wait_with_output())
        .await
        .expect("nano-cli ends in time (killed)")
        .expect("nano-cli output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_prints_the_response_over_tcp_and_ws() {
    let s = server().await;
    for url in [tcp_url(&s), ws_url(&s)] {
        let o = run(&["request", &url, "Lobby.Echo", r#"{"a":[1,2],"b":"x"}"#]).await;
        assert_eq!(o.status.code(), Some(0), "{url}: {}", stderr(&o));
        assert_eq!(
            json_lines(&stdout(&o)),
            vec![json!({"a": [1, 2], "b": "x"})],
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_response_goes_to_stderr_with_exit_1() {
    let s = server().await;
    let o = run(&["request", &tcp_url(&s), "Lobby.Fail"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        json_lines(&stderr(&o)),
        vec![json!({"code": "GAME-1", "msg": "nope", "metadata": {"why": "test"}})]
    );
    let o = run(&["request", &ws_url(&s), "Lobby.Nope", "{}"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_lines(&stderr(&o))[0]["code"], "NANO-404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_and_bad_input_exit_2() {
    // A port nothing listens on any more.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let o = run(&["request", &format!("tcp://{addr}"), "A.B", "--timeout", "5"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));

    let s = server().await;
    let o = run(&["request", &tcp_url(&s), "Lobby.Echo", "{not json"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad JSON payload"), "{}", stderr(&o));
    let o = run(&["request", "http://127.0.0.1:1", "Lobby.Echo"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown scheme"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_the_server() {
    let s = server().await;
    // A watcher in the group sees the notify's broadcast.
    let watcher: Client = Client::connect_tcp(s.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let mut shouts = watcher.on("onShout");
    let _: usize = watcher.request("Lobby.Join", &json!({})).await.unwrap();
    let o = run(&["notify", &ws_url(&s), "Lobby.Shout", r#"{"t":"hi"}"#]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p = timeout(T, shouts.recv()).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&p).unwrap(),
        json!({"t": "hi"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_pushes_as_json_lines() {
    let s = server().await;
    let mut child = cli(&[
        "listen",
        &tcp_url(&s),
        "--request",
        "Lobby.Join",
        "{}",
        "--route",
        "onShout",
        "--count",
        "2",
    ])
    .spawn()
    .unwrap();
    // The join's response (on stderr) says it is in the group.
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let joined = timeout(T, err.next_line()).await.unwrap().unwrap();
    assert_eq!(joined.as_deref(), Some("1"));
    let shouter: Client = Client::connect_ws(&ws_url(&s)).await.unwrap();
    shouter
        .notify("Lobby.Shout", &json!({"n": 1}))
        .await
        .unwrap();
    shouter
        .notify("Lobby.Shout", &json!({"n": 2}))
        .await
        .unwrap();
    let o = finish(child).await;
    assert_eq!(o.status.code(), Some(0));
    // The joiner's `onPush` welcome is filtered out by --route.
    assert_eq!(
        json_lines(&stdout(&o)),
        vec![
            json!({"route": "onShout", "body": {"n": 1}}),
            json!({"route": "onShout", "body": {"n": 2}}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_ends_when_the_server_kicks() {
    let s = server().await;
    let mut child = cli(&["listen", &tcp_url(&s), "--request", "Lobby.Join", "{}"])
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    assert_eq!(
        timeout(T, err.next_line())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some("1")
    );
    timeout(T, s.shutdown())
        .await
        .expect("server shuts down in time");
    let status = timeout(T, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stdout.take().unwrap(), &mut out)
        .await
        .unwrap();
    assert_eq!(
        json_lines(&out),
        vec![json!({"route": "onPush", "body": "welcome"})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repl_driven_through_stdin() {
    let s = server().await;
    let mut child = cli(&["repl", &ws_url(&s)])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"request Lobby.Hello {\"a\": 1}\n\
              request Lobby.Fail\n\
              notify Lobby.Shout {}\n\
              bogus\n\
              routes\n\
              quit\n\
              request Lobby.Echo \"after quit\"\n",
        )
        .await
        .unwrap();
    drop(stdin);
    let o = finish(child).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "\"sent\"", "{out}");
    assert_eq!(
        lines[1], r#"push {"body":{"a":1},"route":"onPush"}"#,
        "{out}"
    );
    let err: Value = serde_json::from_str(lines[2].strip_prefix("error ").unwrap()).unwrap();
    assert_eq!(err["code"], "GAME-1");
    assert_eq!(lines[3], "ok");
    assert!(
        lines[4].starts_with("error: unknown command \"bogus\""),
        "{out}"
    );
    // `routes` lists the handshake dictionary, sorted.
    assert!(lines[5..].contains(&"Lobby.Echo"), "{out}");
    assert!(lines[5..].contains(&"onShout"), "{out}");
    assert!(!out.contains("after quit"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_throughput_percentiles_and_errors() {
    let s = server().await;
    let url = tcp_url(&s);
    let o = run(&[
        "bench",
        &url,
        "--route",
        "Lobby.Echo",
        "--payload",
        r#"{"x":1}"#,
        "--conns",
        "2",
        "--duration",
        "0.3",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("ops/s: "), "{out}");
    for p in ["p50", "p90", "p99", "p99.9"] {
        assert!(out.contains(&format!("{p} ")), "{out}");
    }
    assert!(out.contains(", 0 errors"), "{out}");

    let o = run(&[
        "bench",
        &ws_url(&s),
        "--route",
        "Lobby.Fail",
        "--conns",
        "1",
        "--duration",
        "0.2",
        "--json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = &json_lines(&stdout(&o))[0];
    assert_eq!(r["ok"], 0);
    let failed = r["errors"].as_u64().unwrap();
    assert!(failed > 0, "{r}");
    assert_eq!(r["errors_by_kind"], json!({"server GAME-1": failed}));
    assert!(r["latency_us"]["p99.9"].is_u64(), "{r}");
}

/// `message Ping { string content = 1; int64 sequence = 2; }` (the pingpong example's).
#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    content: String,
    #[prost(int64, tag = "2")]
    sequence: i64,
}

/// `message Pong { string content = 1; int64 sequence = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct Pong {
    #[prost(string, tag = "1")]
    content: String,
    #[prost(int64, tag = "2")]
    sequence: i64,
}

struct TestHandler;

#[component]
impl TestHandler {
    pub fn echo(&mut self, _s: &Session<Protobuf>, ping: Ping) -> Result<Pong> {
        if ping.content.is_empty() {
            return Err(Error::bad_request("empty content"));
        }
        Ok(Pong {
            content: ping.content.repeat(3),
            sequence: ping.sequence + 1,
        })
    }

    pub fn ping(&mut self, s: &Session<Protobuf>, ping: Ping) -> Result<()> {
        s.push(
            "pong",
            &Pong {
                content: ping.content,
                sequence: ping.sequence,
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_request_from_a_proto_file() {
    let server = nano::app_with(Protobuf)
        .component(TestHandler)
        .push_routes(["pong"])
        .tcp("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let url = format!("tcp://{}", server.addr(Transport::Tcp).unwrap());
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pingpong.proto");
    let types = [
        "--proto",
        proto,
        "--type",
        "pingpong.Ping",
        "--response-type",
        "pingpong.Pong",
        "--push-type",
        "pingpong.Pong",
    ];
    let mut args = vec![
        "request",
        &url,
        "TestHandler.Echo",
        r#"{"content":"ab","sequence":41}"#,
    ];
    args.extend(types);
    let o = run(&args).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // proto3 JSON: int64 as a string.
    assert_eq!(
        json_lines(&stdout(&o)),
        vec![json!({"content": "ababab", "sequence": "42"})]
    );

    // An error response from a protobuf server decodes too.
    let mut args = vec!["request", &url, "TestHandler.Echo", "{}"];
    args.extend(types);
    let o = run(&args).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_lines(&stderr(&o))[0]["msg"], "empty content");

    // Pushes decode with --push-type.
    let mut cmd = cli(&["repl", &url]);
    cmd.stdin(Stdio::piped()).args(types);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"notify TestHandler.Ping {\"content\":\"x\",\"sequence\":\"7\"}\n")
        .await
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        timeout(T, out.next_line())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some("ok")
    );
    let push = timeout(T, out.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        push,
        r#"push {"body":{"content":"x","sequence":"7"},"route":"pong"}"#
    );
    drop(stdin);
    assert_eq!(
        timeout(T, child.wait()).await.unwrap().unwrap().code(),
        Some(0)
    );

    // A field that is not in the message is refused before connecting.
    let mut args = vec!["request", &url, "TestHandler.Echo", r#"{"nope":1}"#];
    args.extend(types);
    let o = run(&args).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a pingpong.Ping"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_request_with_a_ca_file() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let s = nano::app()
        .component(Lobby {
            group: Group::new("lobby"),
        })
        .tcp_tls("127.0.0.1:0", tls.clone())
        .websocket_tls("127.0.0.1:0", "/nano", tls)
        .start()
        .await
        .unwrap();
    let ca = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nano-cli-test-ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let ca = ca.to_str().unwrap();
    let urls = [
        format!("tls://{}", s.addr(Transport::TcpTls).unwrap()),
        format!("wss://{}/nano", s.addr(Transport::WebSocketTls).unwrap()),
    ];
    for url in &urls {
        let o = run(&[
            "request",
            url,
            "Lobby.Echo",
            "[1]",
            "--ca",
            ca,
            "--server-name",
            "localhost",
        ])
        .await;
        assert_eq!(o.status.code(), Some(0), "{url}: {}", stderr(&o));
        assert_eq!(stdout(&o), "[1]\n");
    }
    // --insecure: no certificate check (the name 127.0.0.1 does not match either).
    for url in &urls {
        let o = run(&["request", url, "Lobby.Echo", "[2]", "--insecure"]).await;
        assert_eq!(o.status.code(), Some(0), "{url}: {}", stderr(&o));
        assert_eq!(stdout(&o), "[2]\n");
    }
    // With the CA but the wrong name: verification fails (exit 2).
    let o = run(&["request", &urls[0], "Lobby.Echo", "--ca", ca]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    // Without a CA: refused with a message that says what is missing.
    let o = run(&["request", &urls[0], "Lobby.Echo"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--ca"), "{}", stderr(&o));
}
