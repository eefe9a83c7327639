//! `WsSource`, the WebSocket packet source the agent reads from: the frame reader behind
//! `read_into`, the pong and close echo it writes, and how it ends.
//!
//! Input: `[limit selector][split seed][client bytes …]`: the bytes arrive on an in-memory
//! stream in the chunks the split seed picks, then end of stream. The reference is the frame
//! reader run over the whole input (`nano_fuzz::frame_run`).
//!
//! Checks, beyond "no panic" and "no hang":
//! - `read_into` appends exactly the count it returns, never 0 bytes as data, and the bytes
//!   delivered are the reference's payload (a prefix of it when a frame is refused);
//! - it ends as the reference implies: `Ok(0)` after a close or at end of stream between
//!   frames, `UnexpectedEof` at end of stream inside a frame, `InvalidData` for a refused
//!   frame;
//! - what it writes is a pong with the same payload for each ping, then the close echo (with
//!   the peer's code), as unmasked final frames.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nano_fuzz::{block_on, frame_run, SharedStream, WS_LIMITS};
use nano_net::fuzzing::{Answer, WsSource};

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let limit = WS_LIMITS[usize::from(*limit) % WS_LIMITS.len()];
    let reference = frame_run(limit, stream, std::iter::once(stream.len()));

    let io = SharedStream::new(stream, *seed);
    let mut source = WsSource::new(io.clone(), BytesMut::new(), limit);
    let mut delivered = Vec::new();
    let mut buf = BytesMut::new();
    let ending = loop {
        // Every call reads at least one byte or ends: bounded by the input length.
        assert!(
            delivered.len() <= stream.len(),
            "delivered more than arrived"
        );
        let before = buf.len();
        match block_on(source.read_into(&mut buf)) {
            Ok(0) => {
                assert_eq!(buf.len(), before);
                break Ok(());
            }
            Ok(n) => {
                assert_eq!(buf.len(), before + n, "read_into miscounted");
                delivered.extend_from_slice(&buf.split());
            }
            Err(e) => break Err(e.kind()),
        }
    };

    if reference.error.is_some() {
        assert_eq!(ending, Err(std::io::ErrorKind::InvalidData));
        assert!(delivered.starts_with(&reference.data));
        return;
    }
    assert_eq!(
        delivered, reference.data,
        "delivered other bytes than the frames carry"
    );
    if reference.closed || (reference.left == 0 && reference.boundary) {
        assert_eq!(ending, Ok(()));
    } else {
        assert_eq!(ending, Err(std::io::ErrorKind::UnexpectedEof));
        return; // answers may still be queued: the connection is torn down
    }
    let mut expected = Vec::new();
    for (_, answer) in &reference.answers {
        match answer {
            Answer::Ping(payload) => {
                expected.extend_from_slice(&[0x8A, payload.len() as u8]);
                expected.extend_from_slice(payload);
            }
            Answer::Close(None) => expected.extend_from_slice(&[0x88, 0]),
            Answer::Close(Some(code)) => {
                expected.extend_from_slice(&[0x88, 2]);
                expected.extend_from_slice(&code.to_be_bytes());
            }
        }
    }
    assert_eq!(io.lock().written, expected, "wrong control frames written");
});
