//! The admin listener ([`App::admin`](crate::App::admin)): on an address of its own, never a
//! client port, it serves
//!
//! - `/metrics`: every metric family in the Prometheus (OpenMetrics) text format;
//! - `/debug/nano/node`: the monitor page, a person's view of the node (embedded, no CDN);
//! - `/debug/nano/node.json`: the same data for tools.
//!
//! Plain HTTP/1.1, one request per connection, a bounded number of connections at a time,
//! each bounded in time: an operator's tool, not a web server.

pub(crate) mod metrics;
mod node;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nano_core::Serializer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ctx::ServerCtx;
use crate::http::{self, HttpRequest, HttpResponse, HttpSide};
pub(crate) use node::NodeFacts;

/// Admin connections served at once; more wait in the listen backlog.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// The longest an admin connection may take, head to last byte.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The monitor page.
const PAGE: &str = include_str!("page.html");

/// The content type of `/metrics` (prometheus-client writes OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until `stop`.
pub(crate) async fn serve<S: Serializer>(
    listener: TcpListener,
    ctx: Arc<ServerCtx<S>>,
    facts: Arc<NodeFacts>,
    stop: CancellationToken,
) {
    let handler: http::HttpHandler = {
        let ctx = ctx.clone();
        Arc::new(move |req: &HttpRequest| Some(answer(&ctx, &facts, req)))
    };
    let side = Arc::new(HttpSide {
        // Never matches a path: the admin port upgrades nothing.
        ws_path: String::new(),
        allowed_origins: None,
        handlers: vec![handler],
        max_ws_payload: 0,
    });
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let side = side.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(ADMIN_TIMEOUT, http::accept(stream, &side)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "admin request failed"),
                Err(_) => tracing::debug!(%remote, "admin request timed out"),
            }
            drop(permit);
        });
    }
}

fn answer<S: Serializer>(ctx: &ServerCtx<S>, facts: &NodeFacts, req: &HttpRequest) -> HttpResponse {
    if req.method != "GET" && req.method != "HEAD" {
        return HttpResponse::plain(405, "method not allowed");
    }
    let path = req.path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => match ctx.render_metrics() {
            Some(text) => HttpResponse::ok(OPENMETRICS, text),
            None => HttpResponse::plain(404, "metrics are off"),
        },
        "/debug/nano/node" => HttpResponse::ok("text/html; charset=utf-8", PAGE),
        "/debug/nano/node.json" => {
            let body = node::node_json(ctx, facts).to_string();
            let mut resp = HttpResponse::ok("application/json", body);
            resp.headers
                .push(("Cache-Control".into(), "no-store".into()));
            resp
        }
        "/" | "/debug/nano" | "/debug/nano/" => HttpResponse::redirect("/debug/nano/node"),
        _ => HttpResponse::plain(404, "not found"),
    }
}

/// Binds the admin address; its errors name it.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin listener on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
