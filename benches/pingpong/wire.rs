//! Wire helpers shared by the load client and the raw baseline server: the handshake bodies,
//! the Ping/Pong payloads and a minimal WebSocket framing (RFC 6455, binary frames only).

use bytes::{Buf, BufMut, BytesMut};

/// The handshake a bench client sends.
pub const CLIENT_HANDSHAKE: &[u8] = br#"{"sys":{"type":"rust-bench","version":"0.1.0"},"user":{}}"#;

/// Routes of the pingpong component.
pub const ROUTE_ECHO: &str = "TestHandler.Echo";
pub const ROUTE_PING: &str = "TestHandler.Ping";
pub const ROUTE_PONG: &str = "pong";

/// WebSocket opcodes used here.
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One parsed WebSocket frame header.
#[derive(Debug, Clone, Copy)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Header length in bytes (including the mask key).
    pub head_len: usize,
    pub payload_len: usize,
}

/// Parses a frame header at the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_frame_head(buf: &[u8], max_payload: usize) -> Result<Option<FrameHead>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err("reserved websocket bits set".into());
    }
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let len7 = usize::from(buf[1] & 0x7F);
    let (len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l > max_payload as u64 {
                return Err(format!("websocket frame of {l} bytes"));
            }
            (l as usize, 10)
        }
        n => (n, 2),
    };
    if len > max_payload {
        return Err(format!("websocket frame of {len} bytes"));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        head_len: pos,
        payload_len: len,
    }))
}

/// Appends a frame (FIN set) with `payload`; masked with `mask` when given (client side).
pub fn put_frame(dst: &mut BytesMut, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    dst.reserve(14 + payload.len());
    dst.put_u8(0x80 | opcode);
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => dst.put_u8(mbit | n as u8),
        n if n <= 0xFFFF => {
            dst.put_u8(mbit | 126);
            dst.put_u16(n as u16);
        }
        n => {
            dst.put_u8(mbit | 127);
            dst.put_u64(n as u64);
        }
    }
    match mask {
        None => dst.extend_from_slice(payload),
        Some(m) => {
            dst.extend_from_slice(&m);
            let start = dst.len();
            dst.extend_from_slice(payload);
            apply_mask(&mut dst[start..], m);
        }
    }
}

/// XORs `data` with the 4-byte mask (its own inverse).
#[inline]
pub fn apply_mask(data: &mut [u8], m: [u8; 4]) {
    if m == [0; 4] {
        return;
    }
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// What [`take_frames`] found besides data.
#[derive(Debug, Default)]
pub struct Control {
    /// A close frame arrived.
    pub close: bool,
    /// Payloads of pings to answer with pongs.
    pub pings: Vec<Vec<u8>>,
}

/// Moves the payload of every complete data frame at the front of `raw` into `stream`
/// (unmasking it), handling control frames. Text frames are an error (not nano).
pub fn take_frames(
    raw: &mut BytesMut,
    stream: &mut BytesMut,
    max_payload: usize,
    ctl: &mut Control,
) -> Result<(), String> {
    while let Some(h) = parse_frame_head(raw, max_payload)? {
        if raw.len() < h.head_len + h.payload_len {
            raw.reserve(h.head_len + h.payload_len - raw.len());
            break;
        }
        raw.advance(h.head_len);
        let mut payload = raw.split_to(h.payload_len);
        if let Some(m) = h.mask {
            apply_mask(&mut payload, m);
        }
        match h.opcode {
            OP_BINARY | OP_CONT => stream.extend_from_slice(&payload),
            OP_CLOSE => ctl.close = true,
            OP_PING => ctl.pings.push(payload.to_vec()),
            OP_PONG => {}
            OP_TEXT => return Err("text frame: not part of the nano protocol".into()),
            other => return Err(format!("websocket opcode {other}")),
        }
        let _ = h.fin;
    }
    Ok(())
}

/// Finds the end of an HTTP head (`\r\n\r\n`); returns the head length.
pub fn http_head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The value of header `name` (case-insensitive) in an HTTP head.
pub fn http_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
