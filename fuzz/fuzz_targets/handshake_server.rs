//! The server's handshake: `agent::parse_handshake` and `ServerCtx::handshake_response`.
//!
//! Input: the body of a client handshake packet. Two server contexts, built once: one that
//! accepts every decodable handshake (route compression on, push routes, 30 s heartbeat) and
//! one whose validator refuses when `user.refuse` is a number (that code, `user.reason` as the
//! reason: arbitrary user-controlled text in the refusal).
//!
//! Checks, beyond "no panic":
//! - `parse_handshake` succeeds only for JSON;
//! - without a validator the answer is 200 with the prepared body for every decodable
//!   handshake, and 500 `{"code":500,"msg":…}` otherwise;
//! - a refusal is never 200 (a validator's 200 becomes 500), its body is JSON whose `code` is
//!   the code returned and whose `msg` is the validator's reason, byte for byte;
//! - the Rust client reads every answer: the prepared one as 200 with the engine's dictionary
//!   and heartbeat, a refusal as its code.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nano_core::EngineBuilder;
use nano_net::fuzzing::{client_handshake, parse_handshake, HandshakeCtx};
use nano_net::{HandshakeRefusal, ServerConfig};
use serde::de::IgnoredAny;
use serde_json::Value;

fn ctx(validating: bool) -> HandshakeCtx {
    let engine = EngineBuilder::new()
        .push_routes(["onMessage", "onJoin", "Room.Kicked"])
        .build()
        .expect("engine");
    let mut config = ServerConfig {
        heartbeat: Some(Duration::from_secs(30)),
        ..ServerConfig::default()
    };
    if validating {
        config.validator = Some(std::sync::Arc::new(
            |req: &nano_net::HandshakeRequest| match req.user.get("refuse").and_then(Value::as_u64)
            {
                Some(code) => Err(HandshakeRefusal {
                    code: code as u16,
                    reason: req
                        .user
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                None => Ok(()),
            },
        ));
    }
    HandshakeCtx::new(engine, config)
}

static PLAIN: LazyLock<HandshakeCtx> = LazyLock::new(|| ctx(false));
static VALIDATING: LazyLock<HandshakeCtx> = LazyLock::new(|| ctx(true));

/// The accepted answer, checked once: what the Rust client reads from it.
static ACCEPTED: LazyLock<Bytes> = LazyLock::new(|| {
    let (code, body) = PLAIN.handshake_response(br#"{"sys":{"type":"fuzz"}}"#);
    assert_eq!(code, 200);
    let info = client_handshake(&body).expect("the client reads the server's answer");
    assert_eq!(info.code, 200);
    assert_eq!(info.heartbeat, Some(Duration::from_secs(30)));
    let dict = info
        .dict
        .expect("route compression announces the dictionary");
    let routes: Vec<&str> = dict.iter().map(|(r, _)| r).collect();
    assert_eq!(routes, ["Room.Kicked", "onJoin", "onMessage"]);
    assert_eq!(info.serializer.as_deref(), Some("json"));
    body
});

fn check_refusal(code: u16, body: &[u8], reason: &str) {
    assert_ne!(code, 200, "a refusal answered 200");
    let v: Value = serde_json::from_slice(body).expect("a refusal is JSON");
    assert_eq!(v["code"].as_u64(), Some(u64::from(code)));
    assert_eq!(v["msg"].as_str(), Some(reason));
    match client_handshake(body) {
        Ok(info) => assert_eq!(info.code, code),
        Err(e) => panic!("the client cannot read a refusal: {e}"),
    }
}

/// The answer to an undecodable handshake, checked once.
static UNDECODABLE: LazyLock<Bytes> = LazyLock::new(|| {
    let (code, body) = PLAIN.handshake_response(b"{");
    assert_eq!(code, 500);
    check_refusal(code, &body, "undecodable handshake");
    body
});

fuzz_target!(|body: &[u8]| {
    // Is it JSON? Checked without building a value (the server builds one). Skipping accepts
    // more: numbers beyond f64 (`3e308`), which a `Value` refuses.
    let parsed = parse_handshake(body);
    if parsed.is_ok() {
        assert!(serde_json::from_slice::<IgnoredAny>(body).is_ok());
    }

    let (code, answer) = PLAIN.handshake_response(body);
    let (vcode, vanswer) = VALIDATING.handshake_response(body);
    match parsed {
        Ok((_sys, user)) => {
            assert_eq!(code, 200);
            assert_eq!(answer, *ACCEPTED);
            match user.get("refuse").and_then(Value::as_u64) {
                Some(refuse) => {
                    let reason = user.get("reason").and_then(Value::as_str).unwrap_or("");
                    let expected = match refuse as u16 {
                        200 => 500,
                        c => c,
                    };
                    assert_eq!(vcode, expected);
                    check_refusal(vcode, &vanswer, reason);
                }
                None => {
                    assert_eq!(vcode, 200);
                    assert_eq!(vanswer, *ACCEPTED);
                }
            }
        }
        Err(_) => {
            assert_eq!((code, vcode), (500, 500));
            assert_eq!(answer, *UNDECODABLE);
            assert_eq!(vanswer, *UNDECODABLE);
        }
    }
});
