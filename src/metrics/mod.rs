//! The layers' figures through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`), for Prometheus or any other exporter.
//!
//! Two sources feed them:
//!
//! - a [`MetricsReporter`], built on the layers' handles, reads each
//!   handle's snapshot and sets counters and gauges, when
//!   [`publish`](MetricsReporter::publish) is called or on an interval
//!   ([`spawn`](MetricsReporter::spawn)). Requests pay nothing for these: the
//!   handles already keep the counts;
//! - an [`AdaptiveLimitLayer`](crate::limit::AdaptiveLimitLayer) records two
//!   histograms itself, per request, on handles registered once when it is
//!   built: how long each waiter admitted out of the queue waited, and each
//!   rtt it feeds its algorithm (so none with [`Fixed`](crate::limit::Fixed),
//!   which takes no samples). That is one `Histogram::record` per sampled
//!   request, on the release path.
//!
//! Install the recorder before building the layers and the reporter: metrics
//! are registered with the recorder installed then, and a limiter built
//! before it records nothing. Without the feature none of this is compiled
//! in: the limiter's histograms are a type with no fields and empty methods.
//!
//! ```
//! use std::time::Duration;
//! use tower_spillway::{
//!     degrade::DegradeHandle,
//!     limit::{AdaptiveLimitLayer, Gradient},
//!     metrics::MetricsReporter,
//!     shed::{Adaptive, PriorityShedLayer},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // First: let prometheus = PrometheusBuilder::new().install_recorder()?;
//! let limit = AdaptiveLimitLayer::builder(Gradient::default())
//!     .name("db") // the `layer` label of the limiter's metrics
//!     .http()
//!     .build();
//! let shed = PriorityShedLayer::builder(Adaptive::default())
//!     .signal(limit.handle())
//!     .http()
//!     .build();
//! let level = DegradeHandle::new(limit.handle());
//!
//! let reporter = MetricsReporter::new()
//!     .limit(&limit.handle())
//!     .shed("edge", &shed.handle())
//!     .degrade("load", &level);
//! let _publishing = reporter.spawn(Duration::from_secs(1));
//! // GET /metrics: reporter.publish(); then prometheus.render()
//! # }
//! ```
//!
//! `examples/axum_stack.rs` serves `GET /metrics` this way, with
//! `metrics-exporter-prometheus`.
//!
//! # Names
//!
//! Prometheus conventions: a `spillway_` prefix, then the module, then what
//! is measured; counters end in `_total`; durations are in seconds. Every
//! metric has the label `layer`, the layer instance's name: the limiter's
//! own ([`AdaptiveLimitBuilder::name`](crate::limit::AdaptiveLimitBuilder::name),
//! default `limit`), the name given to the reporter for the others.
//! `priority` is `low`, `default`, `high` or `critical`
//! ([`Priority::as_str`](crate::Priority::as_str)); `reason` is a
//! [`Reason::as_str`](crate::Reason::as_str). Counters are cumulative since
//! the layer was built.
//!
//! | name | type | labels | unit | source |
//! |---|---|---|---|---|
//! | `spillway_limit_concurrency_limit` | gauge | `layer` | requests | [`LimitSnapshot::limit`](crate::limit::LimitSnapshot::limit) |
//! | `spillway_limit_in_flight` | gauge | `layer` | requests | [`LimitSnapshot::in_flight`](crate::limit::LimitSnapshot::in_flight) |
//! | `spillway_limit_queued` | gauge | `layer`, `priority` | requests | [`LimitSnapshot::queued_by_priority`](crate::limit::LimitSnapshot::queued_by_priority) |
//! | `spillway_limit_oldest_wait_seconds` | gauge | `layer` | seconds | [`LimitSnapshot::oldest_wait`](crate::limit::LimitSnapshot::oldest_wait) (0: nobody waits) |
//! | `spillway_limit_service_rate` | gauge | `layer` | requests per second | [`LimitSnapshot::service_rate`](crate::limit::LimitSnapshot::service_rate) (0: no sample yet) |
//! | `spillway_limit_admitted_total` | counter | `layer`, `priority` | requests | [`LimitSnapshot::admitted_by_priority`](crate::limit::LimitSnapshot::admitted_by_priority) |
//! | `spillway_limit_queued_total` | counter | `layer`, `priority` | requests | [`LimitSnapshot::enqueued_by_priority`](crate::limit::LimitSnapshot::enqueued_by_priority) |
//! | `spillway_limit_rejected_total` | counter | `layer`, `reason` | requests | `rejected_queue_full` (`queue_full`), `rejected_queue_timeout` (`queue_timeout`), `rejected_expected_wait` + `rejected_while_waiting` (`expected_wait`), `rejected_deadline` (`deadline`) of [`LimitSnapshot`](crate::limit::LimitSnapshot) |
//! | `spillway_limit_evicted_total` | counter | `layer` | requests | [`LimitSnapshot::rejected_while_waiting`](crate::limit::LimitSnapshot::rejected_while_waiting) (also in `expected_wait` above) |
//! | `spillway_limit_samples_total` | counter | `layer` | samples | [`LimitSnapshot::samples`](crate::limit::LimitSnapshot::samples) |
//! | `spillway_limit_drops_total` | counter | `layer` | samples | [`LimitSnapshot::drops`](crate::limit::LimitSnapshot::drops) |
//! | `spillway_limit_queue_wait_seconds` | histogram | `layer`, `priority` | seconds | recorded by the limiter when it grants a waiter its permit |
//! | `spillway_limit_rtt_seconds` | histogram | `layer` | seconds | recorded by the limiter when it feeds a sample to its algorithm |
//! | `spillway_shed_admitted_total` | counter | `layer`, `priority` | requests | [`ShedStats::admitted`](crate::shed::ShedStats::admitted) |
//! | `spillway_shed_rejected_total` | counter | `layer`, `priority` | requests | [`ShedStats::shed`](crate::shed::ShedStats::shed) |
//! | `spillway_shed_bypassed_total` | counter | `layer` | requests | [`ShedStats::bypassed`](crate::shed::ShedStats::bypassed) |
//! | `spillway_shed_in_flight` | gauge | `layer` | requests | [`ShedStats::in_flight`](crate::shed::ShedStats::in_flight) |
//! | `spillway_shed_admission_level` | gauge | `layer` | slots of 512 | [`ModeStats::Adaptive`](crate::shed::ModeStats::Adaptive)'s `level` (adaptive shedders only) |
//! | `spillway_shed_retry_after_seconds` | gauge | `layer` | seconds | [`ShedStats::retry_after_ms`](crate::shed::ShedStats::retry_after_ms) |
//! | `spillway_degrade_load_level` | gauge | `layer` | 0 normal, 1 elevated, 2 overloaded | [`DegradeSnapshot::level`](crate::degrade::DegradeSnapshot::level) |
//! | `spillway_degrade_transitions_total` | counter | `layer` | changes | [`DegradeSnapshot::transitions`](crate::degrade::DegradeSnapshot::transitions) |
//! | `spillway_degrade_fallbacks_total` | counter | `layer` | requests | [`DegradeSnapshot::fallbacks`](crate::degrade::DegradeSnapshot::fallbacks) |
//! | `spillway_rate_admitted_total` | counter | `layer` | requests | `RateLimitSnapshot::allowed` (feature `http`) |
//! | `spillway_rate_rejected_total` | counter | `layer` | requests | `RateLimitSnapshot::limited` (feature `http`) |
//! | `spillway_rate_keys` | gauge | `layer` | keys | `RateLimitSnapshot::keys` (feature `http`) |
//! | `spillway_client_calls_total` | counter | `layer` | calls | `HonorRetryAfterSnapshot::calls` (feature `http`) |
//! | `spillway_client_retries_total` | counter | `layer` | requests | `HonorRetryAfterSnapshot::retries` (feature `http`) |
//! | `spillway_client_retries_refused_total` | counter | `layer` | requests | `HonorRetryAfterSnapshot::budget_exhausted` (feature `http`) |
//! | `spillway_client_hints_over_cap_total` | counter | `layer` | responses | `HonorRetryAfterSnapshot::over_cap` (feature `http`) |
//! | `spillway_client_cooldowns_total` | counter | `layer` | cooldowns | `HonorRetryAfterSnapshot::cooldowns` (feature `http`) |
//! | `spillway_client_cooldown_remaining_seconds` | gauge | `layer` | seconds | `HonorRetryAfterSnapshot::cooldown_remaining_ms` (feature `http`) |
//!
//! `metrics-exporter-prometheus` renders histograms as summaries unless
//! buckets are set; `PrometheusBuilder::set_buckets_for_metric` with
//! `Matcher::Suffix("_seconds")` makes them Prometheus histograms, which can
//! be summed across instances.
//!
//! # Differences from tower-http's `metrics`
//!
//! tower-http's `InFlightRequests` keeps one count and hands it to a
//! callback on an interval, leaving names and units to each service. Here
//! every layer's handle already keeps its figures, the reporter only reads
//! them, and the names, labels and units are fixed and documented above, so
//! one dashboard fits every service built on the crate.

mod degrade;
mod limit;
pub(crate) mod names;
mod reporter;
mod shed;
mod task;

#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod rate;

pub use reporter::MetricsReporter;
pub use task::Publishing;

#[cfg(test)]
mod tests;
