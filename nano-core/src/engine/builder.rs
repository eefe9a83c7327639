//! Building an engine: components, schedulers, pipeline and route-table settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::job::{make_job, run_hook, MakeJob};
use super::{BuildError, Decoder, Engine, Inner, Registration, Route, DEFAULT_SCHEDULER};
use crate::extension::Extension;
use crate::metrics::prometheus_client::registry::Registry;
use crate::metrics::Metrics;
use crate::protocol::Dictionary;
use crate::scheduler::{PendingScheduler, Scheduler};
use crate::shared::Shared;
use crate::{Component, Json, Pipeline, RateLimit, Serializer};

/// A registered component before the engine is built: where it lives, its route table, and
/// its monomorphized decode and job-making functions.
type Pending<S> = (
    Registration<S>,
    &'static [crate::HandlerInfo],
    Decoder,
    MakeJob<S>,
);

/// Collects components and settings, then builds an [`Engine`].
///
/// # Examples
///
/// ```
/// use nano_core::{EngineBuilder, Json};
///
/// let engine = EngineBuilder::<Json>::new()
///     .push_routes(["onMessage"])
///     .build()
///     .unwrap();
/// assert_eq!(engine.dictionary().code("onMessage"), Some(1));
/// ```
pub struct EngineBuilder<S = Json> {
    components: Vec<Pending<S>>,
    schedulers: Vec<PendingScheduler>,
    scheduler_names: HashMap<String, usize>,
    pipeline: Pipeline<S>,
    push_routes: Vec<String>,
    compress: bool,
    max_packet_size: usize,
    max_inflight: usize,
    rate_limit: Option<RateLimit>,
    extensions: Vec<Arc<dyn Extension<S>>>,
    /// Where the metrics go (`None`: no metrics).
    metrics: Option<Registry>,
}

impl<S: Serializer> Default for EngineBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Serializer> EngineBuilder<S> {
    /// An empty builder.
    pub fn new() -> Self {
        EngineBuilder {
            components: Vec::new(),
            schedulers: Vec::new(),
            scheduler_names: HashMap::new(),
            pipeline: Pipeline::default(),
            push_routes: Vec::new(),
            compress: true,
            max_packet_size: crate::protocol::DEFAULT_MAX_PACKET_SIZE,
            max_inflight: 64,
            rate_limit: None,
            extensions: Vec::new(),
            metrics: None,
        }
    }

    /// Registers a component on the shared default scheduler.
    #[must_use]
    pub fn component<C: Component<Serializer = S>>(self, component: C) -> Self {
        self.component_on(component, DEFAULT_SCHEDULER)
    }

    /// Registers a component on the scheduler named `scheduler` (created on first use).
    /// Components on different schedulers run in parallel; components on the same scheduler
    /// never run concurrently.
    #[must_use]
    pub fn component_on<C: Component<Serializer = S>>(self, component: C, scheduler: &str) -> Self {
        self.component_named(component, C::NAME, scheduler)
    }

    /// Registers a component under another name (its routes become `name.Handler`) on the
    /// scheduler named `scheduler`: several instances of one component type, e.g. one room per
    /// scheduler.
    #[must_use]
    pub fn component_named<C: Component<Serializer = S>>(
        mut self,
        component: C,
        name: &str,
        scheduler: &str,
    ) -> Self {
        let sched = match self.scheduler_names.get(scheduler) {
            Some(&i) => i,
            None => {
                self.schedulers.push(PendingScheduler::new(scheduler));
                let i = self.schedulers.len() - 1;
                self.scheduler_names.insert(scheduler.to_owned(), i);
                i
            }
        };
        let pending = &mut self.schedulers[sched];
        pending.slots.push(Box::new(component));
        let reg = Registration {
            name: name.into(),
            scheduler: sched,
            slot: pending.slots.len() - 1,
            run_hook: run_hook::<C>,
            pushes: C::PUSHES,
            schemas: C::schemas,
        };
        self.components
            .push((reg, C::HANDLERS, C::decode, make_job::<C>));
        self
    }

