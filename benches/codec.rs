//! Criterion micro-benchmarks of the wire codec (`nano_core::protocol`): packet and message
//! encode/decode, ns per operation.
//!
//! ```text
//! cargo bench --bench codec                  # all
//! cargo bench --bench codec -- message/      # a subset (criterion filter)
//! ```
//!
//! The payloads are the pingpong ones: a 22-byte protobuf `Ping` and its 54-byte `Pong`; the
//! request packet is 46 bytes.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nano::protocol::{
    decode_varint, encode_packet, encode_varint, DataPacketWriter, Dictionary, Message,
    PacketCodec, PacketType, DEFAULT_MAX_PACKET_SIZE,
};
use prost::Message as _;

#[path = "../examples/pingpong/handler.rs"]
#[allow(dead_code)]
mod handler;

use handler::{Ping, Pong};

fn ping() -> Ping {
    Ping {
        content: "ping-pong bench!".into(),
        sequence: 123_456,
    }
}

fn dict() -> Dictionary {
    Dictionary::from_routes(["pong", "TestHandler.Echo", "TestHandler.Ping"])
}

/// A whole request packet (compressed route when `dict` is given).
fn request_packet(dict: Option<&Dictionary>) -> Bytes {
    let mut w = DataPacketWriter::request(300, "TestHandler.Echo", dict).unwrap();
    ping().encode(w.payload_mut()).unwrap();
    w.finish(DEFAULT_MAX_PACKET_SIZE).unwrap()
}

fn packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    let body = request_packet(None).slice(4..);

    g.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            encode_packet(PacketType::Data, black_box(&body), &mut out).unwrap();
            black_box(&out);
        })
    });

    // One packet arriving whole: copy into the read buffer, decode it.
    let wire = request_packet(None);
    g.bench_function("decode", |b| {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.extend_from_slice(black_box(&wire));
            let p = codec.decode(&mut buf).unwrap().unwrap();
            black_box(p);
        })
    });

    // 64 pipelined packets in one read, decoded one by one (per-packet cost).
    let mut burst = BytesMut::new();
    for _ in 0..64 {
        burst.extend_from_slice(&wire);
    }
    let burst = burst.freeze();
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_burst_64", |b| {
        let mut codec = PacketCodec::default();
        b.iter_batched_ref(
            || BytesMut::from(&burst[..]),
            |buf| {
                while let Some(p) = codec.decode(buf).unwrap() {
                    black_box(p);
                }
            },
            BatchSize::SmallInput,
        )
    });

    // A packet split across reads: header, then body in two halves.
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_split_3_reads", |b| {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        let mid = 4 + (wire.len() - 4) / 2;
        b.iter(|| {
            buf.extend_from_slice(&wire[..4]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[4..mid]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[mid..]);
            black_box(codec.decode(&mut buf).unwrap().unwrap());
        })
    });
    g.finish();
}

fn message(c: &mut Criterion) {
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Elements(1));
    let dict = dict();
    let payload: Bytes = ping().encode_to_vec().into();

    for (name, d) in [("route_string", None), ("route_compressed", Some(&dict))] {
        let msg = Message::request(300, "TestHandler.Echo", payload.clone());
        g.bench_function(format!("encode_request_{name}"), |b| {
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                out.clear();
                black_box(&msg).encode_packet(d, &mut out).unwrap();
                black_box(&out);
            })
        });
        let body = request_packet(d).slice(4..);
        g.bench_function(format!("decode_request_{name}"), |b| {
            b.iter(|| black_box(Message::decode(black_box(body.clone()), Some(&dict)).unwrap()))
        });
    }

    // What a server does for TestHandler.Echo's answer: a response packet with the
    // protobuf Pong written straight into it.
    let pong = Pong::reply_to(&ping());
    g.bench_function("encode_response_with_pong", |b| {
        b.iter(|| {
            let mut w = DataPacketWriter::response(black_box(300), false)
                .with_capacity_hint(pong.encoded_len());
            black_box(&pong).encode(w.payload_mut()).unwrap();
            black_box(w.finish(DEFAULT_MAX_PACKET_SIZE).unwrap())
        })
    });
    g.bench_function("encode_push_compressed_with_pong", |b| {
        b.iter(|| {
            let mut w = DataPacketWriter::push("pong", Some(&dict))
                .unwrap()
                .with_capacity_hint(pong.encoded_len());
            black_box(&pong).encode(w.payload_mut()).unwrap();
            black_box(w.finish(DEFAULT_MAX_PACKET_SIZE).unwrap())
        })
    });

    // The server's whole inbound path for one request: packet, message, Ping.
    let wire = request_packet(Some(&dict));
    g.bench_function("decode_packet_message_ping", |b| {
        let mut codec = PacketCodec::default();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.extend_from_slice(black_box(&wire));
            let p = codec.decode(&mut buf).unwrap().unwrap();
            let m = Message::decode(p.body, Some(&dict)).unwrap();
            black_box(Ping::decode(&m.payload[..]).unwrap())
        })
    });
    g.finish();
}

fn varint(c: &mut Criterion) {
    let mut g = c.benchmark_group("varint");
    g.throughput(Throughput::Elements(1));
    for v in [1u64, 300, u64::from(u32::MAX)] {
        g.bench_function(format!("encode_{v}"), |b| {
            let mut out = BytesMut::with_capacity(64);
            b.iter(|| {
                out.clear();
                encode_varint(black_box(v), &mut out);
                black_box(&out);
            })
        });
        let mut enc = BytesMut::new();
        encode_varint(v, &mut enc);
        g.bench_function(format!("decode_{v}"), |b| {
            b.iter(|| black_box(decode_varint(black_box(&enc[..])).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, packet, message, varint);
criterion_main!(benches);
