use std::{fmt, num::NonZeroUsize, sync::Arc};

use tower_layer::Layer;

use super::{
    Quota,
    gcra::{Limiter, Store},
    service::RateLimit,
};
use crate::{
    AsError, ConfigError, RetryAfterPolicy,
    http::{AsResponse, MakeRejection, ProblemDetails},
    key::{Global, KeyType},
    retry_after::MAX_HINT,
};

/// The default bound on the keys a keyed limit remembers.
pub(crate) const DEFAULT_MAX_KEYS: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

/// Limits the rate of requests with GCRA (the generic cell rate algorithm,
/// from `governor`), globally or per key.
///
/// - [`new`](Self::new): one global bucket on the generic face;
///   [`builder`](Self::builder) for the rest:
///   [`keyed`](RateLimitBuilder::keyed) gives one bucket per key, at most
///   [`max_keys`](RateLimitBuilder::max_keys) remembered;
/// - the generic face refuses with [`Overloaded`](crate::Overloaded) errors
///   (reason `RateLimited`, `retry_after` the exact GCRA wait);
///   [`http`](RateLimitBuilder::http) answers `429` with that wait as
///   `Retry-After` (rounded up, never 0) and the `RateLimit-Policy` /
///   `RateLimit` fields, or a trailers-only `RESOURCE_EXHAUSTED` with
///   `grpc-retry-pushback-ms` for gRPC calls;
/// - the buckets are created once, when the layer is built: every service it
///   makes (per route, per connection, per request) draws from them;
///   [`handle`](Self::handle) reads them and changes the quota at runtime.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_spillway::rate::{PeerIp, Quota, RateLimitLayer};
///
/// let per_ip = RateLimitLayer::builder(Quota::per_second(20)?.burst(40)?)
///     .keyed(PeerIp::new())
///     .http()
///     .build();
/// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(per_ip);
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
pub struct RateLimitLayer<X: KeyType = Global, R = AsError> {
    extractor: Arc<X>,
    limiter: Arc<Limiter<X::Key>>,
    reject: R,
    fields_on_success: bool,
}

impl<X: KeyType, R: Clone> Clone for RateLimitLayer<X, R> {
    fn clone(&self) -> Self {
        Self {
            extractor: Arc::clone(&self.extractor),
            limiter: Arc::clone(&self.limiter),
            reject: self.reject.clone(),
            fields_on_success: self.fields_on_success,
        }
    }
}

impl<X: KeyType + fmt::Debug, R: fmt::Debug> fmt::Debug for RateLimitLayer<X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("quota", &self.limiter.quota())
            .field("reject", &self.reject)
            .finish()
    }
}

impl RateLimitLayer<Global, AsError> {
    /// One bucket for every request, on the generic face.
    pub fn new(quota: Quota) -> Self {
        Self::builder(quota).build()
    }

    /// Configures a limit of `quota`: set the options in any order, then
    /// [`build`](RateLimitBuilder::build) it.
    pub fn builder(quota: Quota) -> RateLimitBuilder {
        RateLimitBuilder {
            quota,
            extractor: Global,
            keyed: false,
            max_keys: DEFAULT_MAX_KEYS,
            reject: AsError,
            fields_on_success: false,
        }
    }
}

