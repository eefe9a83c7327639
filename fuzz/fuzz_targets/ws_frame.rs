//! The WebSocket frame reader (`ws/frame.rs`, sans-IO): client frames in, unmasked payload
//! and control answers out.
//!
//! Input: `[limit selector][split seed][client bytes …]`. The bytes are parsed twice with the
//! same limit: in one buffer, and arriving in the chunks the split seed picks; after each
//! arrival the reader is run until a pass yields nothing (as `WsSource` does), and a close
//! ends the connection.
//!
//! Checks, beyond "no panic":
//! - a pass never grows the buffer (the reader reserves nothing, whatever a header announces),
//!   and once a pass yields nothing at most one incomplete control frame is left (14 + 125
//!   bytes: tungstenite accepts a control frame's length in the 64-bit form);
//! - the split parse yields the same pings and close, at the same places in the payload
//!   stream, the same payload bytes (unmasking across chunk boundaries), and the same error,
//!   as the whole one; on an error, the whole parse's payload is a prefix of the split one's
//!   (a pass that fails drops what it unmasked);
//! - ping payloads are at most 125 bytes; the stream ends at a frame boundary the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nano_fuzz::{frame_run as run, Splits};

use nano_fuzz::WS_LIMITS as LIMITS;

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*limit) % LIMITS.len()];
    let whole = run(limit, stream, std::iter::once(stream.len()));
    let split = run(limit, stream, Splits::new(*seed, stream.len()));

    assert_eq!(split.error, whole.error, "split parse ended differently");
    assert_eq!(
        split.answers, whole.answers,
        "split parse answered differently"
    );
    assert_eq!(split.closed, whole.closed);
    if whole.error.is_some() {
        assert!(
            split.data.starts_with(&whole.data),
            "payload differs before the error"
        );
    } else {
        assert_eq!(split.data, whole.data, "split parse unmasked differently");
        if !whole.closed {
            assert_eq!((split.left, split.boundary), (whole.left, whole.boundary));
        }
    }
});
