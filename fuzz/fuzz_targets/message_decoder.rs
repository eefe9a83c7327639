//! `Message::decode`, with and without a dictionary.
//!
//! Input: `[dictionary selector][data packet body …]`. The selector picks the dictionary used
//! next to the dictionary-less decode: the dense one of the test vectors (`Room.Join` = 1,
//! `Room.Message` = 2, `onMessage` = 3), or a sparse one with edge codes (0, 0xFFFF), an empty
//! route and a route too long to send uncompressed. Both are built once.
//!
//! Checks, beyond "no panic":
//! - a decode without a dictionary that succeeds gives the same message with one; one that
//!   fails for want of a dictionary had the route-compressed flag;
//! - the decoded fields agree with the flag byte (route iff request/notify/push, id 0 unless
//!   request/response, error flag, a route code resolves to the route given) and the payload
//!   is the tail of the body;
//! - the message re-encodes, and the re-encoded body decodes to the same message (the route
//!   code being the dictionary's code for the route);
//! - when the input is canonical (minimal varint id, route compressed exactly when the
//!   dictionary has it), the re-encoded body is byte-identical to the input.
#![no_main]

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nano_core::protocol::{
    decode_varint, varint_len, Dictionary, Message, MessageError, HEADER_LEN,
};

static DENSE: LazyLock<Dictionary> =
    LazyLock::new(|| Dictionary::from_routes(["Room.Join", "Room.Message", "onMessage"]));

static SPARSE: LazyLock<Dictionary> = LazyLock::new(|| {
    let mut d = Dictionary::new();
    for (route, code) in [
        ("zero", 0),
        ("Room.Join", 0xBEEF),
        ("", 7),
        ("max", u16::MAX),
        ("x.y", 2),
    ] {
        d.insert(route, code).expect("distinct routes and codes");
    }
    d.insert(&"L".repeat(300), 300).expect("distinct");
    d
});

fn check(body: &[u8], msg: &Message, dict: Option<&Dictionary>) {
    let flag = body[0];
    assert_eq!(msg.route.is_some(), msg.kind.has_route());
    if !msg.kind.has_id() {
        assert_eq!(msg.id, 0);
    }
    assert_eq!(msg.error, flag & 0x20 != 0);
    if let Some(code) = msg.route_code {
        assert!(msg.kind.has_route() && flag & 0x01 != 0);
        let d = dict.expect("a route code needs a dictionary");
        assert_eq!(d.route(code), msg.route.as_ref());
    }
    assert!(body.ends_with(&msg.payload), "payload is not the tail");

    let mut out = BytesMut::new();
    msg.encode_packet(dict, &mut out)
        .expect("a decoded message re-encodes");
    assert_eq!(out[0], 4);
    let len = usize::from(out[1]) << 16 | usize::from(out[2]) << 8 | usize::from(out[3]);
    assert_eq!(len, out.len() - HEADER_LEN);
    let again = Message::decode(out.clone().freeze().slice(HEADER_LEN..), dict)
        .expect("a re-encoded message decodes");
    assert_eq!(again.kind, msg.kind);
    assert_eq!(again.id, msg.id);
    assert_eq!(again.route, msg.route);
    assert_eq!(again.error, msg.error);
    assert_eq!(again.payload, msg.payload);
    let code = msg
        .route
        .as_ref()
        .and_then(|r| dict.and_then(|d| d.code(r)));
    assert_eq!(again.route_code, code);

    let minimal_id =
        !msg.kind.has_id() || decode_varint(&body[1..]).is_ok_and(|(v, n)| n == varint_len(v));
    let compressed_as_encoded = (flag & 0x01 != 0) == code.is_some();
    if minimal_id && compressed_as_encoded {
        assert_eq!(
            &out[HEADER_LEN..],
            body,
            "canonical body re-encoded differently"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, body @ ..] = data else {
        return;
    };
    let dict: &Dictionary = if sel & 1 == 0 { &DENSE } else { &SPARSE };
    let bytes = Bytes::copy_from_slice(body);
    let plain = Message::decode(bytes.clone(), None);
    let with = Message::decode(bytes, Some(dict));
    match &plain {
        Ok(msg) => {
            assert_eq!(
                with.as_ref(),
                Ok(msg),
                "a dictionary changed a plain decode"
            );
            check(body, msg, None);
        }
        Err(MessageError::MissingDictionary) => assert!(body[0] & 0x01 != 0),
        Err(e) => {
            // Errors found before the route are the same with a dictionary.
            if with.is_ok() {
                panic!("decodes with a dictionary only, without one: {e:?}");
            }
        }
    }
    if let Ok(msg) = &with {
        check(body, msg, Some(dict));
    }
});
