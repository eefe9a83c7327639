//! The HTTP side of a WebSocket port over real sockets: plain HTTP handlers, static files,
//! the origin check, the head-size limit (431) and the head timeout.

use std::time::Duration;

use nano::prelude::*;
use nano::{Server, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;

use common::{body, http_exchange, read_to_end, status, T};

struct Nothing;

#[component]
impl Nothing {
    pub fn ping(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }
}

async fn server_with(f: impl FnOnce(nano::App) -> nano::App) -> Server<Json> {
    f(nano::app()
        .component(Nothing)
        .websocket("127.0.0.1:0", "/nano"))
    .start()
    .await
    .expect("server starts")
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// The HTTP status of a WebSocket upgrade attempt with `origin` (`None`: no Origin header).
async fn upgrade_status(server: &Server<Json>, origin: Option<&str>) -> u16 {
    let addr = server.addr(Transport::WebSocket).unwrap();
    let mut req = format!("ws://{addr}/nano").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is answered within the bound")
    {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("origin {origin:?}: no HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn plain_http_and_origin_check_on_the_websocket_port() {
    let server = server_with(|a| {
        a.allowed_origins(["http://good.example"])
            .http_handler(|req| {
                (req.path == "/hello").then(|| nano::HttpResponse::ok("text/plain", "hi there"))
            })
    })
    .await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let out = http_exchange(addr, &get("/hello")).await;
    assert_eq!(status(&out), 200, "{out}");
    assert_eq!(body(&out), "hi there");
    let out = http_exchange(addr, &get("/elsewhere")).await;
    assert_eq!(status(&out), 404, "{out}");

    assert_eq!(
        upgrade_status(&server, Some("http://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_status(&server, Some("http://good.example")).await,
        101
    );
    // A request without Origin is not from a browser (browsers always send one): allowed.
    assert_eq!(upgrade_status(&server, None).await, 101);

    // Without allowed origins, any Origin and none are accepted.
    let open = server_with(|a| a).await;
    assert_eq!(
        upgrade_status(&open, Some("http://evil.example")).await,
        101
    );
    assert_eq!(upgrade_status(&open, None).await, 101);
}

#[tokio::test]
async fn http_static_serves_files_404s_and_never_escapes_its_directory() {
    let root = std::env::temp_dir().join(format!("nano-static-{}", std::process::id()));
    let public = root.join("public");
    std::fs::create_dir_all(public.join("sub")).unwrap();
    std::fs::write(public.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(public.join("sub").join("index.html"), "<h1>sub</h1>").unwrap();
    std::fs::write(root.join("secret.txt"), "top secret").unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());

    let server = server_with(|a| a.http_static("/static/", &public)).await;
    let addr = server.addr(Transport::WebSocket).unwrap();

    let out = http_exchange(addr, &get("/static/app.js")).await;
    assert_eq!(status(&out), 200, "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{out}"
    );
    assert_eq!(body(&out), "console.log(1)");
    let out = http_exchange(addr, &get("/static/sub/")).await;
    assert_eq!((status(&out), body(&out)), (200, "<h1>sub</h1>"), "{out}");
    let out = http_exchange(addr, &get("/static/app.js?v=2")).await;
    assert_eq!(status(&out), 200, "the query string is ignored: {out}");

    let out = http_exchange(addr, &get("/static/missing.js")).await;
    assert_eq!(status(&out), 404, "{out}");

    for escape in [
        "/static/../secret.txt",
        "/static/sub/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static//etc/passwd",
        "/static/..%2fsecret.txt",
    ] {
        let out = http_exchange(addr, &get(escape)).await;
        assert!(
            !out.contains("top secret") && !out.contains("root:"),
            "{escape} escaped the directory: {out}"
        );
        assert_eq!(status(&out), 404, "{escape}: {out}");
    }
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let server = server_with(|a| a).await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let mut req = b"GET /nano HTTP/1.1\r\nHost: x\r\n".to_vec();
    // Headers of 2 KiB up to exactly the 16 KiB head limit (within the header-count limit),
    // so that the server has read everything when it answers (no reset for unread bytes).
    let limit = 16 * 1024;
    let mut i = 0;
    while req.len() < limit {
        let line = format!("X-Filler-{i}: {}\r\n", "a".repeat(2048));
        let room = limit - req.len();
        req.extend_from_slice(&line.as_bytes()[..line.len().min(room)]);
        i += 1;
    }
    assert_eq!(req.len(), limit);
    // No blank line: the head never ends, so only the limit can answer it.
    let out = http_exchange(addr, &req).await;
    assert_eq!(status(&out), 431, "{out}");
    // The server still serves.
    assert_eq!(status(&http_exchange(addr, &get("/x")).await), 404);
}

#[tokio::test]
async fn half_a_request_head_is_closed_after_the_handshake_timeout() {
    let hs_timeout = Duration::from_millis(400);
    let server = server_with(|a| a.handshake_timeout(hs_timeout)).await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /nano HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = read_to_end(&mut s).await; // fails the test if never closed
    let waited = started.elapsed();
    assert!(
        waited >= hs_timeout - Duration::from_millis(50),
        "closed after {waited:?}, before the timeout"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed only after {waited:?}"
    );
    assert!(
        !out.starts_with(b"HTTP/1.1 101"),
        "no upgrade for half a head"
    );
    assert_eq!(status(&http_exchange(addr, &get("/x")).await), 404);
}

/// On a one-thread runtime: an HTTP handler that blocks (as a file read from a slow disk does)
/// runs on the blocking pool, so the server's other connections are served meanwhile.
#[tokio::test]
async fn a_blocking_http_handler_stalls_no_runtime_worker() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let server = server_with(move |a| {
        a.http_handler(move |req| {
            if req.path != "/slow" {
                return None;
            }
            let _ = entered_tx.lock().unwrap().send(());
            // Blocks until the test says so (bounded, so a failing test still ends).
            let _ = wait.lock().unwrap().recv_timeout(T);
            Some(nano::HttpResponse::ok("text/plain", "slow"))
        })
    })
    .await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let slow = tokio::spawn(async move { http_exchange(addr, &get("/slow")).await });
    // Wait (off the runtime's only thread) until the handler is blocked.
    tokio::task::spawn_blocking(move || entered.recv_timeout(T).expect("the handler ran"))
        .await
        .unwrap();
    // Meanwhile a nano client is served, on the same one-thread runtime.
    let client: nano::Client = nano::Client::connect_ws(&format!("ws://{addr}/nano"))
        .await
        .unwrap();
    let answered = timeout(
        Duration::from_secs(5),
        client.request::<_, ()>("Nothing.Ping", &()),
    )
    .await
    .expect("served while the HTTP handler blocks");
    answered.unwrap();
    release.send(()).unwrap();
    let out = timeout(T, slow).await.unwrap().unwrap();
    assert_eq!((status(&out), body(&out)), (200, "slow"), "{out}");
}

#[tokio::test]
async fn http_static_refuses_a_file_too_large_to_hold_in_memory() {
    let dir = std::env::temp_dir().join(format!("nano-static-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Sparse: its length is over the bound, its blocks are not written.
    let big = std::fs::File::create(dir.join("big.bin")).unwrap();
    big.set_len(nano::MAX_STATIC_FILE + 1).unwrap();
    drop(big);
    let server = server_with(|a| a.http_static("/files/", &dir)).await;
    let addr = server.addr(Transport::WebSocket).unwrap();
    let out = http_exchange(addr, &get("/files/big.bin")).await;
    assert_eq!(status(&out), 500, "{}", &out[..out.len().min(200)]);
    assert_eq!(body(&out), "file too large");
    std::fs::remove_dir_all(&dir).unwrap();
}
