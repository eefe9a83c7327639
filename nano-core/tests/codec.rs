//! The wire codec against the shared byte-exact vectors (`tests/data/vectors.json`), plus the
//! encoder-side guarantees. Everything runs on plain `BytesMut`s, no I/O.

use bytes::{BufMut, Bytes, BytesMut};
use nano_core::protocol::{
    CodecError, DataPacketWriter, DictError, Dictionary, Message, MessageError, MessageType,
    Packet, PacketCodec, PacketType, RouteName, DEFAULT_MAX_PACKET_SIZE, HEADER_LEN, MAX_BODY_LEN,
};
use serde_json::Value;

const VECTORS: &str = include_str!("data/vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("vectors.json parses")
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length: {s}");
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("bad hex digit {c}"),
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1]))
        .collect()
}

/// The dictionary the handshake vector announces.
fn dict() -> Dictionary {
    let mut dict = Dictionary::new();
    dict.insert("Room.Join", 1).unwrap();
    dict.insert("Room.Message", 2).unwrap();
    dict.insert("onMessage", 3).unwrap();
    dict
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap()
}

fn wire(v: &Value) -> Vec<u8> {
    hex(v["hex"].as_str().unwrap())
}

/// Feeds `bytes` to a fresh codec in chunks of `chunk` bytes, collecting packets until the
/// first error.
fn decode_chunked(bytes: &[u8], chunk: usize, max: usize) -> Result<Vec<Packet>, CodecError> {
    let mut codec = PacketCodec::new(max);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(packet) = codec.decode(&mut buf)? {
            packets.push(packet);
        }
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    Ok(packets)
}

/// Feeds `bytes` as two reads split at `at`.
fn decode_split(bytes: &[u8], at: usize) -> Vec<Packet> {
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in [&bytes[..at], &bytes[at..]] {
        buf.extend_from_slice(piece);
        while let Some(packet) = codec.decode(&mut buf).expect("valid stream") {
            packets.push(packet);
        }
    }
    assert!(buf.is_empty());
    packets
}

/// Packets, then messages for the data packets; the first error of either layer.
fn decode_messages(
    bytes: &[u8],
    chunk: usize,
    dict: Option<&Dictionary>,
) -> Result<Vec<Message>, CodecError> {
    let mut messages = Vec::new();
    for packet in decode_chunked(bytes, chunk, DEFAULT_MAX_PACKET_SIZE)? {
        if packet.kind == PacketType::Data {
            messages.push(Message::decode(packet.body, dict)?);
        }
    }
    Ok(messages)
}

fn message_type(s: &str) -> MessageType {
    match s {
        "request" => MessageType::Request,
        "notify" => MessageType::Notify,
        "response" => MessageType::Response,
        "push" => MessageType::Push,
        other => panic!("unknown message_type {other}"),
    }
}

/// The message a vector describes.
fn expected_message(v: &Value) -> Message {
    Message {
        kind: message_type(v["message_type"].as_str().unwrap()),
        id: v["id"].as_u64().unwrap_or(0),
        route: v["route"].as_str().map(RouteName::from),
        route_code: v["route_code"].as_u64().map(|c| u16::try_from(c).unwrap()),
        error: v["error"].as_bool().unwrap_or(false),
        payload: Bytes::copy_from_slice(v["payload_utf8"].as_str().unwrap().as_bytes()),
    }
}

fn is_message_vector(v: &Value) -> bool {
    v.get("message_type").is_some()
}

