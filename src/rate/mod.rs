//! Rate limits with GCRA: refuse callers over their quota (server), and pace
//! calls to stay under a known quota (client).
//!
//! - [`RateLimitLayer`] refuses requests over a [`Quota`], globally or per key
//!   ([`PeerIp`], [`HeaderKey`], [`ApiKey`], any closure with
//!   [`key_fn`](crate::key::key_fn)).
//!   Refusals are [`Overloaded`](crate::Overloaded) with reason `RateLimited`
//!   and the exact wait until the next call conforms; the HTTP face answers
//!   `429` with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit`
//!   fields, and gRPC calls `RESOURCE_EXHAUSTED` with
//!   `grpc-retry-pushback-ms`.
//! - [`PaceLayer`] holds calls back (readiness pending, no busy loop) until
//!   the quota allows them, so a client never exceeds a quota it knows.
//!
//! The algorithm is `governor`'s GCRA, driven by `tokio::time` (tests with a
//! paused clock control it) over a store whose keyed state is bounded.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_spillway::rate::{Quota, RateLimitLayer};
//!
//! let limit = RateLimitLayer::builder(Quota::per_second(200)?).http().build();
//! let handle = limit.handle();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .route("/other", get(|| async { "ok" }))
//!     .layer(limit); // one limit for every route
//! // Later, from an admin endpoint:
//! handle.set_quota(Quota::per_second(100)?);
//! # Ok::<(), tower_spillway::ConfigError>(())
//! ```
//!
//! # Differences from tower's `RateLimit` and tower_governor
//!
//! - tower's `RateLimit` counts fixed windows and waits in `poll_ready`, per
//!   service instance: behind axum (one clone per request) or tonic (one per
//!   connection) it limits nothing overall and cannot refuse. Here the
//!   buckets live in the layer and refusals are immediate answers.
//! - tower_governor sends sub-second waits as `retry-after: 0` and its keyed
//!   state grows until the application runs a cleanup task. Here the wait is
//!   rounded up (never 0), exact (no jitter: a rate limit knows when the next
//!   call conforms), and the keyed state is bounded by
//!   [`max_keys`](RateLimitBuilder::max_keys) with no task to run.
//! - Quotas change at runtime through [`RateLimitHandle::set_quota`], keeping
//!   every key's history.

mod clock;
mod gcra;
mod key;
mod layer;
mod pace;
mod quota;
#[cfg(feature = "rate-redis")]
mod redis;
mod service;
mod store;

#[cfg(feature = "rate-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-redis")))]
pub use self::redis::{
    Fallback, RedisKey, RedisOptions, RedisSnapshot, RedisStore, SharedResponseFuture,
};
pub use key::{ApiKey, HeaderKey, KeyDigest, PeerIp};
pub use layer::{Local, RateLimitBuilder, RateLimitHandle, RateLimitLayer, RateLimitSnapshot};

/// The limit as [`RateLimitBuilder::http`] builds it: `429` refusals with the
/// exact wait and the `RateLimit` fields, one bucket per key of `X` (one in
/// all for [`Global`](crate::key::Global)).
pub type HttpRateLimitLayer<X = crate::key::Global> =
    RateLimitLayer<X, crate::http::AsResponse<crate::http::ProblemDetails>>;
pub use pace::{Pace, PaceLayer};
pub use quota::Quota;
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit, ResponseFuture};

#[cfg(test)]
mod tests;
