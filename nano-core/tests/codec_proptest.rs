//! Property tests of the wire codec: round trips, arbitrary chunking, and hostile input.

use bytes::{Bytes, BytesMut};
use nano_core::protocol::{
    decode_varint, encode_varint, varint_len, Dictionary, Message, MessageType, Packet,
    PacketCodec, PacketType, DEFAULT_MAX_PACKET_SIZE, HEADER_LEN, MAX_BODY_LEN, MAX_ROUTE_LEN,
};
use proptest::prelude::*;

/// Keeps whole chars while the UTF-8 length stays within 255 bytes.
fn fit_route(chars: Vec<char>) -> String {
    let mut route = String::new();
    for c in chars {
        if route.len() + c.len_utf8() > MAX_ROUTE_LEN {
            break;
        }
        route.push(c);
    }
    route
}

fn route() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z]{1,12}\\.[A-Za-z]{1,12}",
        2 => prop::collection::vec(any::<char>(), 0..=255).prop_map(fit_route),
        1 => "[a-z]{255}",
        1 => Just(String::new()),
    ]
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Request),
        Just(MessageType::Notify),
        Just(MessageType::Response),
        Just(MessageType::Push),
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, any::<u64>(), Just(u64::MAX)]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}

/// A message to encode, and whether its route should travel compressed (with this code).
#[derive(Debug, Clone)]
struct Case {
    message: Message,
    code: Option<u16>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        message_type(),
        id(),
        route(),
        any::<Option<u16>>(),
        any::<bool>(),
        payload(),
    )
        .prop_map(|(kind, id, route, code, error, payload)| {
            let message = Message {
                kind,
                id: if kind.has_id() { id } else { 0 },
                route: kind.has_route().then(|| route.into()),
                route_code: None,
                error,
                payload: payload.into(),
            };
            Case {
                code: code.filter(|_| kind.has_route()),
                message,
            }
        })
}

/// A dictionary holding `route` with `code`, plus unrelated entries.
fn dict_with(route: &str, code: u16) -> Dictionary {
    let mut dict = Dictionary::new();
    dict.insert(route, code).unwrap();
    for (other, other_code) in [("Room.Join", 1u16), ("zz.Other", 40000)] {
        let _ = dict.insert(other, other_code); // skip on collision
    }
    dict
}

fn packet() -> impl Strategy<Value = Packet> {
    let kind = prop_oneof![
        Just(PacketType::Handshake),
        Just(PacketType::HandshakeAck),
        Just(PacketType::Heartbeat),
        Just(PacketType::Data),
        Just(PacketType::Kick),
    ];
    (kind, prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, b)| Packet::new(k, b))
}

/// Mostly well-framed packets with hostile bodies (a plausible message flag, then random
/// bytes), mixed with headers that lie about their length and runs of random bytes, so that
/// many cases get deep into both layers before (possibly) hitting garbage.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let framed = (
        prop_oneof![4 => Just(4u8), 2 => 1u8..=5, 1 => any::<u8>()],
        0u8..0x40,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, flag, rest)| {
            let len = 1 + rest.len();
            let mut packet = vec![t, 0, (len >> 8) as u8, len as u8, flag];
            packet.extend(rest);
            packet
        });
    let lying_header = (1u8..=5, 0u32..=0xFF_FFFF).prop_map(|(t, len)| {
        let [_, a, b, c] = len.to_be_bytes();
        vec![t, a, b, c]
    });
    let segment = prop_oneof![
        8 => framed,
        1 => lying_header,
        1 => prop::collection::vec(any::<u8>(), 0..32),
    ];
    prop::collection::vec(segment, 0..16).prop_map(|segments| segments.concat())
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..64, 1..16)
}