#[test]
fn valid_vectors_decode_and_reencode_byte_exact() {
    let dict = dict();
    let vectors = vectors();
    let mut seen = 0;
    for v in vectors["valid"].as_array().unwrap() {
        let bytes = wire(v);
        if v.get("packets").is_some() {
            continue; // the stream, below
        }
        seen += 1;
        let packets = decode_chunked(&bytes, bytes.len(), DEFAULT_MAX_PACKET_SIZE)
            .unwrap_or_else(|e| panic!("{}: {e}", name(v)));
        assert_eq!(packets.len(), 1, "{}", name(v));
        let packet = &packets[0];

        if is_message_vector(v) {
            assert_eq!(packet.kind, PacketType::Data, "{}", name(v));
            let expected = expected_message(v);
            let msg = Message::decode(packet.body.clone(), Some(&dict))
                .unwrap_or_else(|e| panic!("{}: {e}", name(v)));
            assert_eq!(msg, expected, "{}", name(v));

            // Zero-copy: the payload lies inside the packet body.
            let body = packet.body.as_ptr_range();
            let payload = msg.payload.as_ptr_range();
            if !msg.payload.is_empty() {
                assert!(body.start <= payload.start && payload.end <= body.end);
            }

            let compressed = expected.route_code.is_some();
            if !compressed {
                // Uncompressed routes decode the same without a dictionary.
                assert_eq!(
                    Message::decode(packet.body.clone(), None).unwrap(),
                    expected
                );
            }
            let mut out = BytesMut::new();
            msg.encode_packet(compressed.then_some(&dict), &mut out)
                .unwrap();
            assert_eq!(&out[..], &bytes[..], "{}: re-encode", name(v));
            // A message built by the constructors, without a route_code, also encodes the same.
            let mut out = BytesMut::new();
            Message {
                route_code: None,
                ..expected
            }
            .encode_packet(compressed.then_some(&dict), &mut out)
            .unwrap();
            assert_eq!(&out[..], &bytes[..], "{}: encode", name(v));
        } else {
            let kind = u8::try_from(v["packet_type"].as_u64().unwrap()).unwrap();
            assert_eq!(packet.kind as u8, kind, "{}", name(v));
            assert_eq!(PacketType::try_from(kind).unwrap(), packet.kind);
            let body = v["body_utf8"].as_str().unwrap_or("");
            assert_eq!(&packet.body[..], body.as_bytes(), "{}", name(v));
            if packet.kind == PacketType::Handshake {
                serde_json::from_slice::<Value>(&packet.body).expect("handshake is JSON");
            }
            assert_eq!(&packet.encode().unwrap()[..], &bytes[..], "{}", name(v));
        }
    }
    assert_eq!(seen, 15);
}

