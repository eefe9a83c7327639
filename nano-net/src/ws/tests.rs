//! Tests of the WebSocket source and sink over in-memory pipes, with hand-built client frames.

use super::frame::*;
use super::*;
use nano_core::protocol::{Packet, PacketCodec, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MAX: usize = 1024;

type Source = WsSource<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
type Sink = WsSink<WriteHalf<DuplexStream>>;

/// A client frame, built by hand: FIN, RSV, opcode, masked length, key, masked payload.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

const BIN: u8 = 0x82; // FIN + binary
const BIN_MORE: u8 = 0x02; // binary, more to come
const CONT: u8 = 0x00; // continuation, more to come
const CONT_FIN: u8 = 0x80; // last continuation
const PING: u8 = 0x89;
const PONG: u8 = 0x8a;
const CLOSE: u8 = 0x88;

fn packet(body: &str) -> Vec<u8> {
    Packet::new(PacketType::Data, body.as_bytes().to_vec())
        .encode()
        .unwrap()
        .to_vec()
}

fn pair_over_duplex() -> (Source, Sink, DuplexStream) {
    let (server, client) = tokio::io::duplex(1 << 20);
    let (r, w) = tokio::io::split(server);
    let (source, sink) = pair(r, w, BytesMut::new(), MAX);
    (source, sink, client)
}

/// Reads until `want` bytes are in `buf` (or the source ends).
async fn read_n(source: &mut Source, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    while buf.len() < want {
        if source.read_into(buf).await? == 0 {
            return Ok(0);
        }
    }
    Ok(buf.len())
}

fn decode_all(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut codec = PacketCodec::new(MAX);
    let mut out = Vec::new();
    while let Some(p) = codec.decode(buf).unwrap() {
        out.push(p.body);
    }
    out
}

/// Parses one server frame: (first byte, payload); asserts it is unmasked.
async fn server_frame(client: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut two = [0u8; 2];
    client.read_exact(&mut two).await.unwrap();
    assert_eq!(two[1] & 0x80, 0, "server frames are unmasked");
    let len = match two[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            client.read_exact(&mut l).await.unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            client.read_exact(&mut l).await.unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    client.read_exact(&mut payload).await.unwrap();
    (two[0], payload)
}

#[tokio::test]
async fn a_binary_frame_with_two_packets() {
    let (mut source, _sink, mut client) = pair_over_duplex();
    let payload = [packet("one"), packet("two")].concat();
    client.write_all(&frame(BIN, &payload)).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(source.read_into(&mut buf).await.unwrap(), payload.len());
    assert_eq!(&buf[..], &payload[..]);
    assert_eq!(decode_all(&mut buf), vec!["one", "two"]);
}

#[tokio::test]
async fn a_packet_split_across_frames_and_continuations() {
    let p = packet("a packet in pieces");
    // Two frames, then four (a binary frame and three continuations, one of them empty).
    let two = [frame(BIN_MORE, &p[..5]), frame(CONT_FIN, &p[5..])].concat();
    let four = [
        frame(BIN_MORE, &p[..2]),
        frame(CONT, &p[2..9]),
        frame(CONT, &[]),
        frame(CONT_FIN, &p[9..]),
    ]
    .concat();
    for wire in [two, four] {
        let (mut source, _sink, mut client) = pair_over_duplex();
        client.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::new();
        read_n(&mut source, &mut buf, p.len()).await.unwrap();
        assert_eq!(&buf[..], &p[..]);
        assert_eq!(decode_all(&mut buf), vec!["a packet in pieces"]);
        assert!(source.reader.at_boundary());
    }
}

/// A stream of frames of every kind the reader passes through or answers.
fn mixed_stream() -> (Vec<u8>, Vec<u8>) {
    let p1 = packet("first");
    let p2 = packet(&"x".repeat(300)); // a 16-bit length
    let p3 = packet("third");
    let wire = [
        frame(BIN, &p1),
        frame(PONG, b"ignored"),
        frame(BIN_MORE, &p2[..100]),
        frame(PING, b"in between"), // control frames may come inside a message
        frame(CONT_FIN, &p2[100..]),
        frame(BIN, &[]),
        frame(BIN, &[p3.clone(), packet("fourth")].concat()),
    ]
    .concat();
    let data = [p1, p2, p3, packet("fourth")].concat();
    (wire, data)
}

/// Feeds `parts` to a reader one after the other; returns the data and the pings seen.
fn feed(parts: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut reader = FrameReader::new(MAX);
    let mut raw = BytesMut::new();
    let mut data = Vec::new();
    let mut pings = 0;
    for part in parts {
        raw.extend_from_slice(part);
        loop {
            let pass = reader.parse(&mut raw).unwrap();
            data.extend_from_slice(&pass.data);
            match pass.answer {
                Some(Answer::Ping { payload, len }) => {
                    assert_eq!(&payload[..usize::from(len)], b"in between");
                    pings += 1;
                }
                Some(Answer::Close(_)) => panic!("no close was sent"),
                None if pass.data.is_empty() => break,
                None => {}
            }
        }
    }
    assert!(reader.at_boundary() && raw.is_empty());
    (data, pings)
}

#[test]
fn frames_split_at_every_byte_boundary() {
    let (wire, data) = mixed_stream();
    assert_eq!(feed(&[&wire]), (data.clone(), 1));
    for at in 0..=wire.len() {
        assert_eq!(feed(&[&wire[..at], &wire[at..]]), (data.clone(), 1), "{at}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(feed(&bytes), (data, 1));
}

#[tokio::test]
async fn frames_arriving_a_byte_at_a_time() {
    let (wire, data) = mixed_stream();
    let (mut source, _sink, mut client) = pair_over_duplex();
    let writer = tokio::spawn(async move {
        for b in wire {
            client.write_all(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    let mut buf = BytesMut::new();
    read_n(&mut source, &mut buf, data.len()).await.unwrap();
    assert_eq!(&buf[..], &data[..]);
    let mut client = writer.await.unwrap();
    assert_eq!(
        server_frame(&mut client).await,
        (PONG, b"in between".to_vec())
    );
}

#[tokio::test]
async fn a_ping_is_answered_with_its_payload() {
    let (mut source, _sink, mut client) = pair_over_duplex();
    let p = packet("after the ping");
    client
        .write_all(&[frame(PING, b"are you there"), frame(BIN, &p)].concat())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    read_n(&mut source, &mut buf, p.len()).await.unwrap();
    assert_eq!(&buf[..], &p[..]);
    assert_eq!(
        server_frame(&mut client).await,
        (PONG, b"are you there".to_vec())
    );
}

#[tokio::test]
async fn a_pong_still_queued_goes_before_the_next_frame() {
    let (mut source, mut sink, mut client) = pair_over_duplex();
    let p = packet("with a ping behind");
    client
        .write_all(&[frame(BIN, &p), frame(PING, b"p")].concat())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    read_n(&mut source, &mut buf, p.len()).await.unwrap();
    // The ping was parsed with the data, and its pong queued behind it.
    assert!(source.answer_queued);
    let reply = Bytes::from(packet("reply"));
    sink.send_batch(std::slice::from_ref(&reply)).await.unwrap();
    assert_eq!(server_frame(&mut client).await, (PONG, b"p".to_vec()));
    assert_eq!(server_frame(&mut client).await, (BIN, reply.to_vec()));
}

#[tokio::test]
async fn a_close_is_echoed_and_ends_the_source() {
    let (mut source, mut sink, mut client) = pair_over_duplex();
    let p = packet("last words");
    let close = [&1001u16.to_be_bytes()[..], b"bye"].concat();
    client
        .write_all(&[frame(BIN, &p), frame(CLOSE, &close)].concat())
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    // The data before the close is delivered first, then the close ends the source.
    assert_eq!(source.read_into(&mut buf).await.unwrap(), p.len());
    assert_eq!(source.read_into(&mut buf).await.unwrap(), 0);
    assert_eq!(&buf[..], &p[..]);
    assert_eq!(
        server_frame(&mut client).await,
        (CLOSE, 1001u16.to_be_bytes().to_vec())
    );
    // Nothing follows: no data frame, no second close.
    sink.send_batch(&[Bytes::from(packet("late"))])
        .await
        .unwrap();
    sink.shutdown(None).await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn an_empty_close_gets_an_empty_close() {
    let (mut source, _sink, mut client) = pair_over_duplex();
    client.write_all(&frame(CLOSE, &[])).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(source.read_into(&mut buf).await.unwrap(), 0);
    assert_eq!(server_frame(&mut client).await, (CLOSE, vec![]));
}

/// Sends `wire`, expects `error` at once, and that nothing near the announced size was
/// allocated.
async fn refused(wire: Vec<u8>, error: FrameError) {
    let (mut source, _sink, mut client) = pair_over_duplex();
    client.write_all(&wire).await.unwrap();
    let mut buf = BytesMut::new();
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        source.read_into(&mut buf),
    )
    .await
    .expect("refused from the header, without waiting for the payload")
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(e.to_string(), error.to_string());
    assert!(buf.capacity() <= TcpSource::MAX_CHUNK);
    assert!(source.raw.capacity() <= TcpSource::MAX_CHUNK);
}

#[tokio::test]
async fn protocol_violations_are_refused_from_the_header() {
    let p = packet("x");
    let mut unmasked = frame(BIN, &p);
    unmasked[1] &= 0x7f;
    unmasked.drain(2..6);
    refused(unmasked, FrameError::Unmasked).await;
    for rsv in [0x40, 0x20, 0x10] {
        refused(frame(BIN | rsv, &p), FrameError::ReservedBits).await;
    }
    refused(frame(0x81, b"{}"), FrameError::Text).await;
    refused(frame(0x83, &p), FrameError::ReservedOpcode(3)).await;
    refused(frame(0x8b, &[]), FrameError::ReservedOpcode(0xb)).await;
    refused(frame(CONT_FIN, &p), FrameError::StrayContinuation).await;
    refused(
        [frame(BIN_MORE, &p), frame(BIN, &p)].concat(),
        FrameError::UnfinishedMessage,
    )
    .await;
    refused(frame(0x09, b"ping"), FrameError::FragmentedControl).await;
    refused(frame(CLOSE, &[3]), FrameError::BadClose).await;
    refused(
        frame(CLOSE, &1005u16.to_be_bytes()),
        FrameError::BadCloseCode(1005),
    )
    .await;
    refused(
        frame(CLOSE, &[0x03, 0xe8, 0xff, 0xfe]),
        FrameError::BadClose,
    )
    .await;
}

#[tokio::test]
async fn announced_sizes_are_refused_before_any_payload() {
    // A header announcing 2^62 bytes, with no payload behind it.
    let mut huge = vec![BIN, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&MASK);
    refused(
        huge,
        FrameError::FrameTooLarge {
            len: 1 << 62,
            max: MAX as u64,
        },
    )
    .await;
    // Just over the limit.
    let mut over = vec![BIN, 0x80 | 126];
    over.extend_from_slice(&(MAX as u16 + 1).to_be_bytes());
    over.extend_from_slice(&MASK);
    refused(
        over,
        FrameError::FrameTooLarge {
            len: MAX as u64 + 1,
            max: MAX as u64,
        },
    )
    .await;
    // A fragmented message adding up to more than the limit: refused at the second
    // header, after the first frame's payload was delivered.
    let half = vec![0u8; MAX / 2 + 1];
    let mut parts = [frame(BIN_MORE, &half), frame(CONT, &half)].concat();
    parts.truncate(parts.len() - half.len()); // the second header is enough
    let (mut source, _sink, mut client) = pair_over_duplex();
    client.write_all(&parts).await.unwrap();
    let mut buf = BytesMut::new();
    let e = loop {
        match source.read_into(&mut buf).await {
            Ok(n) => assert!(n > 0 && buf.len() <= half.len()),
            Err(e) => break e,
        }
    };
    let error = FrameError::MessageTooLarge { max: MAX as u64 };
    assert_eq!(e.to_string(), error.to_string());
    // A control frame over 125 bytes, announced and not sent.
    let mut ping = vec![PING, 0x80 | 126];
    ping.extend_from_slice(&126u16.to_be_bytes());
    ping.extend_from_slice(&MASK);
    refused(ping, FrameError::ControlTooLong(126)).await;
}

#[tokio::test]
async fn a_batch_is_one_unmasked_binary_frame() {
    for sizes in [&[3usize, 5][..], &[100, 100], &[40_000, 40_000, 1]] {
        let (_source, mut sink, mut client) = pair_over_duplex();
        let batch: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect();
        sink.send_batch(&batch).await.unwrap();
        let (first, payload) = server_frame(&mut client).await;
        assert_eq!(first, BIN);
        assert_eq!(payload, batch.concat());
    }
}

#[tokio::test]
async fn a_small_frame_written_in_pieces_arrives_whole() {
    // A 7-byte pipe: the stack-assembled small frame goes out in several partial writes,
    // the rest through the vectored path.
    let (server, mut client) = tokio::io::duplex(7);
    let (r, w) = tokio::io::split(server);
    let (_source, mut sink) = pair(r, w, BytesMut::new(), MAX);
    let batch = [Bytes::from(vec![1u8; 30]), Bytes::from(vec![2u8; 90])];
    let reader = tokio::spawn(async move {
        let frame = server_frame(&mut client).await;
        (frame, client)
    });
    sink.send_batch(&batch).await.unwrap();
    let ((first, payload), _client) = reader.await.unwrap();
    assert_eq!(first, BIN);
    assert_eq!(payload, batch.concat());
}

#[tokio::test]
async fn a_frame_cut_short_is_never_followed() {
    let (server, mut client) = tokio::io::duplex(16);
    let (r, w) = tokio::io::split(server);
    let (_source, mut sink) = pair(r, w, BytesMut::new(), MAX);
    let big = Bytes::from(vec![7u8; 100]);
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        sink.send_batch(std::slice::from_ref(&big)),
    )
    .await;
    assert!(cut.is_err(), "the duplex holds 16 bytes");
    let e = sink.send_batch(&[Bytes::from(packet("next"))]).await;
    assert_eq!(e.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    assert!(sink.shutdown(None).await.is_err());
    let mut first = [0u8; 16];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first[..4], &[BIN, 100, 7, 7]);
}

#[tokio::test]
async fn shutdown_sends_a_close_frame() {
    let (_source, mut sink, mut client) = pair_over_duplex();
    sink.shutdown(None).await.unwrap();
    assert_eq!(
        server_frame(&mut client).await,
        (CLOSE, 1000u16.to_be_bytes().to_vec())
    );
    assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);

    let (_source, mut sink, mut client) = pair_over_duplex();
    let reason = "é".repeat(100); // 200 bytes: cut to 122, the last whole char
    sink.shutdown(Some(reason.clone())).await.unwrap();
    let (first, payload) = server_frame(&mut client).await;
    assert_eq!(first, CLOSE);
    assert_eq!(&payload[..2], &1002u16.to_be_bytes());
    assert_eq!(payload.len(), 2 + 122);
    assert!(reason.starts_with(std::str::from_utf8(&payload[2..]).unwrap()));
}

#[tokio::test]
async fn an_idle_connection_holds_no_read_buffer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (r, w) = server.into_halves();
    let (mut source, _sink) = pair(r, w, BytesMut::new(), MAX);
    let p = packet("hello");
    client.write_all(&frame(BIN, &p)).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(source.read_into(&mut buf).await.unwrap(), p.len());
    assert_eq!(decode_all(&mut buf).len(), 1);
    // Waiting for the next frame: neither buffer is held.
    let idle = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        source.read_into(&mut buf),
    )
    .await;
    assert!(idle.is_err());
    assert_eq!((buf.capacity(), source.raw.capacity()), (0, 0));
}

#[test]
fn payload_is_unmasked_where_it_lies() {
    let (p1, p2) = (packet("one"), packet("two"));
    let mut raw = BytesMut::from(&[frame(BIN, &p1), frame(BIN, &p2)].concat()[..]);
    let start = raw.as_ptr() as usize;
    let pass = FrameReader::new(MAX).parse(&mut raw).unwrap();
    // The first payload stays put (after its 6-byte header); the second joins it.
    assert_eq!(pass.data.as_ptr() as usize, start + 6);
    assert_eq!(&pass.data[..], &[p1, p2].concat()[..]);
    assert!(raw.is_empty());
    // Handed to an empty packet buffer, it is not copied either.
    let mut buf = BytesMut::new();
    let at = pass.data.as_ptr();
    buf.unsplit(pass.data);
    assert_eq!(buf.as_ptr(), at);
}

#[test]
fn unmasking_from_any_phase() {
    let data: Vec<u8> = (0..=40).collect();
    for phase in 0..4 {
        let mut d = data.clone();
        unmask(&mut d, MASK, phase);
        for (i, (a, b)) in d.iter().zip(&data).enumerate() {
            assert_eq!(*a, b ^ MASK[(phase + i) % 4]);
        }
    }
}
