//! The packets a resumable session keeps, copied into one byte ring per session: keeping a
//! packet costs a copy into memory the session already holds, never an allocation, a shared
//! handle on the packet or a late free (what made keeping `Bytes` handles slow: every one
//! pinned its own allocation until it left the window, hundreds per session).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Packets, oldest first, as one run of bytes and their lengths.
#[derive(Debug, Default)]
pub(crate) struct Window {
    bytes: VecDeque<u8>,
    lens: VecDeque<u32>,
}

impl Window {
    /// Packets kept.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Their bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Keeps a copy of `packet`, newest.
    pub fn push(&mut self, packet: &[u8]) {
        self.bytes.extend(packet);
        self.lens
            .push_back(u32::try_from(packet.len()).unwrap_or(u32::MAX));
    }

    /// Forgets the oldest packet.
    pub fn pop_front(&mut self) {
        if let Some(n) = self.lens.pop_front() {
            self.bytes.drain(..n as usize);
        }
    }

    /// Forgets the newest packet.
    pub fn pop_back(&mut self) {
        if let Some(n) = self.lens.pop_back() {
            self.bytes.truncate(self.bytes.len() - n as usize);
        }
    }

    /// Every packet kept, oldest first, as new packets.
    pub fn packets(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut at = 0usize;
        self.lens.iter().map(move |&n| {
            let n = n as usize;
            let mut p = BytesMut::with_capacity(n);
            p.extend(self.bytes.range(at..at + n).copied());
            at += n;
            p.freeze()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_back_as_they_went_in_across_the_ring_wrap() {
        let mut w = Window::default();
        for round in 0u8..50 {
            w.push(&[round; 7]);
            w.push(&[round, round.wrapping_add(1)]);
            if w.len() > 5 {
                w.pop_front();
                w.pop_front();
            }
        }
        let got: Vec<Bytes> = w.packets().collect();
        assert_eq!(got.len(), w.len());
        assert_eq!(w.bytes(), got.iter().map(Bytes::len).sum::<usize>());
        assert_eq!(&got[got.len() - 1][..], &[49, 50]);
        assert_eq!(&got[got.len() - 2][..], &[49; 7]);
        w.pop_back();
        assert_eq!(&w.packets().last().unwrap()[..], &[49; 7]);
    }
}
