//! The HTTP side of a WebSocket listener: the upgrade to WebSocket on the configured path
//! (with an origin check), and plain HTTP on the same port for pages and static files.

use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Component as PathComponent, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The largest HTTP request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A plain HTTP request (head only; bodies are not read).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path with the query string.
    pub path: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub body: Bytes,
    /// Extra headers (e.g. `Location`).
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// A 200 response.
    pub fn ok(content_type: &str, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status: 200,
            content_type: content_type.to_owned(),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text response with `status`.
    pub fn plain(status: u16, body: &'static str) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: Bytes::from_static(body.as_bytes()),
            headers: Vec::new(),
        }
    }

    /// A 301 redirect to `location`.
    pub fn redirect(location: &str) -> Self {
        HttpResponse {
            status: 301,
            content_type: "text/plain".to_owned(),
            body: Bytes::new(),
            headers: vec![("Location".to_owned(), location.to_owned())],
        }
    }
}

/// Answers plain HTTP requests on WebSocket ports (`None`: try the next handler, then 404). It
/// runs on tokio's blocking pool: it may block briefly (read a file), never a runtime worker.
pub type HttpHandler = Arc<dyn Fn(&HttpRequest) -> Option<HttpResponse> + Send + Sync>;

/// The largest file [`static_dir`] serves: it is read whole into memory (larger ones get a 500
/// and a warning; put big assets behind a real web server or CDN).
pub const MAX_STATIC_FILE: u64 = 64 * 1024 * 1024;

/// Serves files under `dir` for request paths starting with `prefix` (no `..` escapes), up to
/// [`MAX_STATIC_FILE`] bytes each. Handlers run on tokio's blocking pool, so its reads never
/// stall a runtime worker.
pub fn static_dir(prefix: &str, dir: impl Into<PathBuf>) -> HttpHandler {
    let prefix = prefix.to_owned();
    let dir = dir.into();
    Arc::new(move |req: &HttpRequest| {
        let path = req.path.split('?').next().unwrap_or("");
        let rest = path.strip_prefix(&prefix)?;
        let mut file = dir.clone();
        for part in std::path::Path::new(rest).components() {
            match part {
                PathComponent::Normal(p) => file.push(p),
                PathComponent::CurDir => {}
                _ => return None,
            }
        }
        if file.is_dir() {
            file.push("index.html");
        }
        let len = std::fs::metadata(&file).ok()?.len();
        if len > MAX_STATIC_FILE {
            tracing::warn!(file = %file.display(), len, "file too large to serve from memory");
            return Some(HttpResponse::plain(500, "file too large"));
        }
        let body = std::fs::read(&file).ok()?;
        Some(HttpResponse::ok(content_type(&file), body))
    })
}

