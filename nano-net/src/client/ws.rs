//! The WebSocket transport: URL parsing, the HTTP upgrade, and packets carried in binary
//! frames.
//!
//! Outgoing: each write batch (one or more whole packets) is one binary frame. Incoming:
//! binary frames are appended to one byte buffer, so a frame may hold several packets and a
//! packet may be split across frames. Text frames are a protocol error; pings are answered
//! by tungstenite; a close frame ends the stream.

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::conn::{BoxIo, ReadHalf, WriteHalf};
use super::ClientError;

/// A WebSocket over a (possibly TLS) byte stream.
pub(crate) type WsStream = WebSocketStream<BoxIo>;
/// Receiving half of a [`WsStream`].
pub(crate) type WsRead = SplitStream<WsStream>;
/// Sending half of a [`WsStream`].
pub(crate) type WsWrite = SplitSink<WsStream, WsMessage>;

/// Where a `ws://` / `wss://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsTarget {
    /// `wss`: TLS under the WebSocket.
    pub(crate) tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub(crate) host: String,
    /// Port (default 80 for `ws`, 443 for `wss`).
    pub(crate) port: u16,
}

/// Parses a `ws://host[:port]/path` or `wss://…` URL.
pub(crate) fn parse_url(url: &str) -> Result<WsTarget, ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::WebSocket(format!("invalid URL {url:?}: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(ClientError::WebSocket(format!(
                "URL {url:?} must start with ws:// or wss://"
            )))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ClientError::WebSocket(format!("URL {url:?} has no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(WsTarget { tls, host, port })
}

/// Performs the HTTP upgrade for `url` over `stream` and splits the WebSocket.
pub(crate) async fn upgrade(
    url: &str,
    stream: BoxIo,
) -> Result<(ReadHalf, WriteHalf), ClientError> {
    let (ws, _response) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| ClientError::WebSocket(format!("upgrade failed: {e}")))?;
    let (sink, stream) = ws.split();
    Ok((ReadHalf::Ws(stream), WriteHalf::Ws(sink)))
}

/// Appends the next binary frame's bytes to `buf`; `Ok(false)` after a close frame or the
/// end of the stream. Cancel-safe.
pub(crate) async fn read_more(r: &mut WsRead, buf: &mut BytesMut) -> Result<bool, ClientError> {
    loop {
        match r.next().await {
            None | Some(Ok(WsMessage::Close(_))) => return Ok(false),
            Some(Ok(WsMessage::Binary(data))) => {
                if data.is_empty() {
                    continue;
                }
                buf.extend_from_slice(&data);
                return Ok(true);
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
            Some(Ok(WsMessage::Text(_))) => {
                return Err(ClientError::Protocol(
                    "text frame from the server (packets travel in binary frames)".into(),
                ))
            }
            Some(Err(e)) => return Err(ClientError::WebSocket(e.to_string())),
        }
    }
}

/// Sends `bytes` (whole packets) as one binary frame.
pub(crate) async fn write(w: &mut WsWrite, bytes: &[u8]) -> Result<(), ClientError> {
    w.send(WsMessage::Binary(bytes::Bytes::copy_from_slice(bytes)))
        .await
        .map_err(|e| ClientError::WebSocket(e.to_string()))
}

/// Sends a close frame.
pub(crate) async fn shutdown(w: &mut WsWrite) {
    let _ = w.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:3250/nano").unwrap(),
            WsTarget {
                tls: false,
                host: "127.0.0.1".into(),
                port: 3250
            }
        );
        assert_eq!(
            parse_url("wss://localhost/").unwrap(),
            WsTarget {
                tls: true,
                host: "localhost".into(),
                port: 443
            }
        );
        assert_eq!(parse_url("ws://[::1]:80/x").unwrap().host, "::1");
        assert!(matches!(
            parse_url("http://localhost/"),
            Err(ClientError::WebSocket(_))
        ));
        assert!(matches!(
            parse_url("not a url"),
            Err(ClientError::WebSocket(_))
        ));
    }
}
