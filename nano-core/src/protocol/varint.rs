//! Unsigned LEB128 ("base-128 varint") as used for message ids.

use bytes::BufMut;

use super::MessageError;

/// The longest varint that can hold a u64: 10 bytes (9 × 7 bits + 1 bit).
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as an unsigned LEB128 varint (low 7 bits first, high bit = more).
///
/// # Examples
///
/// ```
/// use nano_core::protocol::encode_varint;
///
/// let mut out = Vec::new();
/// encode_varint(300, &mut out);
/// assert_eq!(out, [0xac, 0x02]);
/// ```
#[inline]
pub fn encode_varint(value: u64, dst: &mut impl BufMut) {
    if value < 0x80 {
        dst.put_u8(value as u8);
        return;
    }
    let mut tmp = [0u8; MAX_VARINT_LEN];
    let mut v = value;
    let mut n = 0;
    while v >= 0x80 {
        tmp[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    dst.put_slice(&tmp[..=n]);
}

/// Number of bytes [`encode_varint`] writes for `value` (1..=10).
///
/// # Examples
///
/// ```
/// use nano_core::protocol::varint_len;
///
/// assert_eq!(varint_len(0), 1);
/// assert_eq!(varint_len(300), 2);
/// assert_eq!(varint_len(u64::MAX), 10);
/// ```
#[inline]
#[must_use]
pub const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes an unsigned LEB128 varint from the start of `src`, returning the value and the
/// number of bytes it occupied. Non-minimal encodings (`80 00`) are accepted.
///
/// # Errors
///
/// - [`MessageError::Truncated`]`("varint")` if `src` ends before the last byte;
/// - [`MessageError::VarintTooLong`] if the varint runs past 10 bytes or its 10th byte
///   carries more than the one bit a u64 has left.
///
/// # Examples
///
/// ```
/// use nano_core::protocol::{decode_varint, MessageError};
///
/// assert_eq!(decode_varint(&[0xac, 0x02, 0xff]), Ok((300, 2)));
/// assert_eq!(decode_varint(&[0xac]), Err(MessageError::Truncated("varint")));
/// assert_eq!(decode_varint(&[0xff; 11]), Err(MessageError::VarintTooLong));
/// ```
#[inline]
pub fn decode_varint(src: &[u8]) -> Result<(u64, usize), MessageError> {
    match src.first() {
        Some(&b) if b < 0x80 => Ok((u64::from(b), 1)),
        Some(_) => decode_varint_slow(src),
        None => Err(MessageError::Truncated("varint")),
    }
}

/// Multi-byte case of [`decode_varint`], kept out of line so the 1-byte case inlines small.
#[inline(never)]
fn decode_varint_slow(src: &[u8]) -> Result<(u64, usize), MessageError> {
    let mut value = 0u64;
    for (i, &byte) in src.iter().take(MAX_VARINT_LEN).enumerate() {
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            // The 10th byte holds bit 63 only, and must be the last one.
            return Err(MessageError::VarintTooLong);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, i + 1));
        }
    }
    // Fewer than 10 bytes, all with the continuation bit.
    Err(MessageError::Truncated("varint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out);
        out
    }

    #[test]
    fn round_trips_edges() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) - 1,
                (1u64 << shift).wrapping_add(1),
            ] {
                let bytes = enc(v);
                assert_eq!(bytes.len(), varint_len(v), "len of {v}");
                assert_eq!(decode_varint(&bytes), Ok((v, bytes.len())), "value {v}");
            }
        }
        assert_eq!(enc(u64::MAX).len(), 10);
        assert_eq!(decode_varint(&enc(u64::MAX)), Ok((u64::MAX, 10)));
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(4_294_967_301), [0x85, 0x80, 0x80, 0x80, 0x10]);
    }

    #[test]
    fn rejects_overflow_and_truncation() {
        assert_eq!(decode_varint(&[]), Err(MessageError::Truncated("varint")));
        assert_eq!(
            decode_varint(&[0x80; 9]),
            Err(MessageError::Truncated("varint"))
        );
        // 10th byte may only be 0 or 1.
        let mut max = [0xff; 10];
        max[9] = 0x01;
        assert_eq!(decode_varint(&max), Ok((u64::MAX, 10)));
        max[9] = 0x02;
        assert_eq!(decode_varint(&max), Err(MessageError::VarintTooLong));
        max[9] = 0x81;
        assert_eq!(decode_varint(&max), Err(MessageError::VarintTooLong));
        assert_eq!(decode_varint(&[0xff; 12]), Err(MessageError::VarintTooLong));
        // Non-minimal but in range.
        assert_eq!(decode_varint(&[0x80, 0x00]), Ok((0, 2)));
    }
}