    /// The pipeline, to add interceptors.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline<S> {
        &mut self.pipeline
    }

    /// Adds push routes (event names) to the route dictionary so they are compressed too.
    #[must_use]
    pub fn push_routes<I: IntoIterator<Item = impl Into<String>>>(mut self, routes: I) -> Self {
        self.push_routes.extend(routes.into_iter().map(Into::into));
        self
    }

    /// Whether the handshake offers the route dictionary (default true). Without it, routes are
    /// always sent as strings.
    #[must_use]
    pub fn route_compression(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// The largest packet body accepted or sent (default 64 KiB).
    #[must_use]
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// How many messages of one session may wait on schedulers before its reader pauses
    /// (default 64).
    #[must_use]
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    /// Limits how many messages (requests and notifies) each session may send: a token bucket
    /// per session, checked before anything else is done with a message. Over the limit, a
    /// request is answered with `NANO-429` and a notify dropped, or the session is kicked
    /// (see [`OverLimit`](crate::OverLimit)). Default: no limit. `None` turns it off again.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::{EngineBuilder, Json, RateLimit};
    ///
    /// let builder = EngineBuilder::<Json>::new().rate_limit(RateLimit::new(50.0, 100));
    /// # drop(builder);
    /// ```
    #[must_use]
    pub fn rate_limit(mut self, limit: impl Into<Option<RateLimit>>) -> Self {
        self.rate_limit = limit.into();
        self
    }

    /// Adds an [`Extension`] (a cluster, ...): started with the engine by the transport, it
    /// may take the messages whose route no local component serves.
    #[must_use]
    pub fn extension(mut self, extension: Arc<dyn Extension<S>>) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Turns the metrics on: the engine's `nano_` families are registered in `registry`, next
    /// to whatever the caller registered there already (a transport's), and
    /// [`Engine::metrics`] renders them all. `None` (the default) turns them off.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::{metrics::prometheus_client::registry::Registry, EngineBuilder, Json};
    ///
    /// let engine = EngineBuilder::<Json>::new().metrics(Registry::default()).build().unwrap();
    /// assert!(engine.render_metrics().unwrap().contains("# TYPE nano_groups gauge"));
    /// ```
    #[must_use]
    pub fn metrics(mut self, registry: impl Into<Option<Registry>>) -> Self {
        self.metrics = registry.into();
        self
    }

    /// Builds the engine; call [`Engine::start`] inside a tokio runtime to run it.
    ///
    /// # Errors
    ///
    /// [`BuildError::DuplicateRoute`] when two components declare the same route.
    pub fn build(self) -> Result<Engine<S>, BuildError> {
        let mut names: Vec<String> = self.push_routes.clone();
        // Declared pushes join the dictionary too (once, after the application's own).
        for (reg, _, _, _) in &self.components {
            for p in reg.pushes {
                if !names.iter().any(|n| n == p.route) {
                    names.push(p.route.to_owned());
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (reg, handlers, _, _) in &self.components {
            for h in handlers.iter() {
                let route = format!("{}.{}", reg.name, h.name);
                if !seen.insert(route.clone()) {
                    return Err(BuildError::DuplicateRoute(route));
                }
                names.push(route);
            }
        }
        if names.len() >= usize::from(u16::MAX) {
            return Err(BuildError::TooManyRoutes);
        }
        let dict = Arc::new(Dictionary::from_routes(&names));
        let metrics = self.metrics.map(|registry| {
            let routes = self
                .components
                .iter()
                .flat_map(|(reg, handlers, _, _)| {
                    handlers
                        .iter()
                        .map(|h| (format!("{}.{}", reg.name, h.name), reg.scheduler))
                })
                .collect();
            let schedulers: Vec<String> = self
                .schedulers
                .iter()
                .map(|p| p.handle.name().to_owned())
                .collect();
            Arc::new(Metrics::new(registry, routes, &schedulers))
        });
        let shared = Arc::new(Shared {
            dict: self.compress.then(|| dict.clone()),
            max_packet_size: self.max_packet_size,
            pipeline: self.pipeline,
            closed_hooks: Mutex::new(Vec::new()),
            bound_hooks: Mutex::new(Vec::new()),
            suspended_hooks: Mutex::new(Vec::new()),
            resumed_hooks: Mutex::new(Vec::new()),
            max_inflight: self.max_inflight,
            session_id_base: self
                .extensions
                .iter()
                .fold(0, |base, e| base | e.session_id_base()),
            engine: std::sync::OnceLock::new(),
            metrics,
        });
        let handles: Vec<Scheduler> = self.schedulers.iter().map(|p| p.handle.clone()).collect();
        let mut routes = Vec::new();
        let mut by_name = HashMap::new();
        let mut by_code = HashMap::new();
        let mut registrations = Vec::new();
        for (ci, (reg, handlers, decode, make_job)) in self.components.into_iter().enumerate() {
            for (index, h) in handlers.iter().enumerate() {
                let ri = routes.len();
                let route: Arc<str> = format!("{}.{}", reg.name, h.name).into();
                by_name.insert(route.clone(), ri);
                if let Some(code) = dict.code(&route) {
                    by_code.insert(code, ri);
                }
                routes.push(Route {
                    info: h,
                    internal: h.internal,
                    route,
                    scheduler: handles[reg.scheduler].clone(),
                    index,
                    component: ci,
                    decode,
                    make_job,
                });
            }
            registrations.push(reg);
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                shared,
                dict,
                compress: self.compress,
                routes,
                by_name,
                by_code,
                registrations,
                handles,
                pending: Mutex::new(Some(self.schedulers)),
                tasks: Mutex::new(Vec::new()),
                rate_limit: self.rate_limit,
                extensions: self.extensions,
            }),
        };
        let _ = engine.inner.shared.engine.set(engine.downgrade());
        Ok(engine)
    }
}