/// Serves files embedded in the binary (`include_str!`/`include_bytes!`), keyed by URL path.
/// A path ending in `/` serves that directory's `index.html`; the directory without the
/// slash redirects to it.
///
/// # Examples
///
/// ```
/// let pages = nano_net::embedded(&[("/web/index.html", b"<h1>hi</h1>")]);
/// let req = nano_net::HttpRequest { method: "GET".into(), path: "/web/".into(), headers: vec![] };
/// assert_eq!(&pages(&req).unwrap().body[..], b"<h1>hi</h1>");
/// ```
pub fn embedded(files: &'static [(&'static str, &'static [u8])]) -> HttpHandler {
    Arc::new(move |req: &HttpRequest| {
        let path = req.path.split('?').next().unwrap_or("");
        let wanted = if path.ends_with('/') {
            format!("{path}index.html")
        } else if files
            .iter()
            .any(|(p, _)| p.strip_suffix("/index.html") == Some(path))
        {
            format!("{path}/index.html")
        } else {
            path.to_owned()
        };
        let (name, body) = files.iter().find(|(p, _)| *p == wanted)?;
        Some(HttpResponse::ok(
            content_type(std::path::Path::new(name)),
            Bytes::from_static(body),
        ))
    })
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// What arrived on a WebSocket port.
pub(crate) enum Accepted<S> {
    /// Upgraded: the stream, and the bytes read past the request head (the first WebSocket
    /// bytes, often none).
    WebSocket(S, BytesMut),
    /// Plain HTTP was answered, or the request was refused; nothing more to do.
    Done,
}

/// Settings of one WebSocket listener's HTTP side.
pub(crate) struct HttpSide {
    pub ws_path: String,
    pub allowed_origins: Option<Vec<String>>,
    pub handlers: Vec<HttpHandler>,
    /// The largest WebSocket frame payload, and fragmented message, accepted.
    pub max_ws_payload: usize,
}

/// Reads the request head and either upgrades to WebSocket or answers plain HTTP.
pub(crate) async fn accept<S>(mut stream: S, side: &HttpSide) -> io::Result<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Head::new();
    let (req, head_len) = loop {
        if head.buf.len() >= MAX_HEAD {
            respond(
                &mut stream,
                &HttpResponse::plain(431, "request head too large"),
                false,
            )
            .await?;
            return Ok(Accepted::Done);
        }
        if stream.read_buf(&mut head.buf).await? == 0 {
            return Ok(Accepted::Done);
        }
        match head.try_parse() {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(()) => {
                respond(&mut stream, &HttpResponse::plain(400, "bad request"), false).await?;
                return Ok(Accepted::Done);
            }
        }
    };
    let mut buf = head.buf;
    let is_upgrade = req
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let path = req.path.split('?').next().unwrap_or("");
    if is_upgrade && path == side.ws_path {
        // Browsers always send Origin, and the check exists to keep other sites' pages out. A
        // client without one is not a browser (the Rust client, pypomelo, a native app) and
        // could send any Origin it liked, so refusing it would protect nothing.
        if let (Some(allowed), Some(origin)) = (&side.allowed_origins, req.header("origin")) {
            if !allowed.iter().any(|a| a == origin) {
                tracing::info!(origin, "websocket origin refused");
                respond(
                    &mut stream,
                    &HttpResponse::plain(403, "origin not allowed"),
                    false,
                )
                .await?;
                return Ok(Accepted::Done);
            }
        }
        let Some(key) = req.header("sec-websocket-key") else {
            let resp = HttpResponse::plain(400, "missing Sec-WebSocket-Key");
            respond(&mut stream, &resp, false).await?;
            return Ok(Accepted::Done);
        };
        let accept = derive_accept_key(key.trim().as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        let leftover = if buf.len() > head_len {
            buf.split_off(head_len)
        } else {
            BytesMut::new() // frees the head's buffer
        };
        return Ok(Accepted::WebSocket(stream, leftover));
    }
    if side.handlers.is_empty() {
        respond(&mut stream, &HttpResponse::plain(404, "not found"), false).await?;
        return Ok(Accepted::Done);
    }
    // User code that may block (files read from disk, ...): on the blocking pool, never on a
    // runtime worker. A panic answers 500 and ends this connection only.
    let handlers = side.handlers.clone();
    let head_only = req.method == "HEAD";
    let path = req.path.clone();
    let answered = tokio::task::spawn_blocking(move || {
        for h in &handlers {
            match std::panic::catch_unwind(AssertUnwindSafe(|| h(&req))) {
                Ok(Some(resp)) => return Ok(Some(resp)),
                Ok(None) => {}
                Err(panic) => {
                    return Err(panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default())
                }
            }
        }
        Ok(None)
    })
    .await;
    match answered {
        Ok(Ok(Some(resp))) => {
            respond(&mut stream, &resp, head_only).await?;
            return Ok(Accepted::Done);
        }
        Ok(Ok(None)) => {}
        Ok(Err(message)) => {
            tracing::error!(%path, panic = %message, "http handler panicked");
            let resp = HttpResponse::plain(500, "internal server error");
            respond(&mut stream, &resp, false).await?;
            return Ok(Accepted::Done);
        }
        Err(e) => {
            tracing::debug!(%path, error = %e, "http handler not run (runtime shutting down)");
            let resp = HttpResponse::plain(503, "shutting down");
            respond(&mut stream, &resp, false).await?;
            return Ok(Accepted::Done);
        }
    }
    respond(&mut stream, &HttpResponse::plain(404, "not found"), false).await?;
    Ok(Accepted::Done)
}

/// A request head being read. It is parsed after the first read (so that what is not HTTP
/// at all is refused at once) and then only when the bytes that arrived since the last look
/// hold a blank line (`\n\n` or `\n\r\n`), the only way a head can end: a sender trickling
/// its head byte by byte costs one scan of each byte, not one parse of the whole head per read.
struct Head {
    buf: BytesMut,
    /// How far the blank-line search has looked.
    scanned: usize,
    /// Parse attempts so far.
    parses: usize,
}

impl Head {
    fn new() -> Self {
        Head {
            buf: BytesMut::with_capacity(1024),
            scanned: 0,
            parses: 0,
        }
    }

    /// Parses the head if it can be complete: `None` when more bytes are needed.
    fn try_parse(&mut self) -> Result<Option<(HttpRequest, usize)>, ()> {
        // A blank line may straddle the last look: go back over the bytes it can span.
        let from = self.scanned.saturating_sub(2);
        let ends = has_blank_line(&self.buf[from..]);
        self.scanned = self.buf.len();
        if self.parses > 0 && !ends {
            return Ok(None);
        }
        self.parses += 1;
        // Parsed without awaiting while the header array is alive, so it never becomes part
        // of the connection's future.
        parse_head(&self.buf)
    }
}

fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && bytes.get(i + 2) == Some(&b'\n')))
    })
}

