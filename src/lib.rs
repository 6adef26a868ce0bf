//! Tower middleware that keeps services alive when work arrives faster than
//! they can finish it.
//!
//! A spillway lets a dam release the water it cannot hold, in a controlled
//! way, so the dam does not break. The layers of this crate do that for
//! [Tower] services: when load exceeds capacity, the service keeps serving
//! what matters most, tells callers when to come back, and refuses the rest
//! quickly and cheaply.
//!
//! Every layer is independent and stackable, and works with one `.layer()`
//! call on an axum `Router`, a tonic `Server::builder()`, a hyper service, or
//! a client.
//!
//! | module | what it does |
//! |---|---|
//! | [`priority`] | classify requests as `Critical > High > Default > Low` and stamp the answer into the request |
//! | [`limit`] | adaptive concurrency limit (AIMD) with a bounded, priority-ordered wait queue and outcome classification |
//! | [`retry_after`] | answer overload with 503/429 and an honest, jittered `Retry-After` (gRPC: trailers-only status with `grpc-retry-pushback-ms`); on clients, honour them with a shared cooldown and budgeted retries |
//! | [`rate`] | GCRA rate limits: refuse callers over quota (429 with the exact wait, bounded keyed state), pace a client under a known quota |
//! | [`shed`] | shed the least valuable work first under overload: per-priority thresholds or an adaptive admission level, with an observed `Retry-After` |
//! | [`batch`] | gather single calls into batches for an inner `Service<Vec<T>>`, one result per caller |
//! | [`coalesce`] | single-flight: identical in-flight requests share one inner call |
//! | [`aggregate`] | merge commutative updates per key in memory and flush merged maps to the next tier |
//! | [`degrade`] | a load level from the stack's own handles, stamped into requests and readable anywhere; per-route fallbacks while it is high |
//! | [`http`], [`grpc`] | the refusal responses and body plumbing every HTTP face shares |
//! | `metrics` | (feature `metrics`) every stateful layer's figures through the `metrics` facade; the names are in one table in its docs |
//! | `spill` | (feature `spill`) deferrable requests the stack refuses are stored and answered `202 Accepted`, then replayed through the same stack at the pace it admits |
//!
//! # The overload contract
//!
//! Every refusal, from any layer, is an [`Overloaded`]: its [`Reason`] (shed,
//! queue full, queue timeout, rate limited, cooldown), the request's
//! [`Priority`] and a retry hint. Each rejecting layer has two faces, chosen
//! once when it is built (see [`reject`]):
//!
//! - the **generic face** works on any request type and fails with a
//!   [`BoxError`] holding the `Overloaded` ([`is_overloaded`] finds it);
//! - the **HTTP face** answers with a response instead and keeps the inner
//!   error type, so an axum `Router`'s `Infallible` stays `Infallible`.
//!
//! # axum
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use http::Method;
//! use tower_spillway::priority::{Priority, PriorityLayer, RouteTable};
//!
//! let routes = RouteTable::new()
//!     .route(Some(Method::POST), "/payments", Priority::Critical)
//!     .route(None, "/analytics", Priority::Low);
//!
//! let app: Router = Router::new()
//!     .route("/payments", post(|| async { "paid" }))
//!     .route("/analytics", post(|| async { "counted" }))
//!     .layer(PriorityLayer::new(routes));
//! ```
//!
//! # hyper and tonic
//!
//! Services whose inner layers fail with `Overloaded` answer with proper
//! refusals behind [`RetryAfterLayer`](retry_after::RetryAfterLayer): HTTP
//! clients get `503 Service Unavailable` and `Retry-After`, tonic clients get
//! `Status::unavailable` with `grpc-retry-pushback-ms` in its metadata.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_spillway::{priority::{GrpcMethods, Priority, PriorityLayer}, retry_after::RetryAfterLayer};
//!
//! let layers = ServiceBuilder::new()
//!     .layer(RetryAfterLayer::new())
//!     .layer(PriorityLayer::new(GrpcMethods::new().service("shop.Payments", Priority::Critical)));
//! // tonic::transport::Server::builder().layer(layers).add_service(...)
//! # let _ = layers;
//! ```
//!
//! # Features
//!
//! - `http` (default): the HTTP faces, refusal responses, header parsers;
//! - `tonic`: `From<Overloaded> for tonic::Status` (needs a newer compiler);
//! - `serde`: `Serialize` for `Overloaded` and stats snapshots;
//! - `tracing`: transition logs and periodic summaries;
//! - `metrics`: the layers' figures through the `metrics` facade
//!   (`metrics::MetricsReporter`), and the
//!   limiter's queue-wait and rtt histograms; every name, label and unit is
//!   in the table of the `metrics` module's docs;
//! - `spill`: `SpillLayer` and its drain over any `SpillStore`;
//!   `spill-sqlite` adds the embedded SQLite store (bundled, WAL, full
//!   durability), `spill-postgres` the fleet store on PostgreSQL, and
//!   `spill-redis` a drain source consuming Redis Streams;
//! - `rate-redis`: `RateLimitLayer` with its GCRA state in Redis, one quota
//!   shared by a fleet (see [`rate`](crate::rate#shared-quotas-in-redis)).
//!
//! [Tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod hint;
#[cfg(all(test, feature = "tracing"))]
mod log_recorder;
mod overloaded;
mod signal;
mod sync;
mod time;
mod windowed_min;

pub mod aggregate;
pub mod batch;
pub mod coalesce;
pub mod deadline;
pub mod degrade;
pub mod guard;
pub mod key;
pub mod limit;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod priority;
pub mod reject;
pub mod shed;
#[cfg(feature = "spill")]
#[cfg_attr(docsrs, doc(cfg(feature = "spill")))]
pub mod spill;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod grpc;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod rate;
pub mod retry_after;

pub use aggregate::{Aggregate, AggregateLayer, Merge};
pub use batch::{Batch, BatchLayer};
pub use coalesce::{Coalesce, CoalesceLayer};
pub use error::{BoxError, ConfigError};
pub use hint::RetryAfterPolicy;
pub use overloaded::{OverloadSource, Overloaded, Reason, find_overloaded, is_overloaded};
pub use priority::Priority;
pub use reject::{AsError, Reject};
pub use signal::LoadSignal;

/// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
