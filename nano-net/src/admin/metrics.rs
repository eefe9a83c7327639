//! The transport's metric families: connected clients, sessions, messages and bytes, kicks,
//! disconnects and refused connections, registered next to the engine's.
//!
//! Per-message counters are resolved once per transport, so a connection's reader and writer
//! bump plain atomics; the gauges are read from the live sessions when the metrics are scraped.

use nano_core::metrics::prometheus_client::metrics::counter::Counter;
use nano_core::metrics::prometheus_client::metrics::family::Family;
use nano_core::metrics::prometheus_client::metrics::gauge::Gauge;
use nano_core::metrics::prometheus_client::registry::Registry;
use nano_core::metrics::Labels;

use crate::server::Transport;

/// The four transports, in [`Transport::index`] order.
pub(crate) const TRANSPORTS: [Transport; 4] = [
    Transport::Tcp,
    Transport::TcpTls,
    Transport::WebSocket,
    Transport::WebSocketTls,
];

/// One transport's traffic counters.
#[derive(Clone, Default)]
pub(crate) struct Traffic {
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

/// The transport's families.
pub(crate) struct NetMetrics {
    /// By [`Transport::index`].
    traffic: [Traffic; 4],
    connected: Family<Labels, Gauge>,
    sessions: Gauge,
    kicks: Family<Labels, Counter>,
    disconnects: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    dropped: Counter,
    suspended: Gauge,
    resumes: Family<Labels, Counter>,
}

fn by_transport(t: Transport) -> Labels {
    vec![("transport", t.as_str().to_owned())]
}

impl NetMetrics {
    /// Registers the families in `registry`, under `nano_`.
    pub fn register(registry: &mut Registry) -> Self {
        let families: [Family<Labels, Counter>; 4] = Default::default();
        let traffic = TRANSPORTS.map(|t| {
            let l = by_transport(t);
            Traffic {
                messages_in: families[0].get_or_create_owned(&l),
                messages_out: families[1].get_or_create_owned(&l),
                bytes_in: families[2].get_or_create_owned(&l),
                bytes_out: families[3].get_or_create_owned(&l),
            }
        });
        let m = NetMetrics {
            traffic,
            connected: Family::default(),
            sessions: Gauge::default(),
            kicks: Family::default(),
            disconnects: Family::default(),
            rejected: Family::default(),
            dropped: Counter::default(),
            suspended: Gauge::default(),
            resumes: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("nano");
        let [messages_in, messages_out, bytes_in, bytes_out] = families;
        r.register(
            "messages_in",
            "Data packets (requests and notifies) received, by transport",
            messages_in,
        );
        r.register(
            "messages_out",
            "Packets sent (responses, pushes, heartbeats, kicks), by transport",
            messages_out,
        );
        r.register("bytes_in", "Bytes received, by transport", bytes_in);
        r.register("bytes_out", "Packet bytes sent, by transport", bytes_out);
        r.register(
            "connected_clients",
            "Clients connected (handshake done), by transport",
            m.connected.clone(),
        );
        r.register("sessions", "Open sessions", m.sessions.clone());
        r.register(
            "suspended_sessions",
            "Sessions whose connection dropped, waiting for their client to resume them",
            m.suspended.clone(),
        );
        r.register(
            "resumes",
            "Handshakes that presented a resume token, by outcome (resumed or refused)",
            m.resumes.clone(),
        );
        r.register("kicks", "Sessions kicked, by reason", m.kicks.clone());
        r.register(
            "disconnects",
            "Connections ended, by reason",
            m.disconnects.clone(),
        );
        r.register(
            "rejected_connections",
            "Connections refused before their handshake, by reason",
            m.rejected.clone(),
        );
        r.register(
            "dropped_messages",
            "Packets dropped because a client's send queue was full",
            m.dropped.clone(),
        );
        m
    }

    /// Traffic over every transport so far: messages and bytes, in and out.
    pub fn totals(&self) -> [(&'static str, u64); 4] {
        let sum = |f: fn(&Traffic) -> &Counter| self.traffic.iter().map(|t| f(t).get()).sum();
        [
            ("messages_in_total", sum(|t| &t.messages_in)),
            ("messages_out_total", sum(|t| &t.messages_out)),
            ("bytes_in_total", sum(|t| &t.bytes_in)),
            ("bytes_out_total", sum(|t| &t.bytes_out)),
        ]
    }

    pub fn traffic(&self, t: Transport) -> &Traffic {
        &self.traffic[t.index()]
    }

    /// Sets the scrape-time gauges: connected clients per transport, sessions and suspended
    /// sessions.
    pub fn refresh(&self, per_transport: [usize; 4], sessions: usize, suspended: usize) {
        self.suspended
            .set(i64::try_from(suspended).unwrap_or(i64::MAX));
        for (t, n) in TRANSPORTS.iter().zip(per_transport) {
            self.connected
                .get_or_create(&by_transport(*t))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
    }

    pub fn kicked(&self, reason: &str) {
        self.kicks
            .get_or_create(&vec![("reason", label(reason))])
            .inc();
    }

    pub fn disconnected(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// A handshake presented a resume token: `resumed` or not.
    pub fn resume(&self, resumed: bool) {
        let outcome = if resumed { "resumed" } else { "refused" };
        self.resumes
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    pub fn dropped(&self) {
        self.dropped.inc();
    }
}

/// A kick reason as a label value: the application chooses kick reasons, but a label must
/// stay short, so it is cut at 64 bytes (on a character boundary).
fn label(reason: &str) -> String {
    let mut end = reason.len().min(64);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