#[test]
fn handshake_dict_matches_dictionary() {
    let vectors = vectors();
    let v = vectors["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| name(v) == "handshake_response")
        .unwrap();
    let handshake: Value = serde_json::from_str(v["body_utf8"].as_str().unwrap()).unwrap();
    let announced = &handshake["sys"]["dict"];
    assert_eq!(&dict().to_json(), announced);
    assert_eq!(
        &Dictionary::from_routes(["onMessage", "Room.Message", "Room.Join"]).to_json(),
        announced
    );
    let parsed = Dictionary::from_json(announced).unwrap();
    assert_eq!(
        parsed.iter().collect::<Vec<_>>(),
        dict().iter().collect::<Vec<_>>()
    );
}

#[test]
fn every_valid_vector_survives_every_split() {
    let vectors = vectors();
    for v in vectors["valid"].as_array().unwrap() {
        let bytes = wire(v);
        let whole = decode_split(&bytes, bytes.len());
        for at in 0..=bytes.len() {
            assert_eq!(decode_split(&bytes, at), whole, "{} split at {at}", name(v));
        }
        assert_eq!(
            decode_chunked(&bytes, 1, DEFAULT_MAX_PACKET_SIZE).unwrap(),
            whole,
            "{} byte by byte",
            name(v)
        );
    }
}

#[test]
fn stream_of_three_packets_at_every_offset() {
    let dict = dict();
    let vectors = vectors();
    let v = vectors["valid"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| name(v) == "stream_three_packets")
        .unwrap();
    let bytes = wire(v);
    let whole = decode_split(&bytes, bytes.len());
    assert_eq!(whole.len() as u64, v["packets"].as_u64().unwrap());
    assert_eq!(
        whole.iter().map(|p| p.kind).collect::<Vec<_>>(),
        [PacketType::Heartbeat, PacketType::Data, PacketType::Data]
    );
    assert!(whole[0].body.is_empty());
    let notify = Message::decode(whole[1].body.clone(), Some(&dict)).unwrap();
    assert_eq!(
        notify,
        Message::notify("Room.Message", r#"{"content":"a"}"#)
    );
    let request = Message::decode(whole[2].body.clone(), Some(&dict)).unwrap();
    assert_eq!(request, Message::request(2, "Room.Join", "{}"));

    for at in 0..=bytes.len() {
        assert_eq!(decode_split(&bytes, at), whole, "split at {at}");
    }
    for chunk in 1..bytes.len() {
        assert_eq!(
            decode_chunked(&bytes, chunk, DEFAULT_MAX_PACKET_SIZE).unwrap(),
            whole,
            "chunks of {chunk}"
        );
    }
}

/// Compares errors by their Debug form (`CodecError` holds an `io::Error`, so no `PartialEq`).
fn assert_err(result: Result<Vec<Message>, CodecError>, expected: &CodecError, what: &str) {
    match result {
        Ok(messages) => panic!("{what}: expected {expected:?}, decoded {messages:?}"),
        Err(e) => assert_eq!(format!("{e:?}"), format!("{expected:?}"), "{what}"),
    }
}

#[test]
fn invalid_vectors_give_typed_errors() {
    let dict = dict();
    let vectors = vectors();
    let invalid = vectors["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 12);
    for v in invalid {
        let bytes = wire(v);
        let msg = |e: MessageError| CodecError::Message(e);
        let expected = match name(v) {
            "bad_packet_type_0" => CodecError::UnknownPacketType(0),
            "bad_packet_type_9" => CodecError::UnknownPacketType(9),
            "oversized_length" => CodecError::TooLarge {
                len: 0xFF_FFFF,
                max: DEFAULT_MAX_PACKET_SIZE,
            },
            "data_empty_body" => msg(MessageError::Empty),
            "msg_bad_type" => msg(MessageError::BadMessageType(5)),
            "compressed_route_truncated" => msg(MessageError::Truncated("route code")),
            "route_len_overrun" => msg(MessageError::Truncated("route")),
            "varint_unterminated" => msg(MessageError::VarintTooLong),
            "unknown_route_code" => msg(MessageError::UnknownRouteCode(0xBEEF)),
            "route_not_utf8" => msg(MessageError::RouteNotUtf8),
            "request_missing_route" => msg(MessageError::Truncated("route length")),
            "response_from_client" => {
                // Well-formed; refusing it is the server's policy.
                for chunk in [bytes.len(), 1] {
                    let messages = decode_messages(&bytes, chunk, Some(&dict)).unwrap();
                    assert_eq!(messages, [Message::response(1, "{}")]);
                    assert!(!messages[0].is_client_kind());
                }
                continue;
            }
            other => panic!("no expectation for invalid vector {other}"),
        };
        for chunk in [bytes.len(), 1] {
            let what = format!("{} in chunks of {chunk}", name(v));
            assert_err(
                decode_messages(&bytes, chunk, Some(&dict)),
                &expected,
                &what,
            );
        }
        if name(v) == "unknown_route_code" {
            assert_err(
                decode_messages(&bytes, bytes.len(), None),
                &msg(MessageError::MissingDictionary),
                "unknown_route_code without dict",
            );
        }
        if let CodecError::Message(e) = &expected {
            let code = if matches!(e, MessageError::UnknownRouteCode(_)) {
                "NANO-404"
            } else {
                "NANO-400"
            };
            assert_eq!(expected.code(), code, "{}", name(v));
        }
    }
}

#[test]
fn oversized_header_refused_before_buffering() {
    let header = [0x04, 0xff, 0xff, 0xff];

    // Whole header at once.
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.extend_from_slice(&header);
    let capacity = buf.capacity();
    let mut codec = PacketCodec::default();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        CodecError::TooLarge {
            len: 0xFF_FFFF,
            max: DEFAULT_MAX_PACKET_SIZE
        }
    ));
    assert_eq!(err.code(), "NANO-413");
    assert_eq!(buf.capacity(), capacity, "nothing reserved");
    assert_eq!(&buf[..], header, "nothing consumed");

    // Byte by byte: Ok(None) until the header is complete, then the error.
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    let capacity = buf.capacity();
    let mut codec = PacketCodec::default();
    for (i, byte) in header.iter().enumerate() {
        buf.put_u8(*byte);
        let result = codec.decode(&mut buf);
        if i + 1 < HEADER_LEN {
            assert!(matches!(result, Ok(None)), "byte {i}: {result:?}");
        } else {
            assert!(matches!(result, Err(CodecError::TooLarge { .. })));
        }
        assert_eq!(buf.capacity(), capacity);
    }

    // Exactly at the limit is accepted; one more is refused.
    let mut codec = PacketCodec::new(10);
    let mut buf = BytesMut::from(&[4, 0, 0, 10][..]);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
    let mut buf = BytesMut::from(&[4, 0, 0, 11][..]);
    assert!(matches!(
        PacketCodec::new(10).decode(&mut buf),
        Err(CodecError::TooLarge { len: 11, max: 10 })
    ));
}

#[test]
fn a_large_limit_does_not_reserve_the_announced_length() {
    let mut codec = PacketCodec::new(usize::MAX);
    assert_eq!(codec.max_packet_size(), MAX_BODY_LEN, "clamped to 24 bits");
    let mut buf = BytesMut::from(&[0x04, 0xff, 0xff, 0xff][..]);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
    assert!(
        buf.capacity() < 1024 * 1024,
        "a 4-byte header reserved {} bytes",
        buf.capacity()
    );
}

#[test]
fn bad_type_refused_from_its_first_byte() {
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::from(&[0x07][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::UnknownPacketType(7))
    ));
    // Errors are sticky: the bytes stay where they were.
    assert!(matches!(
        codec.decode(&mut buf),
        Err(CodecError::UnknownPacketType(7))
    ));
}

