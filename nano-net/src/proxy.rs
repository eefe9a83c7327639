//! PROXY protocol (HAProxy's spec, v1 text and v2 binary) on the listeners that opt in: the
//! header a load balancer sends first, naming the client it accepted.
//!
//! The header is framed here, strictly and within fixed bounds (v1: at most 107 bytes, up to
//! its `\n`; v2: the 16-byte fixed part and the length it announces, at most
//! [`V2_MAX_BODY`]); its fields are parsed by the `ppp` crate. The socket is peeked first and
//! only the header's own bytes are consumed, so whatever follows it (a TLS ClientHello, an
//! HTTP request, a nano handshake) stays in the socket for the next layer, untouched: the TLS,
//! HTTP and agent paths run on the same `TcpStream` as on a listener without PROXY protocol.
//!
//! | header | address used |
//! |---|---|
//! | v1 `TCP4` / `TCP6`, v2 `PROXY` over IPv4 / IPv6 (stream) | the source address and port |
//! | v1 `UNKNOWN`, v2 `LOCAL`, v2 `PROXY` with an unspecified or UNIX family | the real peer's |
//! | anything else (no header, bad signature, too long, malformed fields, v2 datagram) | none: the connection is closed |

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header, `\r\n` included (the spec's bound).
pub(crate) const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family/protocol, length.
const V2_FIXED: usize = 16;
/// The most a v2 header may announce after its fixed part (addresses and TLVs). Addresses take
/// at most 216 bytes (UNIX); what load balancers add as TLVs (ALPN, authority, unique id, a
/// few AWS/GCP/Azure ids) fits easily. More is refused.
pub(crate) const V2_MAX_BODY: usize = 1024;
/// What the framing may hold at most.
const MAX_HEADER: usize = V2_FIXED + V2_MAX_BODY;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("closed before the PROXY header was complete")]
    Closed,
    #[error("no PROXY header (first byte {0:#04x})")]
    Missing(u8),
    #[error("PROXY v1 header without its \\r\\n within 107 bytes")]
    V1TooLong,
    #[error("PROXY v2 header announces {0} bytes after its fixed part (at most 1024 accepted)")]
    V2TooLong(usize),
    #[error("bad PROXY v1 prefix")]
    V1Prefix,
    #[error("bad PROXY v2 signature")]
    V2Signature,
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    #[error("malformed PROXY v2 header: {0}")]
    V2(String),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// How far a header goes, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// More bytes are needed; all of those seen are the header's.
    NeedMore,
    /// A v1 header of this many bytes (up to and including its `\n`).
    V1(usize),
    /// A v2 header of this many bytes (fixed part and body).
    V2(usize),
}

/// Frames a header from its first bytes (sans-IO). Refuses as early as the bytes allow.
pub(crate) fn frame(buf: &[u8]) -> Result<Frame, ProxyError> {
    let Some(&first) = buf.first() else {
        return Ok(Frame::NeedMore);
    };
    match first {
        b'\r' => {
            let n = buf.len().min(V2_SIG.len());
            if buf[..n] != V2_SIG[..n] {
                return Err(ProxyError::V2Signature);
            }
            if buf.len() < V2_FIXED {
                return Ok(Frame::NeedMore);
            }
            let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > V2_MAX_BODY {
                return Err(ProxyError::V2TooLong(len));
            }
            if buf.len() >= V2_FIXED + len {
                Ok(Frame::V2(V2_FIXED + len))
            } else {
                Ok(Frame::NeedMore)
            }
        }
        b'P' => {
            const PREFIX: &[u8] = b"PROXY ";
            let n = buf.len().min(PREFIX.len());
            if buf[..n] != PREFIX[..n] {
                return Err(ProxyError::V1Prefix);
            }
            let window = &buf[..buf.len().min(V1_MAX)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => Ok(Frame::V1(i + 1)),
                None if buf.len() >= V1_MAX => Err(ProxyError::V1TooLong),
                None => Ok(Frame::NeedMore),
            }
        }
        other => Err(ProxyError::Missing(other)),
    }
}

/// The client a complete header names: `Some(source)`, or `None` for "use the real peer"
/// (v1 `UNKNOWN`, v2 `LOCAL`, v2 without an IP family).
pub(crate) fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    match frame(header)? {
        Frame::V1(n) if n == header.len() => parse_v1(header),
        Frame::V2(n) if n == header.len() => parse_v2(header),
        _ => Err(ProxyError::V1("incomplete header".into())),
    }
}

