//! OpenTelemetry export of nano's spans (feature `otel`).
//!
//! nano traces through `tracing`: a `conn` span per connection and a `message` span per
//! handled message (see the README's *Operating a server*). [`layer`] turns them, and every
//! other span of the application, into OpenTelemetry spans of the given tracer provider, with
//! their fields as attributes (`route`, `session`, `uid`, `outcome`, `duration_us`, ...) and
//! the events inside them (errors, kicks) as span events. The provider decides where they go
//! (an OTLP exporter from `opentelemetry-otlp`, stdout, ...).
//!
//! # Examples
//!
//! ```
//! use nano::otel::opentelemetry_sdk::trace::SdkTracerProvider;
//! use tracing_subscriber::prelude::*;
//!
//! // With a real exporter: `SdkTracerProvider::builder().with_batch_exporter(otlp).build()`.
//! let provider = SdkTracerProvider::builder().build();
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::EnvFilter::new("info,nano_core=debug"))
//!     .with(nano::otel::layer(&provider))
//!     .init();
//! ```

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// A `tracing-subscriber` layer exporting spans through `provider`, under the
/// instrumentation scope `nano`.
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("nano"))
}