#[cfg(feature = "codec")]
mod tokio_codec {
    use super::*;
    use futures_util::StreamExt;
    use tokio_util::codec::{Decoder, Encoder, FramedRead};

    #[test]
    fn decode_eof_rejects_partial_packets() {
        let mut codec = PacketCodec::default();
        assert!(matches!(codec.decode_eof(&mut BytesMut::new()), Ok(None)));

        let mut buf = BytesMut::from(&[3, 0][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::TrailingBytes(2))
        ));

        // Header consumed, 2 of 5 body bytes present.
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::from(&[1, 0, 0, 5, b'{', b'}'][..]);
        assert!(matches!(Decoder::decode(&mut codec, &mut buf), Ok(None)));
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::TrailingBytes(6))
        ));

        let mut buf = BytesMut::from(&[3, 0, 0, 0][..]);
        let packet = PacketCodec::default()
            .decode_eof(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(packet, Packet::heartbeat());
    }

    #[test]
    fn encoders_write_packets() {
        let mut codec = PacketCodec::default();
        let mut dst = BytesMut::new();
        Encoder::<Packet>::encode(&mut codec, Packet::new(PacketType::Kick, "{}"), &mut dst)
            .unwrap();
        let mut encoded = BytesMut::new();
        Message::push("onMessage", "{}")
            .encode_packet(None, &mut encoded)
            .unwrap();
        Encoder::<Bytes>::encode(&mut codec, encoded.clone().freeze(), &mut dst).unwrap();
        assert_eq!(&dst[..4], [5, 0, 0, 2]);
        assert_eq!(&dst[6..], &encoded[..]);

        let too_big = Packet::new(PacketType::Data, vec![0u8; MAX_BODY_LEN + 1]);
        let mut dst = BytesMut::new();
        assert!(matches!(
            Encoder::<Packet>::encode(&mut codec, too_big, &mut dst),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(dst.is_empty());
    }

    #[tokio::test]
    async fn framed_read_over_a_byte_stream() {
        let vectors = vectors();
        let v = vectors["valid"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| name(v) == "stream_three_packets")
            .unwrap();
        let bytes = wire(v);
        let packets: Vec<_> = FramedRead::new(&bytes[..], PacketCodec::default())
            .collect()
            .await;
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(Result::is_ok));

        // The stream ends in the middle of the last packet.
        let cut = &bytes[..bytes.len() - 1];
        let results: Vec<_> = FramedRead::new(cut, PacketCodec::default()).collect().await;
        assert_eq!(results.len(), 3);
        assert!(matches!(
            results[2],
            Err(CodecError::TrailingBytes(n)) if n == 18 - 1
        ));
    }
}

