//! Priority-aware load shedding: under overload, refuse the least valuable
//! work first and keep critical work flowing.
//!
//! [`PriorityShedLayer`] admits or refuses each request from a load signal
//! and the request's [`Priority`](crate::Priority) (stamped by a
//! [`PriorityLayer`](crate::priority::PriorityLayer), or read by any
//! [`Classify`](crate::priority::Classify)). It has two modes:
//!
//! - **static** ([`PriorityShedLayer::new`] with [`Thresholds`]): a threshold per priority on the
//!   load ([`Thresholds::ladder`]: Low sheds first, then Default, then High;
//!   Critical never, unless configured). The decision is atomic: two
//!   concurrent requests can never both take the last place under a
//!   threshold.
//! - **adaptive** (with an [`Adaptive`] configuration): only a target delay is
//!   needed. An admission level over (priority, [`Cohort`](crate::priority::Cohort))
//!   falls quickly while the queueing delay exceeds the target and rises
//!   slowly while it does not, and opens fully as soon as the queue is
//!   empty; shedding inside a tier is partial and falls on the same cohorts
//!   of callers while the level holds ([`Adaptive`]). In front of an
//!   [`AdaptiveLimit`](crate::limit::AdaptiveLimit), whose handle forecasts
//!   its own refusals ([`LoadSignal::refusing`](crate::LoadSignal::refusing)),
//!   adaptive mode refuses exactly the priorities the limiter would refuse at
//!   its door, without taking its lock, and nothing it would still serve:
//!   shedding stops the moment the limiter's forecast does.
//!
//! Either rule goes to [`PriorityShedLayer::new`] (every option at its
//! default) or [`PriorityShedLayer::builder`], whose options can be set in any
//! order before [`build`](PriorityShedBuilder::build) creates the shared state.
//!
//! The load is the layer's own count of requests in flight below it (held,
//! on the HTTP face, until the response body ends), or any [`LoadSignal`](crate::LoadSignal):
//! an adaptive limiter's handle, a pool's waiters, a closure.
//!
//! Refusals follow the [overload contract](crate::Overloaded): the generic
//! face fails with `Overloaded { reason: Shed, priority, retry_after }`; the
//! HTTP face ([`PriorityShedBuilder::http`]) answers `503` with a
//! `Retry-After` (gRPC: trailers-only `UNAVAILABLE` with
//! `grpc-retry-pushback-ms`), so it goes on an axum `Router` with one
//! `.layer()` call. The retry hint is what the layer observes, how long its
//! backlog takes to drain at the measured completion rate, clamped to
//! `[1 s, cap]` and jittered.
//!
//! A [`Bypass`] predicate ([`HealthChecks`]) lets requests through untouched
//! and uncounted, and [`ShedHandle`] reads the figures.
//!
//! On an axum `Router`, the last `.layer()` call is the outermost: add the
//! `PriorityLayer` after the shedder so it stamps the priority first.
//!
//! # Choosing a mode and a signal
//!
//! Static thresholds on the layer's own in-flight count cost no clock read
//! and suit a service whose capacity is known. Adaptive shedding reads the
//! clock twice per admitted request and finds the capacity itself; on an
//! adaptive limiter's handle it follows the limiter's forecast and reads no
//! clock at all.
//! Without one it steers on latency inflation, which a mix of very fast
//! (errors, cache hits) and slow routes behind one layer blurs: put the layer
//! on the routes that queue.
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use http::Method;
//! use tower_spillway::{
//!     priority::{Priority, PriorityLayer, RouteTable},
//!     shed::{HealthChecks, PriorityShedLayer, Thresholds},
//! };
//!
//! let shed = PriorityShedLayer::builder(Thresholds::ladder(200))
//!     .bypass(HealthChecks)
//!     .http()
//!     .build();
//! let stats = shed.handle();
//!
//! let app: Router = Router::new()
//!     .route("/payments", post(|| async { "paid" }))
//!     .route("/analytics", post(|| async { "counted" }))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(shed)
//!     .layer(PriorityLayer::new(
//!         RouteTable::new()
//!             .route(Some(Method::POST), "/payments", Priority::Critical)
//!             .route(None, "/analytics", Priority::Low),
//!     ));
//! # let _ = (app, stats.snapshot());
//! ```
//!
//! Adaptive shedding on an external signal, generic face:
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! use tower::{ServiceBuilder, service_fn};
//! use tower_spillway::{Priority, shed::{Adaptive, PriorityShedLayer}};
//!
//! let waiters = Arc::new(AtomicUsize::new(0));
//! let signal = { let w = waiters.clone(); move || w.load(Ordering::Relaxed) };
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         PriorityShedLayer::builder(Adaptive::default())
//!             .signal(signal)
//!             .classify(|req: &String| if req.starts_with("pay") { Priority::Critical } else { Priority::Low })
//!             .build(),
//!     )
//!     .service(service_fn(|req: String| async move { Ok::<_, std::convert::Infallible>(req.len()) }));
//! # let _ = svc;
//! ```
//!
//! # Differences from `tower::load_shed`
//!
//! tower's `LoadShed` refuses whatever arrives while the inner service is not
//! ready, whatever it is worth, and decides in `poll_ready`, before it has
//! seen the request; behind axum's `clone().oneshot()` it sees a fresh clone
//! each time. This layer decides in `call`, by priority, on a load it
//! measures itself (or is given), shares one state across every clone and
//! route, says when to come back, and answers HTTP refusals itself instead of
//! needing a `HandleErrorLayer`.

mod bypass;
mod core;
pub mod future;
mod layer;
mod log;
mod mode;
mod permit;
mod service;
mod state;
mod stats;

pub use self::core::{Adaptive, AdaptiveBuilder, Thresholds, ThresholdsBuilder};
#[cfg(feature = "http")]
pub use bypass::HealthChecks;
pub use bypass::{Bypass, NoBypass};
pub use future::ResponseFuture;
pub use layer::{PriorityShedBuilder, PriorityShedLayer, Rule};

/// The shedder as [`PriorityShedBuilder::http`] builds it: `503` refusals
/// with the layer's own retry hint, requests bypassed by `P`, priorities read
/// by `C` (by default from the request's extensions).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub type HttpShedLayer<P = NoBypass, C = crate::priority::FromExtensions> =
    PriorityShedLayer<crate::http::AsResponse<crate::http::ProblemDetails>, C, P>;
pub use permit::ShedPermit;
pub use service::PriorityShed;
pub use stats::{ModeStats, ShedHandle, ShedStats};
#[cfg(test)]
mod tests;