impl<X: KeyType, R> RateLimitLayer<X, R> {
    /// A handle on the buckets: counts, key memory, runtime quota changes.
    pub fn handle(&self) -> RateLimitHandle<X::Key> {
        RateLimitHandle {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The options of a [`RateLimitLayer`], a plain value: set them in any
/// order, then [`build`](Self::build) the layer, which creates its buckets
/// once.
#[derive(Debug, Clone)]
pub struct RateLimitBuilder<X = Global, R = AsError> {
    quota: Quota,
    extractor: X,
    /// `false` until [`keyed`](Self::keyed): one bucket, no key table.
    keyed: bool,
    max_keys: NonZeroUsize,
    reject: R,
    fields_on_success: bool,
}

impl<X, R> RateLimitBuilder<X, R> {
    /// One bucket per key that `extractor` picks (a [`PeerIp`](super::PeerIp),
    /// a [`HeaderKey`](super::HeaderKey), a closure), remembering at most
    /// [`max_keys`](Self::max_keys) keys (100,000 unless set).
    #[must_use]
    pub fn keyed<X2: KeyType>(self, extractor: X2) -> RateLimitBuilder<X2, R> {
        RateLimitBuilder {
            quota: self.quota,
            extractor,
            keyed: true,
            max_keys: self.max_keys,
            reject: self.reject,
            fields_on_success: self.fields_on_success,
        }
    }

    /// Bounds the keys a keyed limit remembers (at least 1; a global limit
    /// has one). Keys idle the longest are forgotten first, without any
    /// cleanup task; memory stays flat however many distinct keys arrive. A
    /// forgotten key starts again with a full burst, so under a flood of new
    /// keys a few honest keys may get a fresh burst early; pair per-key
    /// limits with a global one.
    pub fn max_keys(mut self, max_keys: usize) -> Result<Self, ConfigError> {
        self.max_keys = NonZeroUsize::new(max_keys)
            .ok_or(ConfigError::new("max_keys", "must be at least 1"))?;
        Ok(self)
    }

    /// The HTTP face: refusals are `429 Too Many Requests` responses whose
    /// `Retry-After` is the exact GCRA wait rounded up to whole seconds (never
    /// 0, never jittered: jitter could only make callers wait longer than
    /// needed), with `RateLimit-Policy` and `RateLimit` fields; gRPC calls get
    /// a trailers-only `RESOURCE_EXHAUSTED` with the wait in milliseconds.
    #[must_use]
    pub fn http(self) -> RateLimitBuilder<X, AsResponse<ProblemDetails>> {
        let exact = RetryAfterPolicy::new()
            .jitter(0.0)
            .and_then(|p| p.cap(MAX_HINT))
            .unwrap_or_default();
        self.rejection(ProblemDetails::new().retry_after(exact))
    }

    /// The HTTP face with refusal responses built by `make`. The
    /// `RateLimit-Policy` and `RateLimit` fields are added to whatever it
    /// builds.
    #[must_use]
    pub fn rejection<M: MakeRejection>(self, make: M) -> RateLimitBuilder<X, AsResponse<M>> {
        RateLimitBuilder {
            quota: self.quota,
            extractor: self.extractor,
            keyed: self.keyed,
            max_keys: self.max_keys,
            reject: AsResponse::new(make),
            fields_on_success: self.fields_on_success,
        }
    }

    /// Adds `RateLimit-Policy` and `RateLimit` (calls remaining, seconds
    /// until the burst is whole again) to admitted requests' responses too,
    /// on the HTTP face, so clients can slow down before they are refused.
    /// Off by default: it costs a small allocation per request.
    #[must_use]
    pub fn fields_on_success(mut self, on: bool) -> Self {
        self.fields_on_success = on;
        self
    }

    /// Creates the buckets and the layer.
    pub fn build(self) -> RateLimitLayer<X, R>
    where
        X: KeyType,
    {
        let store = if self.keyed {
            Store::keyed(self.max_keys)
        } else {
            Store::global()
        };
        RateLimitLayer {
            extractor: Arc::new(self.extractor),
            limiter: Arc::new(Limiter::new(self.quota, store)),
            reject: self.reject,
            fields_on_success: self.fields_on_success,
        }
    }
}

impl<S, X: KeyType, R: Clone> Layer<S> for RateLimitLayer<X, R> {
    type Service = RateLimit<S, X, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::clone(&self.extractor),
            Arc::clone(&self.limiter),
            self.reject.clone(),
            self.fields_on_success,
        )
    }
}

/// A cheap handle on a [`RateLimitLayer`]'s buckets.
///
/// ```
/// use tower_spillway::rate::{Quota, RateLimitLayer};
///
/// let layer = RateLimitLayer::new(Quota::per_second(100)?);
/// let handle = layer.handle();
/// handle.set_quota(Quota::per_second(50)?); // every service of the layer follows
/// assert_eq!(handle.quota(), Quota::per_second(50)?);
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
pub struct RateLimitHandle<K: std::hash::Hash + Eq + Clone> {
    limiter: Arc<Limiter<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> Clone for RateLimitHandle<K> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> fmt::Debug for RateLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// A [`RateLimitHandle`]'s figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// Calls allowed per second (the long-run rate).
    pub rate_per_sec: f64,
    /// The burst size.
    pub burst: u32,
    /// Requests allowed so far.
    pub allowed: u64,
    /// Requests refused so far.
    pub limited: u64,
    /// Keys remembered now.
    pub keys: usize,
    /// The most keys ever remembered.
    pub max_keys: usize,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimitHandle<K> {
    pub(crate) fn from_limiter(limiter: Arc<Limiter<K>>) -> Self {
        Self { limiter }
    }
}

impl<K: std::hash::Hash + Eq + Clone> RateLimitHandle<K> {
    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.limiter.quota()
    }

    /// Changes the quota for every service of the layer. Each key's history
    /// carries over: a caller that just spent its burst does not get a new one.
    pub fn set_quota(&self, quota: Quota) {
        self.limiter.set_quota(quota);
    }

    /// How many keys are remembered now (1 for a global limit).
    pub fn keys(&self) -> usize {
        self.limiter.store().len()
    }

    /// How many key slots are allocated: what the buckets' memory follows. It
    /// stays bounded however many distinct keys arrive.
    pub fn allocated_slots(&self) -> usize {
        self.limiter.store().allocated()
    }

    /// The figures of the limit now.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        let quota = self.quota();
        let (allowed, limited) = self.limiter.counts();
        RateLimitSnapshot {
            rate_per_sec: 1.0 / quota.replenish_interval().as_secs_f64(),
            burst: quota.burst_size(),
            allowed,
            limited,
            keys: self.keys(),
            max_keys: self.limiter.store().max_keys(),
        }
    }
}