#[test]
fn data_packet_writer_matches_message_encoding() {
    let dict = dict();
    let vectors = vectors();
    for v in vectors["valid"].as_array().unwrap() {
        if !is_message_vector(v) {
            continue;
        }
        let m = expected_message(v);
        let d = m.route_code.is_some().then_some(&dict);
        let route = m.route.as_deref().unwrap_or_default();
        let mut w = match m.kind {
            MessageType::Request => DataPacketWriter::request(m.id, route, d).unwrap(),
            MessageType::Notify => DataPacketWriter::notify(route, d).unwrap(),
            MessageType::Response => DataPacketWriter::response(m.id, m.error),
            MessageType::Push => DataPacketWriter::push(route, d).unwrap(),
        }
        .with_capacity_hint(m.payload.len());
        w.payload_mut().put_slice(&m.payload);
        assert_eq!(w.payload_len(), m.payload.len());
        let written = w.finish(DEFAULT_MAX_PACKET_SIZE).unwrap();

        let mut encoded = BytesMut::new();
        m.encode_packet(d, &mut encoded).unwrap();
        assert_eq!(written, encoded, "{}", name(v));
        assert_eq!(&written[..], &wire(v)[..], "{}", name(v));
    }
}

#[test]
fn data_packet_writer_enforces_the_limit() {
    // Body: flag + id (1 byte) + payload.
    let at_limit = |payload: usize, max: usize| {
        let mut w = DataPacketWriter::response(1, false);
        w.payload_mut().put_bytes(b'x', payload);
        w.finish(max)
    };
    let ok = at_limit(98, 100).unwrap();
    assert_eq!(ok.len(), HEADER_LEN + 100);
    assert_eq!(&ok[..4], [4, 0, 0, 100]);
    assert!(matches!(
        at_limit(99, 100),
        Err(CodecError::TooLarge { len: 101, max: 100 })
    ));
    // The 24-bit limit applies whatever the caller asks for.
    assert!(matches!(
        at_limit(MAX_BODY_LEN, usize::MAX),
        Err(CodecError::TooLarge {
            max: MAX_BODY_LEN,
            ..
        })
    ));

    // Clobbering the head through payload_mut is reported, not turned into garbage.
    let mut w = DataPacketWriter::push("onMessage", None).unwrap();
    w.payload_mut().truncate(3);
    assert!(matches!(
        w.finish(100),
        Err(CodecError::Message(MessageError::Truncated(_)))
    ));
}

#[test]
fn routes_longer_than_255_bytes() {
    let long = "r".repeat(256);
    let max = "r".repeat(255);
    assert_eq!(
        DataPacketWriter::push(&long, None).unwrap_err(),
        MessageError::RouteTooLong(256)
    );
    assert!(DataPacketWriter::push(&max, None).is_ok());
    let mut out = BytesMut::new();
    assert!(matches!(
        Message::notify(long.as_str(), "").encode_packet(None, &mut out),
        Err(CodecError::Message(MessageError::RouteTooLong(256)))
    ));
    assert!(out.is_empty(), "nothing written on error");

    // In the dictionary, a long route travels as its code.
    let mut dict = Dictionary::new();
    dict.insert(&long, 9).unwrap();
    Message::notify(long.as_str(), "")
        .encode_packet(Some(&dict), &mut out)
        .unwrap();
    assert_eq!(&out[..], [4, 0, 0, 3, 0x03, 0, 9]);
    let msg = Message::decode(out.split_off(HEADER_LEN).freeze(), Some(&dict)).unwrap();
    assert_eq!(msg.route.unwrap(), long.as_str());
    assert_eq!(msg.route_code, Some(9));

    // A 255-byte route round trips uncompressed.
    let mut out = BytesMut::new();
    Message::push(max.as_str(), "x")
        .encode_packet(None, &mut out)
        .unwrap();
    let msg = Message::decode(out.split_off(HEADER_LEN).freeze(), None).unwrap();
    assert_eq!(msg, Message::push(max.as_str(), "x"));
}

