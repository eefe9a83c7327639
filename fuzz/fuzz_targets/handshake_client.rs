//! The Rust client's parse of the server's handshake answer (`HandshakeInfo::parse`).
//!
//! Input: the body of a server handshake packet.
//!
//! Checks, beyond "no panic":
//! - an answer is accepted only when it is JSON with a `code` in 0..=65535, and every error is
//!   a protocol error;
//! - a non-200 answer carries no `sys` fields; a 200 one has a non-zero heartbeat when it has
//!   one, the serializer given, and a dictionary (never an empty one) holding exactly the
//!   routes and codes of `sys.dict`, which survives `to_json` / `from_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nano_core::protocol::Dictionary;
use nano_net::fuzzing::client_handshake;
use nano_net::ClientError;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match client_handshake(body) {
        Ok(info) => {
            let v = json.expect("accepted an answer that is not JSON");
            assert_eq!(info.raw, v);
            assert_eq!(v["code"].as_u64(), Some(u64::from(info.code)));
            if info.code != 200 {
                assert!(
                    info.heartbeat.is_none() && info.dict.is_none() && info.serializer.is_none()
                );
                return;
            }
            let sys = &v["sys"];
            if let Some(hb) = info.heartbeat {
                assert!(!hb.is_zero());
                assert!(sys["heartbeat"].as_f64().is_some());
            }
            assert_eq!(info.serializer.as_deref(), sys["serializer"].as_str());
            match &info.dict {
                Some(dict) => {
                    assert!(!dict.is_empty());
                    let obj = sys["dict"].as_object().expect("dict came from an object");
                    assert_eq!(dict.len(), obj.len());
                    for (route, code) in dict.iter() {
                        assert_eq!(obj[route].as_u64(), Some(u64::from(code)));
                        assert_eq!(dict.code(route), Some(code));
                        assert_eq!(dict.route(code).map(|r| r.as_str()), Some(route));
                    }
                    let again = Dictionary::from_json(&dict.to_json()).expect("round trip");
                    assert!(again.iter().eq(dict.iter()));
                }
                None => assert!(sys["dict"].as_object().is_none_or(|o| o.is_empty())),
            }
        }
        Err(ClientError::Protocol(_)) => {}
        Err(e) => panic!("not a protocol error: {e:?}"),
    }
});
