//! `/debug/nano/node.json`: the node's options, route table, schedulers, sessions, stats and
//! extensions, as the monitor page and tools read them.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nano_core::Serializer;
use serde_json::{json, Map, Value};

use crate::ctx::ServerCtx;
use crate::server::Transport;

/// What the admin side knows of the server besides its context.
pub(crate) struct NodeFacts {
    /// The application's name (the binary's, unless told otherwise).
    pub name: String,
    pub listeners: Vec<(Transport, SocketAddr)>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn opt_secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(secs(d)))
}

/// The whole document.
pub(crate) fn node_json<S: Serializer>(ctx: &ServerCtx<S>, facts: &NodeFacts) -> Value {
    let engine = &ctx.engine;
    let config = &ctx.config;
    let options = json!({
        "heartbeat_s": opt_secs(config.heartbeat),
        "handshake_timeout_s": secs(config.handshake_timeout),
        "write_timeout_s": secs(config.write_timeout),
        "shutdown_timeout_s": secs(config.shutdown_timeout),
        "max_connections": config.max_connections,
        "send_queue": config.send_queue,
        "send_queue_bytes": config.send_queue_bytes,
        "on_full_queue": format!("{:?}", config.on_full_queue),
        "max_packet_size": engine.max_packet_size(),
        "max_handshake_size": config.max_handshake_size,
        "route_compression": engine.handshake_sys().contains_key("dict"),
        "allowed_origins": config.allowed_origins,
        "metrics": ctx.net_metrics.is_some(),
        "resume_grace_s": opt_secs(ctx.resumer.as_ref().map(|r| r.grace())),
    });

    let mut components: Vec<(String, String, Vec<Value>)> = Vec::new();
    for entry in engine.route_table() {
        let h = entry.handler;
        let route = json!({
            "route": h.route,
            "kind": h.kind(),
            "payload": h.payload_type,
            "response": h.response_type,
            "async": h.is_async,
            "deferred": h.deferred,
            "internal": h.internal,
            "code": engine.dictionary().code(h.route),
        });
        match components.last_mut() {
            Some((name, _, routes)) if name == entry.component => routes.push(route),
            _ => components.push((
                entry.component.to_owned(),
                entry.scheduler.to_owned(),
                vec![route],
            )),
        }
    }
    let schedulers: Vec<Value> = engine
        .scheduler_queues()
        .into_iter()
        .map(|(name, queued)| {
            let on: Vec<&str> = components
                .iter()
                .filter(|(_, s, _)| *s == name)
                .map(|(c, _, _)| c.as_str())
                .collect();
            json!({ "name": name, "queued": queued, "components": on })
        })
        .collect();
    let components: Vec<Value> = components
        .into_iter()
        .map(|(name, scheduler, routes)| {
            json!({ "name": name, "scheduler": scheduler, "routes": routes })
        })
        .collect();

    let mut conns = ctx.connections();
    conns.sort_by_key(|(s, _)| s.id());
    let sessions: Vec<Value> = conns
        .iter()
        .map(|(session, conn)| {
            let (open, idle) = conn.ages();
            json!({
                "id": session.id(),
                "uid": session.uid().as_deref(),
                "remote": conn.remote().to_string(),
                "transport": conn.transport().as_str(),
                "connected_at_ms": millis(conn.connected_at()),
                "connected_s": secs(open),
                "idle_s": secs(idle),
                "last_message_id": session.last_message_id(),
                "queue": conn.queue_len(),
            })
        })
        .collect();

    let mut suspended: Vec<(nano_core::Session<S>, (usize, usize))> = ctx
        .resumer
        .as_ref()
        .map(|r| r.suspended())
        .unwrap_or_default();
    suspended.sort_by_key(|(s, _)| s.id());
    let suspended: Vec<Value> = suspended
        .iter()
        .map(|(session, (held, held_bytes))| {
            json!({
                "id": session.id(),
                "uid": session.uid().as_deref(),
                "remote": session.remote_addr().map(|a| a.to_string()),
                "held": held,
                "held_bytes": held_bytes,
            })
        })
        .collect();

    let clients = ctx.clients_per_transport();
    let per_transport: Map<String, Value> = super::metrics::TRANSPORTS
        .iter()
        .map(|t| (t.as_str().to_owned(), json!(clients[t.index()])))
        .collect();
    let (groups, members) = nano_core::metrics::group_census();
    let mut stats = Map::new();
    stats.insert("connected_clients".into(), Value::Object(per_transport));
    stats.insert("sessions".into(), json!(sessions.len()));
    stats.insert("suspended_sessions".into(), json!(suspended.len()));
    if let Some(metrics) = engine.metrics() {
        stats.insert("requests_total".into(), json!(metrics.handled()));
    }
    if let Some(net) = &ctx.net_metrics {
        for (key, value) in net.totals() {
            stats.insert(key.into(), json!(value));
        }
    }
    stats.insert("groups".into(), json!(groups));
    stats.insert("group_members".into(), json!(members));

    let extensions: Vec<Value> = engine
        .extensions()
        .iter()
        .filter_map(|e| e.describe())
        .map(|(name, info)| json!({ "name": name, "info": info }))
        .collect();

    json!({
        "node": {
            "name": facts.name,
            "version": env!("CARGO_PKG_VERSION"),
            "serializer": S::NAME,
            "started_at_ms": millis(ctx.started_at),
            "uptime_s": secs(ctx.started.elapsed()),
            "listeners": facts.listeners.iter().map(|(t, a)| json!({
                "transport": t.as_str(),
                "addr": a.to_string(),
            })).collect::<Vec<_>>(),
            "options": options,
        },
        "components": components,
        "schedulers": schedulers,
        "sessions": sessions,
        "suspended": suspended,
        "stats": stats,
        "extensions": extensions,
    })
}
