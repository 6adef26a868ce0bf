//! Adaptive concurrency limits: discover how much a service can take, from
//! its latency and its failures, and queue or refuse the rest by priority.
//!
//! A fixed concurrency limit is wrong the day capacity changes. An
//! [`AdaptiveLimitLayer`] measures every request and lets an [`Algorithm`]
//! move the limit: [`Aimd`] (Netflix's `AIMDLimit` semantics) grows it by one
//! while requests succeed with the service busy, and cuts it by 10 % on every
//! overload signal. It works on both sides of a connection:
//!
//! - **servers**: put it in front of the handlers; with a
//!   [`LatencyTarget`] the limit shrinks as soon as the database behind them
//!   gets slow, not only when it fails;
//! - **clients**: wrap a tonic `Channel` or a hyper client; the limit shrinks
//!   when the remote answers 429, `RESOURCE_EXHAUSTED` or slows down, and
//!   grows back when it recovers.
//!
//! The pieces:
//!
//! - [`Algorithm`], [`Aimd`], [`Fixed`]: pure limit algorithms, fed
//!   [`Sample`]s (admission time, rtt, in-flight count at admission, dropped
//!   or not), with no tokio and no Tower in them;
//! - the wait queue: at the limit, a request waits in a queue ordered by
//!   [`Priority`](crate::Priority) (read from the request's extensions, see
//!   [`priority`](crate::priority)), then by arrival; bounded by length and by
//!   time, with a CoDel-style shorter timeout once a standing queue forms. An
//!   expired waiter is refused when it reaches the head, never run. Optional
//!   [`Reserved`] shares keep room for important priorities;
//! - [`ClassifyOutcome`]: which results are successes, which are overload
//!   signals, which say nothing. [`HttpOutcomes`] counts 429/503/504 and gRPC
//!   4/8/14 as drops and keeps the permit until the response body ends;
//! - [`LimitHandle`]: the limit, in-flight and queued counts, the oldest
//!   waiter's age; it is a [`LoadSignal`](crate::LoadSignal) for a shedder.
//!
//! Refusals are [`Overloaded`](crate::Overloaded) with
//! [`Reason::QueueFull`](crate::Reason::QueueFull) or
//! [`Reason::QueueTimeout`](crate::Reason::QueueTimeout): errors on the
//! generic face ([`AdaptiveLimitLayer::new`]), `503` + `Retry-After` on the
//! HTTP face ([`AdaptiveLimitLayer::http`]).
//!
//! # Server
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_spillway::{
//!     limit::{AdaptiveLimitLayer, Aimd, Growth, LatencyTarget},
//!     priority::{Priority, PriorityLayer, RouteTable},
//! };
//!
//! let aimd = Aimd::builder()
//!     .min_limit(10)
//!     .max_limit(500)
//!     .growth(Growth::PerLimit)
//!     .decrease_once_per_rtt(true)
//!     .latency_target(LatencyTarget::min_rtt_multiple(3.0))
//!     .build()
//!     .unwrap();
//! let limit = AdaptiveLimitLayer::new(aimd)
//!     .max_queue(256)
//!     .queue_timeout(Duration::from_millis(500))
//!     .http();
//! let stats = limit.handle();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(limit)
//!     .layer(PriorityLayer::new(RouteTable::new().route(None, "/admin", Priority::Critical)));
//! assert_eq!(stats.in_flight(), 0);
//! ```
//!
//! # Client
//!
//! ```no_run
//! # async fn client() -> Result<(), Box<dyn std::error::Error>> {
//! use tower::ServiceBuilder;
//! use tower_spillway::limit::{AdaptiveLimitLayer, Aimd, Growth, HttpOutcomes};
//!
//! let channel = tonic::transport::Endpoint::from_static("http://[::1]:50051").connect_lazy();
//! let aimd = Aimd::builder()
//!     .min_limit(1)
//!     .initial_limit(10)
//!     .growth(Growth::PerLimit)
//!     .decrease_once_per_rtt(true)
//!     .build()?;
//! let channel = ServiceBuilder::new()
//!     .layer(AdaptiveLimitLayer::new(aimd).outcomes(HttpOutcomes::new()).max_queue(64))
//!     .service(channel);
//! // tonic_health::pb::health_client::HealthClient::new(channel) ...
//! # let _ = channel; Ok(()) }
//! ```
//!
//! A client limiter needs no priorities: without a [`Priority`](crate::Priority)
//! in the request's extensions every request is `Default`.
//!
//! # Choosing the AIMD variant
//!
//! [`Aimd`]'s defaults are Netflix's: +1 on every success seen with at least
//! half the limit in flight, ×0.9 on every drop. That finds headroom fast,
//! but against a backend that answers overload at once (a 503, a
//! `RESOURCE_EXHAUSTED`) it overshoots by a round trip's worth of growth and
//! then cuts once per refused request, so the limit swings between the
//! minimum and twice the capacity. Two options make it settle:
//!
//! - [`Growth::PerLimit`]: +1 per limit's worth of successes, about +1 per
//!   round trip (TCP's congestion avoidance);
//! - [`decrease_once_per_rtt`](AimdBuilder::decrease_once_per_rtt): drops
//!   from requests admitted before the last cut took effect do not cut again.
//!
//! `examples/aimd_convergence.rs` runs both against a backend whose capacity
//! goes 40 → 10 → 80: with the options the limit's mean is within 10 % of
//! each capacity and settles within a second; with Netflix's exact
//! semantics (`--netflix`) it does not settle.
//!
//! # Cost
//!
//! With no reserved shares, a request that finds nobody waiting is admitted
//! with one compare-and-swap, and a request whose outcome is not sampled is
//! released with one decrement; the lock is taken only to queue, to drain
//! the queue and to feed a sample to the algorithm. An algorithm that takes
//! samples costs two clock reads per request (admission and end); [`Fixed`]
//! takes none.
//!
//! # Differences from tower's `ConcurrencyLimit`
//!
//! - The limit adapts; tower's is fixed ([`Fixed`] gives a fixed limit here).
//! - tower waits for a permit in `poll_ready`, unboundedly and in no order
//!   (tower issue 793); here the service is always ready, the decision is
//!   taken in `call` when the request's priority is known, and waiting is
//!   bounded by length and time, in priority order, ending in a refusal.
//! - tower releases the permit when the response future completes; with
//!   [`HttpOutcomes`] the permit lasts until the response body ends, so
//!   streaming responses count for as long as they run.
//! - One layer is one limit, however many routes or connections it wraps
//!   (tower's `ConcurrencyLimitLayer` makes one limit per `layer()` call;
//!   its `GlobalConcurrencyLimitLayer` shares one).
//! - Shrinking the limit never cancels running work: it only delays the next
//!   admissions.

mod aimd;
mod forecast;
mod gradient;
mod handle;
mod layer;
mod outcome;
mod queue;
mod service;

pub mod future;

pub use aimd::{Aimd, AimdBuilder, Algorithm, Fixed, Growth, LatencyTarget, Sample};
pub use gradient::{Gradient, GradientBuilder};
pub use handle::{LimitHandle, LimitSnapshot, QueuedByPriority};
pub use layer::AdaptiveLimitLayer;
#[cfg(feature = "http")]
pub use outcome::{BodyPermit, HttpOutcomes};
pub use outcome::{ByResult, ClassifyOutcome};
pub use queue::{Outcome, Permit, Reserved};
pub use service::AdaptiveLimit;

#[cfg(test)]
mod door_tests;
#[cfg(test)]
mod tests;
