//! Adaptive concurrency limits: discover how much a service can take, from
//! its latency and its failures, and queue or refuse the rest by priority.
//!
//! A fixed concurrency limit is wrong the day capacity changes. An
//! [`AdaptiveLimitLayer`] measures every request and lets an [`Algorithm`]
//! move the limit. It works on both sides of a connection:
//!
//! - **servers**: [`Gradient`] (the default to reach for) finds the backend's
//!   capacity from latency: it compares each round trip's mean rtt with a
//!   baseline kept over 10–20 s, so the baseline cannot follow a standing
//!   queue up, and cuts the limit to where the queue it saw would be gone;
//! - **clients**: [`Aimd`] (Netflix's `AIMDLimit` semantics) wrapping a tonic
//!   `Channel` or a hyper client shrinks when the remote answers 429,
//!   `RESOURCE_EXHAUSTED` or slows down, and grows back when it recovers (a
//!   refusal for a quota, one that carries `RateLimit` fields, is a pacer's
//!   business, not the limit's: see [`HttpOutcomes`]).
//!
//! The pieces:
//!
//! - [`Algorithm`], [`Gradient`], [`Aimd`], [`Fixed`]: pure limit algorithms,
//!   fed [`Sample`]s (admission time, rtt, in-flight count at admission,
//!   dropped or not), with no tokio and no Tower in them;
//! - the wait queue: at the limit, a request waits in a queue ordered by
//!   [`Priority`](crate::Priority) (read from the request's extensions, see
//!   [`priority`](crate::priority)), then by arrival. It is let in only when
//!   its **forecast wait** (the waiters ahead of it and the higher
//!   priorities still arriving, at the higher of their rates over the last
//!   40 ms and the last quarter second, over the service rate the limiter
//!   measures) fits in half its budget: the queue timeout, or less if the
//!   caller's [`Deadline`](crate::deadline::Deadline) is sooner. Otherwise it
//!   is refused at once, not after waiting to be refused; a waiter that
//!   higher priorities come to leave no slot is taken out at once. The queue
//!   holds about two round trips of work, so the backlog a spike leaves
//!   drains within a few round trips; each tier below Critical may fill only
//!   a share of it (High three quarters, Default half, Low a quarter), so
//!   the backlog of a tier at the margin leaves room for the tiers above
//!   instead of being thrown out to make it. Optional [`Reserved`] shares
//!   keep room for important priorities;
//! - [`ClassifyOutcome`]: which results are successes, which are overload
//!   signals, which say nothing. [`HttpOutcomes`] counts 429/503/504 and gRPC
//!   4/8/14 as drops and keeps the permit until the response body ends;
//! - [`LimitHandle`]: the limit, in-flight and queued counts, the oldest
//!   waiter's age, the forecast; it is a [`LoadSignal`](crate::LoadSignal)
//!   that tells a shedder in front which priorities it refuses.
//!
//! Refusals are [`Overloaded`](crate::Overloaded) with
//! [`Reason::ExpectedWait`](crate::Reason::ExpectedWait),
//! [`Reason::Deadline`](crate::Reason::Deadline),
//! [`Reason::QueueFull`](crate::Reason::QueueFull) or
//! [`Reason::QueueTimeout`](crate::Reason::QueueTimeout), with a hint of how
//! long the backlog takes to drain: errors on the generic face
//! ([`AdaptiveLimitLayer::new`]), `503` + `Retry-After` on the HTTP face
//! ([`AdaptiveLimitBuilder::http`]).
//!
//! # Server
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_spillway::{
//!     limit::{AdaptiveLimitLayer, Gradient},
//!     priority::{Priority, PriorityLayer, RouteTable},
//! };
//!
//! let limit = AdaptiveLimitLayer::builder(Gradient::default())
//!     .queue_timeout(Duration::from_millis(500))
//!     .http()
//!     .build();
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
//!     .layer(AdaptiveLimitLayer::builder(aimd).outcomes(HttpOutcomes::new()).max_queue(64).build())
//!     .service(channel);
//! // tonic_health::pb::health_client::HealthClient::new(channel) ...
//! # let _ = channel; Ok(()) }
//! ```
//!
//! A client limiter needs no priorities: without a [`Priority`](crate::Priority)
//! in the request's extensions every request is `Default`.
//!
//! # Choosing the AIMD variant (clients)
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
//!   taken in `call` when the request's priority (and deadline) is known,
//!   and waiting is bounded, in priority order; what could not be served in
//!   time is refused at once.
//! - tower releases the permit when the response future completes; with
//!   [`HttpOutcomes`] the permit lasts until the response body ends, so
//!   streaming responses count for as long as they run.
//! - One layer is one limit, however many routes or connections it wraps
//!   (tower's `ConcurrencyLimitLayer` makes one limit per `layer()` call;
//!   its `GlobalConcurrencyLimitLayer` shares one).
//! - Shrinking the limit never cancels running work: it only delays the next
//!   admissions.

mod admission;
mod aimd;
mod algorithm;
mod counters;
mod forecast;
mod gradient;
mod handle;
mod histograms;
mod layer;
mod log;
mod outcome;
mod permit;
mod queue;
mod reserved;
mod service;

pub mod future;

pub use aimd::{Aimd, AimdBuilder, Growth, LatencyTarget};
pub use algorithm::{Algorithm, Fixed, Sample};
pub use gradient::{Gradient, GradientBuilder};
pub use handle::{LimitHandle, LimitSnapshot};
pub use layer::{AdaptiveLimitBuilder, AdaptiveLimitLayer};
#[cfg(feature = "http")]
pub use outcome::HttpOutcomes;
pub use outcome::{ByResult, ClassifyOutcome, PermitGuard};
pub use permit::{Outcome, Permit};
pub use reserved::Reserved;

/// The limit as [`AdaptiveLimitBuilder::http`] builds it: `503` refusals,
/// [`HttpOutcomes`], priorities found by `K` (by default in the request's
/// extensions).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub type HttpLimitLayer<K = crate::priority::FromExtensions> =
    AdaptiveLimitLayer<crate::http::AsResponse<crate::http::ProblemDetails>, HttpOutcomes, K>;
pub use service::AdaptiveLimit;

#[cfg(test)]
mod door_tests;
#[cfg(test)]
mod tests;