/// Splits `bytes` into chunks whose sizes cycle through `sizes`.
fn chunks<'a>(bytes: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = bytes;
    sizes.iter().cycle().map_while(move |&n| {
        if rest.is_empty() {
            return None;
        }
        let (head, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

proptest! {
    #[test]
    fn message_round_trip(case in case()) {
        let Case { message, code } = case;
        let dict = match (&message.route, code) {
            (Some(route), Some(code)) => Some(dict_with(route, code)),
            _ => None,
        };
        let mut wire = BytesMut::new();
        message.encode_packet(dict.as_ref(), &mut wire).unwrap();

        let mut codec = PacketCodec::new(MAX_BODY_LEN);
        let packet = codec.decode(&mut wire).unwrap().expect("one whole packet");
        prop_assert!(wire.is_empty());
        prop_assert_eq!(packet.kind, PacketType::Data);
        let decoded = Message::decode(packet.body, dict.as_ref()).unwrap();

        let expected = Message { route_code: dict.as_ref().and(code), ..message };
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn uncompressed_routes_ignore_an_unrelated_dictionary(case in case()) {
        let message = case.message;
        let dict = Dictionary::from_routes(["Room.Join", "zz.Other"]);
        if message.route.as_ref().is_some_and(|r| dict.code(r).is_some()) {
            return Ok(());
        }
        let mut wire = BytesMut::new();
        message.encode_packet(Some(&dict), &mut wire).unwrap();
        let mut plain = BytesMut::new();
        message.encode_packet(None, &mut plain).unwrap();
        prop_assert_eq!(&wire, &plain);
        let body = wire.split_off(HEADER_LEN).freeze();
        prop_assert_eq!(Message::decode(body, Some(&dict)).unwrap(), message);
    }

    #[test]
    fn packet_stream_in_arbitrary_chunks(
        packets in prop::collection::vec(packet(), 0..20),
        sizes in chunk_sizes(),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            wire.extend_from_slice(&p.encode().unwrap());
        }
        let mut codec = PacketCodec::new(300);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in chunks(&wire, &sizes) {
            buf.extend_from_slice(chunk);
            while let Some(p) = codec.decode(&mut buf).unwrap() {
                decoded.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn hostile_bytes_never_panic_nor_overbuffer(
        bytes in hostile_stream(),
        sizes in chunk_sizes(),
        max in prop_oneof![0usize..64, 0usize..2048, Just(DEFAULT_MAX_PACKET_SIZE), Just(MAX_BODY_LEN)],
    ) {
        let dict = Dictionary::from_routes(["Room.Join", "Room.Message", "onMessage"]);
        let mut codec = PacketCodec::new(max);
        let mut buf = BytesMut::new();
        'feed: for chunk in chunks(&bytes, &sizes) {
            buf.extend_from_slice(chunk);
            prop_assert!(buf.len() <= max + HEADER_LEN + chunk.len());
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(packet)) => {
                        prop_assert!(packet.body.len() <= max);
                        if packet.kind == PacketType::Data {
                            let _ = Message::decode(packet.body.clone(), Some(&dict));
                            let _ = Message::decode(packet.body, None);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // Waiting for a header (< 4 bytes) or for the rest of a body (< its length).
            prop_assert!(buf.len() < HEADER_LEN.max(max));
        }
    }

    #[test]
    fn message_decode_never_panics(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let dict = Dictionary::from_routes(["Room.Join", "Room.Message", "onMessage"]);
        for d in [None, Some(&dict)] {
            if let Ok(m) = Message::decode(Bytes::from(body.clone()), d) {
                // Whatever decodes re-encodes to something that decodes the same.
                let d = m.route_code.and(d);
                let mut wire = BytesMut::new();
                m.encode_packet(d, &mut wire).unwrap();
                let again = Message::decode(wire.split_off(HEADER_LEN).freeze(), d).unwrap();
                prop_assert_eq!(again, m);
            }
        }
    }

    #[test]
    fn message_decode_of_flag_heavy_bodies(
        flag in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let dict = Dictionary::from_routes(["Room.Join"]);
        let mut body = vec![flag];
        body.extend_from_slice(&rest);
        let _ = Message::decode(Bytes::from(body.clone()), Some(&dict));
        let _ = Message::decode(Bytes::from(body), None);
    }

    #[test]
    fn varint_round_trip(value in any::<u64>(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut bytes = Vec::new();
        encode_varint(value, &mut bytes);
        prop_assert_eq!(bytes.len(), varint_len(value));
        let n = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(decode_varint(&bytes), Ok((value, n)));
    }

    #[test]
    fn varint_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        if let Ok((value, n)) = decode_varint(&bytes) {
            prop_assert!((1..=10).contains(&n));
            prop_assert!(varint_len(value) <= n);
        }
    }
}
