//! `Retry-After` backpressure: telling callers when to come back, and parsing
//! what servers tell us.
//!
//! An overloaded server should not just fail: it should say when a retry has a
//! chance. Over HTTP that is `503` (capacity) or `429` (quota) with a
//! `Retry-After` header; over gRPC it is `UNAVAILABLE` (14) or
//! `RESOURCE_EXHAUSTED` (8) with `grpc-retry-pushback-ms` (gRFC A6).
//!
//! - [`RetryAfterLayer`] turns [`Overloaded`](crate::Overloaded) errors from
//!   inner services into those answers and passes every other error through;
//! - [`RetryAfterPolicy`](crate::RetryAfterPolicy) computes the hint: the refusing layer's observation,
//!   jittered upwards so refused callers spread out, and capped;
//! - [`parse_retry_after`] and [`parse_pushback_ms`] read hints back, totally
//!   and with a cap, whatever a server sends;
//! - [`HonorRetryAfterLayer`] is the client half: it makes a hyper client or a
//!   tonic `Channel` wait out the cooldown a server asks for (shared by every
//!   clone, capped), and optionally retry refused calls with a
//!   [`RetryBudget`], full-jitter backoff and a replayable body
//!   ([`ReplayBody`]).
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_spillway::retry_after::{HonorRetryAfterLayer, ReplayBody, Retries};
//!
//! // Around a tonic `Channel` (here any service of `http` requests): wait out
//! // cooldowns, retry refused calls within the default budget.
//! let client = ServiceBuilder::new()
//!     .layer(HonorRetryAfterLayer::builder().retries(Retries::new().allow_non_idempotent(true)).build())
//!     .service_fn(|req: http::Request<ReplayBody<String>>| async move {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(()))
//!     });
//! # let _ = client;
//! ```
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_spillway::{Overloaded, Reason, BoxError, retry_after::RetryAfterLayer};
//! use tower::ServiceBuilder;
//!
//! // A hyper or tonic service whose inner layers fail with `Overloaded`
//! // answers with 503 + Retry-After instead of a bare error.
//! let svc = ServiceBuilder::new()
//!     .layer(RetryAfterLayer::new())
//!     .service_fn(|_req: http::Request<String>| async {
//!         Err::<http::Response<String>, BoxError>(Overloaded::new(Reason::Shed).into())
//!     });
//! # let _ = svc;
//! ```
//!
//! # Differences from tower and tower_governor
//!
//! tower's `LoadShed` and `ConcurrencyLimit` fail with errors that tonic maps to
//! `UNAVAILABLE` without a pushback and axum cannot serve without a
//! `HandleErrorLayer`. tower_governor answers `429` but rounds sub-second waits
//! down to `retry-after: 0`, which invites an immediate retry; here the hint is
//! rounded up and never below one second.
//!
//! On the client side, tower's `Retry` cannot clone an `http::Request`, reads
//! no hint, and retries each call on its own; [`HonorRetryAfterLayer`] backs
//! the whole client off at once, replays bodies from a bounded copy, and
//! bounds retries by count and by budget.

#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod parse;
#[cfg(feature = "http")]
mod server;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use client::{
    HonorFuture, HonorRetryAfter, HonorRetryAfterBuilder, HonorRetryAfterHandle,
    HonorRetryAfterLayer, HonorRetryAfterSnapshot, RETRY_ATTEMPT, ReplayBody, Retries, RetryBudget,
};

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use parse::{MAX_HINT, parse_pushback_ms, parse_retry_after};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use server::{ResponseFuture, RetryAfter, RetryAfterLayer};