fn parse_v1(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v1::{Addresses, Header};
    let parsed = Header::try_from(header).map_err(|e| ProxyError::V1(e.to_string()))?;
    // ppp parses up to the first `\r`; it must be the one before our `\n`.
    if parsed.header.len() != header.len() {
        return Err(ProxyError::V1("stray bytes before the line end".into()));
    }
    Ok(match parsed.addresses {
        Addresses::Unknown => None,
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
    })
}

fn parse_v2(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::v2::{Addresses, Command, Header, Protocol};
    let parsed = Header::try_from(header).map_err(|e| ProxyError::V2(e.to_string()))?;
    // TLVs are not used, but must be well formed (ppp checks them as they are iterated).
    if let Some(Err(e)) = parsed.tlvs().find(Result::is_err) {
        return Err(ProxyError::V2(e.to_string()));
    }
    if parsed.command == Command::Local {
        return Ok(None); // health checks and the like: the balancer speaks for itself
    }
    let ip = matches!(parsed.addresses, Addresses::IPv4(_) | Addresses::IPv6(_));
    if ip && parsed.protocol == Protocol::Datagram {
        return Err(ProxyError::V2("datagram addresses on a stream".into()));
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

/// Reads the PROXY header off `stream` and returns the client's address (`peer` when the
/// header names none). Only the header's bytes are consumed: each round peeks at what has
/// arrived and reads exactly the part of it that is still header. The caller bounds the time.
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    // On the heap, and only for the header's lifetime: it is not part of the connection's
    // future once the header is read.
    let mut buf = vec![0u8; MAX_HEADER].into_boxed_slice();
    let mut have = 0;
    loop {
        let peeked = stream.peek(&mut buf[have..]).await?;
        if peeked == 0 {
            return Err(ProxyError::Closed);
        }
        let take = match frame(&buf[..have + peeked])? {
            Frame::NeedMore => peeked,
            Frame::V1(total) | Frame::V2(total) => total - have,
        };
        stream.read_exact(&mut buf[have..have + take]).await?;
        have += take;
        if frame(&buf[..have])? != Frame::NeedMore {
            return Ok(parse(&buf[..have])?.unwrap_or(peer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut body = src.to_vec();
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        v2(0x1, 0x11, &body)
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 3250\r\n";
        assert_eq!(frame(h).unwrap(), Frame::V1(h.len()));
        assert_eq!(
            parse(h).unwrap(),
            Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 51234)))
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 3250\r\n";
        let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(parse(h).unwrap(), Some(SocketAddr::from((ip, 40000))));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), None);
        let h = b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n";
        assert_eq!(parse(h).unwrap(), None);
    }

    #[test]
    fn v1_is_framed_at_its_line_end_only() {
        let full = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 3250\r\n\x01\x00\x00\x02{}";
        for cut in 0..42 {
            assert_eq!(frame(&full[..cut]).unwrap(), Frame::NeedMore, "cut {cut}");
        }
        assert_eq!(frame(full).unwrap(), Frame::V1(42));
    }

    #[test]
    fn v1_refusals() {
        assert!(matches!(
            frame(b"POST / HTTP/1.1"),
            Err(ProxyError::V1Prefix)
        ));
        assert!(matches!(frame(b"PROXX"), Err(ProxyError::V1Prefix)));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert!(matches!(frame(&long), Err(ProxyError::V1TooLong)));
        // A line end past 107 bytes is too late.
        let late = [long.as_slice(), b"\r\n"].concat();
        assert!(matches!(frame(&late), Err(ProxyError::V1TooLong)));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n"[..],
            b"PROXY TCP4 192.0.2.777 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 99999\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n",
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
            b"PROXY TCP4 192.0.2.7\r10.0.0.1 1 2\r\n",
            b"PROXY \xff\xfe\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2 extra\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v2_proxy_local_and_families() {
        let h = v2_tcp4([198, 51, 100, 9], 6000);
        assert_eq!(frame(&h).unwrap(), Frame::V2(28));
        assert_eq!(
            parse(&h).unwrap(),
            Some(SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9), 6000)))
        );
        let src: Ipv6Addr = "2001:db8::9".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&7000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(0x1, 0x21, &body);
        assert_eq!(parse(&h).unwrap(), Some(SocketAddr::from((src, 7000))));
        // LOCAL, with or without addresses: the real peer.
        assert_eq!(parse(&v2(0x0, 0x00, &[])).unwrap(), None);
        let mut local = v2_tcp4([1, 2, 3, 4], 5);
        local[12] = 0x20;
        assert_eq!(parse(&local).unwrap(), None);
        // PROXY over an unspecified family: the real peer.
        assert_eq!(parse(&v2(0x1, 0x00, &[])).unwrap(), None);
        // TLVs after the addresses are fine (a PP2_TYPE_AUTHORITY here).
        let mut body = h[16..].to_vec();
        body.extend_from_slice(&[0x02, 0x00, 0x04, b'g', b'a', b'm', b'e']);
        assert_eq!(
            parse(&v2(0x1, 0x21, &body)).unwrap(),
            Some(SocketAddr::from((src, 7000)))
        );
    }

    #[test]
    fn v2_framing_and_refusals() {
        let h = v2_tcp4([198, 51, 100, 9], 6000);
        for cut in 0..h.len() {
            assert_eq!(frame(&h[..cut]).unwrap(), Frame::NeedMore, "cut {cut}");
        }
        let mut sig = h.clone();
        sig[5] = b'X';
        assert!(matches!(frame(&sig[..6]), Err(ProxyError::V2Signature)));
        // An oversized length is refused from the fixed part alone.
        let mut big = h[..16].to_vec();
        big[14..16].copy_from_slice(&1025u16.to_be_bytes());
        assert!(matches!(frame(&big), Err(ProxyError::V2TooLong(1025))));
        let ok = v2(0x1, 0x11, &[0; 1024][..]);
        assert!(matches!(frame(&ok[..16]), Ok(Frame::NeedMore)));
        for bad in [
            v2(0x1, 0x11, &[1, 2, 3]), // shorter than IPv4 addresses
            v2(0x2, 0x11, &h[16..]),   // unknown command
            v2(0x1, 0x41, &h[16..]),   // unknown family
            v2(0x1, 0x12, &h[16..]),   // datagram
            v2(
                0x1,
                0x11,
                &[&h[16..], &[0x02, 0x00, 0x09, b'x'][..]].concat(),
            ), // short TLV
            {
                let mut v = h.clone();
                v[12] = 0x11; // version 1 in a binary header
                v
            },
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn anything_else_is_a_missing_header() {
        // A nano handshake packet, a TLS ClientHello, an HTTP GET.
        for first in [
            &b"\x01\x00\x00\x02{}"[..],
            b"\x16\x03\x01",
            b"GET / HTTP/1.1",
        ] {
            assert!(matches!(frame(first), Err(ProxyError::Missing(_))));
        }
    }

    /// Reads a header that arrives in two parts (the server is shown to have consumed the
    /// first and to be waiting before the second is sent), followed in the second write by
    /// the next layer's bytes, which must stay in the socket.
    async fn split_read(header: Vec<u8>, cut: usize) -> SocketAddr {
        use std::future::{poll_fn, Future};
        use std::task::Poll;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        client.write_all(&header[..cut]).await.unwrap();
        // Until the first part is in the server's socket.
        let mut probe = vec![0u8; cut];
        while server.peek(&mut probe).await.unwrap() < cut {}
        let addr = {
            let mut reading = std::pin::pin!(read_header(&mut server, peer));
            let first = poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "the first part alone is not a header");
            client
                .write_all(&[&header[cut..], b"after"].concat())
                .await
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), reading)
                .await
                .unwrap()
                .unwrap()
        };
        let mut rest = [0u8; 5];
        let read = server.read_exact(&mut rest);
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("the bytes after the header are in the socket")
            .unwrap();
        assert_eq!(
            &rest, b"after",
            "the bytes after the header stay in the socket"
        );
        addr
    }

    #[tokio::test]
    async fn read_header_takes_the_header_and_nothing_more_across_reads() {
        let src = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 9), 6000));
        for cut in [1, 5, 15, 16, 20] {
            assert_eq!(split_read(v2_tcp4([198, 51, 100, 9], 6000), cut).await, src);
        }
        let v1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 6000 3250\r\n".to_vec();
        for cut in [1, 6, 20, v1.len() - 1] {
            assert_eq!(split_read(v1.clone(), cut).await, src);
        }
    }
}