/// A complete request head and its length, `None` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(HttpRequest, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            HttpRequest {
                method: parsed.method.unwrap_or("").to_owned(),
                path: parsed.path.unwrap_or("").to_owned(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: &HttpResponse,
    head_only: bool,
) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        if !k.contains(['\r', '\n']) && !v.contains(['\r', '\n']) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&resp.body).await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /nano HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_head_trickled_byte_by_byte_is_parsed_twice_not_once_per_byte() {
        let mut head = Head::new();
        for (i, &b) in GET.iter().enumerate() {
            head.buf.extend_from_slice(&[b]);
            match head.try_parse() {
                Ok(Some((req, len))) => {
                    assert_eq!(i + 1, GET.len(), "complete only at the end");
                    assert_eq!(len, GET.len());
                    assert_eq!(req.header("upgrade"), Some("websocket"));
                }
                Ok(None) => assert!(i + 1 < GET.len(), "the complete head was missed"),
                Err(()) => panic!("refused at byte {i}"),
            }
        }
        // Once after the first read, once when the blank line arrived.
        assert_eq!(head.parses, 2);
    }

    #[test]
    fn a_blank_line_split_across_reads_is_found() {
        for cut in GET.len() - 4..GET.len() {
            let mut head = Head::new();
            head.buf.extend_from_slice(&GET[..cut]);
            assert!(head.try_parse().unwrap().is_none());
            head.buf.extend_from_slice(&GET[cut..]);
            assert!(head.try_parse().unwrap().is_some(), "cut at {cut}");
        }
        // Bare line feeds end a head too.
        let mut head = Head::new();
        head.buf.extend_from_slice(b"GET / HTTP/1.1\nHost: x\n");
        assert!(head.try_parse().unwrap().is_none());
        head.buf.extend_from_slice(b"\n");
        assert!(head.try_parse().unwrap().is_some());
    }

    #[test]
    fn what_is_not_http_is_refused_on_the_first_read() {
        let mut head = Head::new();
        head.buf.extend_from_slice(b"\x16\x03\x01\x02\x00");
        assert!(head.try_parse().is_err());
    }

    #[test]
    fn blank_lines_are_recognised() {
        assert!(has_blank_line(b"a\r\n\r\n"));
        assert!(has_blank_line(b"\n\n"));
        assert!(has_blank_line(b"x\n\r\n"));
        assert!(!has_blank_line(b"a\r\nb\r\n"));
        assert!(!has_blank_line(b"\n\r"));
        assert!(!has_blank_line(b""));
    }
}
