//! The HTTP side of a WebSocket listener (`http::accept`): the request head parse, the upgrade
//! checks (path, `Upgrade`, `Origin`, `Sec-WebSocket-Key`) and plain HTTP, over an in-memory
//! stream that delivers the input in the chunks the split seed picks, then end of stream.
//!
//! Input: `[config][split seed][client bytes …]`. Config bit 0: origins restricted to
//! `https://game.example`, or any origin. The WebSocket path is `/ws`; one handler answers
//! `/hello`.
//!
//! Checks, beyond "no panic" and "no hang" (the future completes on an always-ready stream):
//! - the outcome is what an independent `httparse` parse of the bytes the server had read
//!   implies: 400 for a malformed head, 431 for a head still incomplete after 16 KiB, nothing
//!   at all for a head cut by end of stream, 101 only for an upgrade on `/ws` with an allowed
//!   origin and a key, 403 for a refused origin, 400 for a missing key, 200 from the handler,
//!   404 otherwise;
//! - a 101 carries the accept key of the request's key, and hands over exactly the bytes read
//!   past the head; any other answer is one well-formed response (status line, headers,
//!   `Content-Length` matching the body, `HEAD` without a body) and the stream is shut.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use nano_fuzz::{block_on, MockStream};
use nano_net::fuzzing::HttpSide;
use nano_net::{HttpHandler, HttpResponse};

/// `MAX_HEAD` in http.rs.
const MAX_HEAD: usize = 16 * 1024;
const ORIGIN: &str = "https://game.example";

fn side(restricted: bool) -> HttpSide {
    let hello: HttpHandler = Arc::new(|req| {
        (req.path == "/hello").then(|| HttpResponse::ok("text/plain", &b"hello"[..]))
    });
    HttpSide::new(
        "/ws",
        restricted.then(|| vec![ORIGIN.to_owned()]),
        vec![hello],
        64 * 1024,
    )
}

static OPEN: LazyLock<HttpSide> = LazyLock::new(|| side(false));
static RESTRICTED: LazyLock<HttpSide> = LazyLock::new(|| side(true));

/// What the server must do with the bytes it read.
#[derive(Debug, PartialEq)]
enum Expect {
    Nothing,
    Upgrade { key: String, head_len: usize },
    Status { status: u16, head_only: bool },
}

fn expect(read: &[u8], restricted: bool) -> Expect {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(read) {
        Err(_) => {
            return Expect::Status {
                status: 400,
                head_only: false,
            }
        }
        Ok(httparse::Status::Partial) if read.len() >= MAX_HEAD => {
            return Expect::Status {
                status: 431,
                head_only: false,
            }
        }
        Ok(httparse::Status::Partial) => return Expect::Nothing,
        Ok(httparse::Status::Complete(n)) => n,
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let path = req.path.unwrap_or("");
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && path.split('?').next() == Some("/ws") {
        if restricted && header("origin").as_deref() != Some(ORIGIN) {
            return Expect::Status {
                status: 403,
                head_only: false,
            };
        }
        return match header("sec-websocket-key") {
            Some(key) => Expect::Upgrade { key, head_len },
            None => Expect::Status {
                status: 400,
                head_only: false,
            },
        };
    }
    let status = if path == "/hello" { 200 } else { 404 };
    Expect::Status {
        status,
        head_only: status == 200 && req.method == Some("HEAD"),
    }
}

/// Checks `out` is one response with `status`: status line, headers, the body its
/// `Content-Length` announces (none when `head_only`).
fn check_response(out: &[u8], status: u16, head_only: bool) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not a response head: {other:?} in {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    assert_eq!(resp.code, Some(status));
    let len: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .expect("a Content-Length");
    let body = if head_only { 0 } else { len };
    assert_eq!(
        out.len(),
        n + body,
        "body length differs from Content-Length"
    );
}

fuzz_target!(|data: &[u8]| {
    let [config, seed, input @ ..] = data else {
        return;
    };
    let restricted = config & 1 == 1;
    let side: &HttpSide = if restricted { &RESTRICTED } else { &OPEN };
    let mut stream = MockStream::new(input, *seed);
    let outcome = block_on(side.accept(&mut stream)).expect("an in-memory stream never fails");
    let leftover = outcome.map(|(_, leftover)| leftover);
    let read = &input[..stream.delivered()];
    match expect(read, restricted) {
        Expect::Nothing => {
            assert!(
                leftover.is_none() && stream.written.is_empty(),
                "answered a cut head"
            );
            assert_eq!(
                read.len(),
                input.len(),
                "stopped reading a cut head before the end"
            );
        }
        Expect::Upgrade { key, head_len } => {
            let leftover = leftover.expect("did not upgrade");
            assert_eq!(&leftover[..], &read[head_len..], "wrong bytes handed over");
            let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
            let expected = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            assert_eq!(stream.written, expected.as_bytes());
            assert!(!stream.shut);
        }
        Expect::Status { status, head_only } => {
            assert!(leftover.is_none(), "upgraded instead of answering {status}");
            check_response(&stream.written, status, head_only);
            assert!(stream.shut, "the stream was not shut after {status}");
        }
    }
});
