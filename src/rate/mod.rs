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
//!
//! # Shared quotas in Redis
//!
//! With the feature `rate-redis`, `RateLimitBuilder::redis` keeps the
//! buckets in Redis, so a fleet of instances behind a load balancer shares
//! one quota (globally, or per key of a type that names itself the same way
//! on every instance: `RedisKey`). The layer, its faces and its fields are
//! the same; what changes is where the GCRA state lives:
//!
//! - **One script per batch.** Each bucket is one Redis key,
//!   `{<prefix>:<key name>}`, holding the key's theoretical arrival time on
//!   Redis's own clock (`TIME`: the instances' clocks do not matter) and
//!   expiring when it passes, so a key lives at most one burst period. A
//!   check is a Lua script (`EVALSHA`, loaded once, loaded again if Redis
//!   answers `NOSCRIPT`), atomic like every Redis script.
//! - **Batched and pipelined.** The services queue their checks to one task
//!   per layer, which takes everything queued at once: the checks of one
//!   key fold into one count, decided in arrival order, and up to 64 keys go
//!   into one script call; the calls go out as one pipeline while the
//!   previous pipelines are under way, at most four at a time. A busy
//!   instance pays a round trip per batch, not per request, and Redis one
//!   script call per 64 keys.
//! - **Redis Cluster.** Give `redis` a `redis::cluster::ClusterClient`
//!   instead of a `redis::Client` (`RedisClient`). The braces make each
//!   bucket's whole name its hash tag, so buckets spread over the shards by
//!   key; a batch is grouped by hash slot, since a script may only touch
//!   one slot's keys, and each slot's calls go to the node that serves it,
//!   all at once. The quota key is one slot of its own, read with each
//!   batch like the buckets.
//! - **Bounded wait, chosen fallback.** A request waits for its answer at
//!   most the timeout (`RedisOptions::timeout`, 5 ms unless set), then the
//!   `Fallback` decides it: a local GCRA at this instance's share of the
//!   quota (the default; the share is the quota divided by the number of
//!   instances, which count each other in Redis, `{<prefix>}:instances`,
//!   unless `RedisOptions::instances` sets it; and it is charged for what
//!   Redis admits here, so an instance that took more than its share has
//!   none left),
//!   allow, or refuse. An error, a broken connection or three timeouts in a
//!   row put the whole limit in fallback — requests then do not wait at
//!   all — until a probe (every 100 ms) finds Redis answering within the
//!   timeout. Entering and leaving fallback are logged (feature `tracing`),
//!   and the handle's snapshot has the state and the counts
//!   (`RateLimitSnapshot::redis`).
//! - **One quota for the fleet.** `RateLimitHandle::set_quota` on any
//!   instance writes the quota to `{<prefix>}:quota`; every instance reads
//!   it with each pipeline and follows.
//! - **Where it is not exact.** While an instance is in fallback it admits
//!   its share on top of what Redis admits the others, so a fleet with some
//!   instances cut off can pass up to their shares more than the quota
//!   (with all cut off, the shares add up to it). A check whose caller gave
//!   up at the timeout may still be counted by Redis when the batch lands.
//!   Pick a timeout above the connection's usual p99 (see below) so that
//!   neither happens outside an incident.
//!
//! What a check costs (BENCHMARKS.md, "Rate limits shared through Redis";
//! the project's 2-core VM, Redis on loopback, median of three runs): one
//! check alone adds 61 µs at the median and 198 µs at the 99th percentile
//! (the local GCRA takes 0.1 µs), about one round trip and a few task
//! wake-ups. Under concurrent load one instance gets 177,000 checks a second
//! through Redis for a global limit (64 callers; every batch is one script
//! call), and 88,000 for a keyed one over 10,000 keys.

mod clock;
mod gcra;
mod key;
mod layer;
mod learn;
mod pace;
mod quota;
#[cfg(feature = "rate-redis")]
mod redis;
mod service;
mod store;

#[cfg(feature = "rate-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-redis")))]
pub use self::redis::{
    Fallback, RedisClient, RedisKey, RedisOptions, RedisSnapshot, RedisStore, SharedResponseFuture,
};
pub use key::{ApiKey, HeaderKey, KeyDigest, PeerIp};
pub use layer::{Local, RateLimitBuilder, RateLimitHandle, RateLimitLayer, RateLimitSnapshot};

/// The limit as [`RateLimitBuilder::http`] builds it: `429` refusals with the
/// exact wait and the `RateLimit` fields, one bucket per key of `X` (one in
/// all for [`Global`](crate::key::Global)), kept in this process ([`Local`])
/// or, with the feature `rate-redis`, in Redis (`HttpRateLimitLayer<X,
/// RedisStore>`).
pub type HttpRateLimitLayer<X = crate::key::Global, B = Local> =
    RateLimitLayer<X, crate::http::AsResponse<crate::http::ProblemDetails>, B>;
pub use learn::{LearnFuture, LearnPace, LearnPaceHandle, LearnPaceLayer, LearnPaceSnapshot};
pub use pace::{Pace, PaceLayer};
pub use quota::Quota;
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit, ResponseFuture};

#[cfg(test)]
mod tests;
