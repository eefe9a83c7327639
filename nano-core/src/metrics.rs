//! An engine's Prometheus metrics: handler response times, queueing delay, refused messages,
//! scheduler queues and groups (`nano_` families named after pitaya's, so that dashboards
//! translate).
//!
//! Off unless the application asks for them ([`EngineBuilder::metrics`](crate::EngineBuilder::metrics)).
//! The hot path then pays one clock read when a message is queued and one when its job starts,
//! and one histogram observation per handled message, on handles resolved when the engine was
//! built; label lookups happen only for failures. Gauges (queue depth, groups) are read when
//! the metrics are scraped ([`Metrics::refresh`]), never kept up to date on the hot path.
//!
//! Transports register their own families (connections, bytes, kicks) in the same
//! [`Registry`] before the engine is built, through the builder's registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Groups alive in this process, and the members of all of them.
pub fn group_census() -> (usize, usize) {
    crate::group::census()
}

/// Labels of a family: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Response-time buckets, in seconds: 50 µs to about 13 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 19)
}

/// A histogram family whose members share the latency buckets.
pub type LatencyFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A new latency histogram.
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// The engine's metrics. Built by the engine builder; read it with
/// [`Engine::metrics`](crate::Engine::metrics) and render it with
/// [`prometheus_client::encoding::text::encode`].
pub struct Metrics {
    registry: Registry,
    /// Per route (the engine's route index): the `status="ok"` histograms of a request and of a
    /// notify, resolved once.
    ok: Vec<[Histogram; 2]>,
    /// Per route: its name and the index of its scheduler.
    routes: Vec<(String, usize)>,
    response_time: LatencyFamily,
    /// Per scheduler (the engine's scheduler index).
    delay: Vec<Histogram>,
    queue: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    rate_limited: Counter,
    groups: Gauge,
    group_members: Gauge,
    handled: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("routes", &self.routes.len())
            .field("handled", &self.handled())
            .finish()
    }
}

const KINDS: [&str; 2] = ["request", "notify"];

impl Metrics {
    /// Registers the engine's families in `registry` (under `nano_`) for these routes (name and
    /// scheduler index) and schedulers (names).
    pub(crate) fn new(
        registry: Registry,
        routes: Vec<(String, usize)>,
        schedulers: &[String],
    ) -> Self {
        let response_time: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let ok = routes
            .iter()
            .map(|(route, _)| {
                KINDS.map(|kind| {
                    response_time.get_or_create_owned(&handler_labels(route, kind, None))
                })
            })
            .collect();
        let delay_family: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let delay = schedulers
            .iter()
            .map(|s| delay_family.get_or_create_owned(&vec![("scheduler", s.clone())]))
            .collect();
        let queue = Family::<Labels, Gauge>::default();
        for s in schedulers {
            let _ = queue.get_or_create(&vec![("scheduler", s.clone())]);
        }
        let mut m = Metrics {
            registry,
            ok,
            routes,
            response_time,
            delay,
            queue,
            refused: Family::default(),
            rate_limited: Counter::default(),
            groups: Gauge::default(),
            group_members: Gauge::default(),
            handled: AtomicU64::new(0),
        };
        let r = m.registry.sub_registry_with_prefix("nano");
        r.register(
            "handler_response_time_seconds",
            "Time from a message being queued for its handler to the handler's answer, by route, status, error code and type",
            m.response_time.clone(),
        );
        r.register(
            "handler_delay_seconds",
            "Time a message waited in its scheduler's queue before its handler started, by scheduler",
            delay_family,
        );
        r.register(
            "scheduler_queue_size",
            "Jobs waiting in each scheduler's queue",
            m.queue.clone(),
        );
        r.register(
            "refused_messages",
            "Messages answered with an error before reaching a handler (unknown route, undecodable payload, pipeline, rate limit), by code",
            m.refused.clone(),
        );
        r.register(
            "exceeded_rate_limiting",
            "Messages refused by the per-session rate limit",
            m.rate_limited.clone(),
        );
        r.register("groups", "Groups alive in this process", m.groups.clone());
        r.register(
            "group_members",
            "Members of all groups alive in this process",
            m.group_members.clone(),
        );
        m
    }

    /// The registry holding every family (the engine's and the transports').
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus (OpenMetrics) text format, after
    /// [`refresh`](Self::refresh)ing the gauges read at scrape time.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Messages handled so far (answered, or notifies run).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Sets the scrape-time gauges: each scheduler's queue length (by scheduler index), and
    /// the process's groups.
    pub(crate) fn refresh(&self, queues: &[(String, usize)]) {
        for (name, len) in queues {
            self.queue
                .get_or_create(&vec![("scheduler", name.clone())])
                .set(i64::try_from(*len).unwrap_or(i64::MAX));
        }
        let (groups, members) = crate::group::census();
        self.groups.set(i64::try_from(groups).unwrap_or(i64::MAX));
        self.group_members
            .set(i64::try_from(members).unwrap_or(i64::MAX));
    }

    /// A message of `route` was handled in `elapsed`; `failed` is the error code it was answered
    /// with.
    pub(crate) fn handled_message(
        &self,
        route: usize,
        request: bool,
        failed: Option<&str>,
        elapsed: Duration,
    ) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        match failed {
            None => {
                if let Some(h) = self.ok.get(route) {
                    h[usize::from(!request)].observe(secs);
                }
            }
            Some(code) => {
                if let Some((name, _)) = self.routes.get(route) {
                    let kind = KINDS[usize::from(!request)];
                    self.response_time
                        .get_or_create(&handler_labels(name, kind, Some(code)))
                        .observe(secs);
                }
            }
        }
    }

    /// A message of `route` waited `waited` before its job started.
    pub(crate) fn queued_for(&self, route: usize, waited: Duration) {
        if let Some(h) = self
            .routes
            .get(route)
            .and_then(|(_, sched)| self.delay.get(*sched))
        {
            h.observe(waited.as_secs_f64());
        }
    }

    /// A message was answered with `code` before reaching a handler.
    pub(crate) fn refused(&self, code: &str) {
        self.refused
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
    }

    /// A message was over its session's rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
    }
}

fn handler_labels(route: &str, kind: &'static str, failed: Option<&str>) -> Labels {
    vec![
        ("route", route.to_owned()),
        (
            "status",
            if failed.is_some() { "failed" } else { "ok" }.to_owned(),
        ),
        ("code", failed.unwrap_or("").to_owned()),
        ("type", kind.to_owned()),
    ]
}