#[test]
fn encoding_a_message_without_a_usable_route() {
    let dict = dict();
    let mut out = BytesMut::new();
    let code_only = Message {
        route: None,
        route_code: Some(3),
        ..Message::push("x", "{}")
    };
    assert!(matches!(
        code_only.encode_packet(None, &mut out),
        Err(CodecError::Message(MessageError::MissingDictionary))
    ));
    assert!(matches!(
        code_only.encode_packet(Some(&Dictionary::new()), &mut out),
        Err(CodecError::Message(MessageError::UnknownRouteCode(3)))
    ));
    code_only.encode_packet(Some(&dict), &mut out).unwrap();
    assert_eq!(&out[..], hex("040000050700037b7d"));

    let no_route = Message {
        route: None,
        ..Message::request(1, "x", "")
    };
    assert!(matches!(
        no_route.encode_packet(Some(&dict), &mut BytesMut::new()),
        Err(CodecError::Message(MessageError::MissingRoute("request")))
    ));
}

#[test]
fn message_flags_that_must_not_be_misread() {
    // Payload-compressed (0x10) response: refused, not read as plain payload.
    assert_eq!(
        Message::decode(Bytes::from_static(&[0x14, 0x01, b'x']), None),
        Err(MessageError::CompressedPayload)
    );
    // Reserved bits.
    for flag in [0x40u8, 0x80, 0xC4] {
        assert_eq!(
            Message::decode(Bytes::copy_from_slice(&[flag, 1]), None),
            Err(MessageError::ReservedFlags(flag))
        );
    }
    for t in 4u8..8 {
        assert_eq!(
            Message::decode(Bytes::copy_from_slice(&[t << 1, 1]), None),
            Err(MessageError::BadMessageType(t))
        );
    }
    // Truncated id.
    assert_eq!(
        Message::decode(Bytes::from_static(&[0x04, 0x80]), None),
        Err(MessageError::Truncated("message id"))
    );
    // Pomelo servers set the route-compressed bit on responses: it is ignored there.
    let msg = Message::decode(Bytes::from_static(&[0x05, 0x02, b'{', b'}']), None).unwrap();
    assert_eq!(msg, Message::response(2, "{}"));
    // Error responses round trip.
    let mut out = BytesMut::new();
    Message::error_response(9, "{}")
        .encode_packet(None, &mut out)
        .unwrap();
    assert_eq!(&out[..], [4, 0, 0, 4, 0x24, 9, b'{', b'}']);
}

#[test]
fn dictionary_from_routes_is_order_independent() {
    let routes = ["Room.Join", "Room.Message", "onMessage", "Chat.Send", "a"];
    let reference = Dictionary::from_routes(routes);
    let pairs = |d: &Dictionary| d.iter().map(|(r, c)| (r.to_owned(), c)).collect::<Vec<_>>();
    let expected = pairs(&reference);
    assert_eq!(
        expected.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    // Every rotation and the reversal, with duplicates and owned strings.
    for k in 0..routes.len() {
        let mut rotated = routes.to_vec();
        rotated.rotate_left(k);
        assert_eq!(pairs(&Dictionary::from_routes(&rotated)), expected);
        rotated.reverse();
        rotated.extend(routes);
        let owned: Vec<String> = rotated.iter().map(|s| s.to_string()).collect();
        assert_eq!(pairs(&Dictionary::from_routes(owned)), expected);
    }
    assert_eq!(reference.len(), 5);
    assert!(!reference.is_empty());
    assert!(Dictionary::from_routes(Vec::<String>::new()).is_empty());
}

#[test]
fn dictionary_insert_rejects_duplicates() {
    let mut d = dict();
    assert_eq!(
        d.insert("Room.Join", 9),
        Err(DictError::DuplicateRoute("Room.Join".into()))
    );
    assert_eq!(d.insert("Other", 2), Err(DictError::DuplicateCode(2)));
    assert_eq!(d.len(), 3);
    d.insert("Zero", 0).unwrap();
    assert_eq!(d.route(0).unwrap(), "Zero");
}
