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
pub struct RateLimitLayer<X: KeyType = Global, R = AsError, B = Local> {
    extractor: Arc<X>,
    /// The buckets ([`Local`]), or the fallback's ([`RedisStore`](super::RedisStore)).
    limiter: Arc<Limiter<X::Key>>,
    reject: R,
    fields_on_success: bool,
    backend: B,
}

/// Where a [`RateLimitLayer`]'s buckets live when they live in this process:
/// the default. With the feature `rate-redis`,
/// [`RateLimitBuilder::redis`] puts them in Redis instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl<X: KeyType, R: Clone, B: Clone> Clone for RateLimitLayer<X, R, B> {
    fn clone(&self) -> Self {
        Self {
            extractor: Arc::clone(&self.extractor),
            limiter: Arc::clone(&self.limiter),
            reject: self.reject.clone(),
            fields_on_success: self.fields_on_success,
            backend: self.backend.clone(),
        }
    }
}

impl<X: KeyType + fmt::Debug, R: fmt::Debug, B: fmt::Debug> fmt::Debug for RateLimitLayer<X, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("quota", &self.limiter.quota())
            .field("reject", &self.reject)
            .field("backend", &self.backend)
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
            backend: Local,
        }
    }
}

impl<X: KeyType, R> RateLimitLayer<X, R, Local> {
    /// A handle on the buckets: counts, key memory, runtime quota changes.
    pub fn handle(&self) -> RateLimitHandle<X::Key> {
        RateLimitHandle::from_limiter(Arc::clone(&self.limiter))
    }
}

#[cfg(feature = "rate-redis")]
impl<X: KeyType, R> RateLimitLayer<X, R, super::RedisStore> {
    /// A handle on the shared limit: counts, health (in fallback or not),
    /// quota changes for the whole fleet.
    pub fn handle(&self) -> RateLimitHandle<X::Key> {
        RateLimitHandle {
            limiter: Arc::clone(&self.limiter),
            redis: Some(self.backend.clone()),
        }
    }
}

/// The options of a [`RateLimitLayer`], a plain value: set them in any
/// order, then [`build`](Self::build) the layer, which creates its buckets
/// once.
#[derive(Debug, Clone)]
pub struct RateLimitBuilder<X = Global, R = AsError, B = Local> {
    quota: Quota,
    extractor: X,
    /// `false` until [`keyed`](Self::keyed): one bucket, no key table.
    keyed: bool,
    max_keys: NonZeroUsize,
    reject: R,
    fields_on_success: bool,
    /// [`Local`], or the Redis client and options until `build`.
    backend: B,
}

impl<X, R, B> RateLimitBuilder<X, R, B> {
    /// One bucket per key that `extractor` picks (a [`PeerIp`](super::PeerIp),
    /// a [`HeaderKey`](super::HeaderKey), a closure), remembering at most
    /// [`max_keys`](Self::max_keys) keys (100,000 unless set).
    #[must_use]
    pub fn keyed<X2: KeyType>(self, extractor: X2) -> RateLimitBuilder<X2, R, B> {
        RateLimitBuilder {
            quota: self.quota,
            extractor,
            keyed: true,
            max_keys: self.max_keys,
            reject: self.reject,
            fields_on_success: self.fields_on_success,
            backend: self.backend,
        }
    }

    /// Bounds the keys a keyed limit remembers (at least 1; a global limit
    /// has one). Keys idle the longest are forgotten first, without any
    /// cleanup task; memory stays flat however many distinct keys arrive.
    /// The bound is kept in up to 64 shards, each forgetting its own oldest
    /// keys, so a key idle for a few percent of `max_keys` new keys may go
    /// when its shard happens to take more of them than its share. A
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
    pub fn http(self) -> RateLimitBuilder<X, AsResponse<ProblemDetails>, B> {
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
    pub fn rejection<M: MakeRejection>(self, make: M) -> RateLimitBuilder<X, AsResponse<M>, B> {
        RateLimitBuilder {
            quota: self.quota,
            extractor: self.extractor,
            keyed: self.keyed,
            max_keys: self.max_keys,
            reject: AsResponse::new(make),
            fields_on_success: self.fields_on_success,
            backend: self.backend,
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

    /// The in-process buckets: one global, or one per key.
    fn store<K: std::hash::Hash + Eq + Clone>(&self) -> Store<K> {
        if self.keyed {
            Store::keyed(self.max_keys)
        } else {
            Store::global()
        }
    }
}

impl<X, R> RateLimitBuilder<X, R, Local> {
    /// Keeps the buckets in Redis, shared by every instance built with the
    /// same [`RedisOptions::new`](super::RedisOptions::new) prefix: one
    /// script call per check (batched with the other checks under way),
    /// within the options' timeout, or else decided by their
    /// [`Fallback`](super::Fallback). See the
    /// [module docs](super#shared-quotas-in-redis).
    ///
    /// The layer's services need an inner service that is `Clone` (the
    /// request waits for Redis in the response future, with the service
    /// that was made ready) and a key that is [`RedisKey`](super::RedisKey).
    /// `client` is a [`redis::Client`] for one server, or a
    /// [`redis::cluster::ClusterClient`] for a Redis Cluster (see
    /// [`RedisClient`](super::RedisClient)).
    ///
    /// Building needs no Redis and no runtime: the connection is made in
    /// the background, on the runtime that builds the layer (or else with
    /// the first request), and requests that come before it is up wait at
    /// most the timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{Router, routing::get};
    /// use tower_spillway::rate::{Fallback, PeerIp, Quota, RateLimitLayer, RedisOptions};
    ///
    /// let redis = redis::Client::open("redis://127.0.0.1:6379/").expect("a valid URL");
    /// // 500 calls a second for the whole fleet; while Redis is out of
    /// // reach each instance admits its share on its own (125 a second in a
    /// // fleet of 4: the instances count each other in Redis).
    /// let options = RedisOptions::new("shop:api")
    ///     .timeout(Duration::from_millis(5))?
    ///     .fallback(Fallback::LocalShare);
    /// let limit = RateLimitLayer::builder(Quota::per_second(500)?)
    ///     .http()
    ///     .redis(redis.clone(), options.clone())
    ///     .build();
    /// let handle = limit.handle(); // `set_quota` here changes every instance's
    ///
    /// // Per caller too: 20 a second for each peer address, fleet-wide.
    /// let per_ip = RateLimitLayer::builder(Quota::per_second(20)?)
    ///     .keyed(PeerIp::new())
    ///     .http()
    ///     .redis(redis, RedisOptions::new("shop:api:ip"))
    ///     .build();
    ///
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "ok" }))
    ///     .layer(per_ip)
    ///     .layer(limit);
    /// # let _ = (app, handle);
    /// # Ok::<(), tower_spillway::ConfigError>(())
    /// ```
    #[cfg(feature = "rate-redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-redis")))]
    #[must_use]
    pub fn redis(
        self,
        client: impl Into<super::RedisClient>,
        options: super::RedisOptions,
    ) -> RateLimitBuilder<X, R, (super::RedisClient, super::RedisOptions)> {
        RateLimitBuilder {
            quota: self.quota,
            extractor: self.extractor,
            keyed: self.keyed,
            max_keys: self.max_keys,
            reject: self.reject,
            fields_on_success: self.fields_on_success,
            backend: (client.into(), options),
        }
    }

    /// Creates the buckets and the layer.
    pub fn build(self) -> RateLimitLayer<X, R>
    where
        X: KeyType,
    {
        let store = self.store();
        RateLimitLayer {
            extractor: Arc::new(self.extractor),
            limiter: Arc::new(Limiter::new(self.quota, store)),
            reject: self.reject,
            fields_on_success: self.fields_on_success,
            backend: Local,
        }
    }
}

#[cfg(feature = "rate-redis")]
impl<X, R> RateLimitBuilder<X, R, (super::RedisClient, super::RedisOptions)> {
    /// Creates the layer: the fallback's local buckets (at this instance's
    /// share of the quota) and the queue to Redis, whose task starts with
    /// the first request.
    pub fn build(self) -> RateLimitLayer<X, R, super::RedisStore>
    where
        X: KeyType,
    {
        let store = self.store();
        let (client, options) = self.backend;
        let instances = options.instances.unwrap_or(1);
        let limiter = Arc::new(Limiter::new(self.quota.share(instances), store));
        let fallback = Arc::clone(&limiter);
        let adopted = Box::new(move |share: Quota| fallback.set_quota(share));
        RateLimitLayer {
            extractor: Arc::new(self.extractor),
            limiter,
            reject: self.reject,
            fields_on_success: self.fields_on_success,
            backend: super::RedisStore::new(client, &options, self.quota, adopted),
        }
    }
}

impl<S, X: KeyType, R: Clone, B: Clone> Layer<S> for RateLimitLayer<X, R, B> {
    type Service = RateLimit<S, X, R, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::clone(&self.extractor),
            Arc::clone(&self.limiter),
            self.reject.clone(),
            self.fields_on_success,
            self.backend.clone(),
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
    /// The buckets, or a shared limit's fallback.
    limiter: Arc<Limiter<K>>,
    #[cfg(feature = "rate-redis")]
    redis: Option<super::RedisStore>,
}

impl<K: std::hash::Hash + Eq + Clone> Clone for RateLimitHandle<K> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            #[cfg(feature = "rate-redis")]
            redis: self.redis.clone(),
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
    /// A Redis-backed limit's health; `None` for a local one. (Its `keys`
    /// are the fallback's: the keys in Redis are Redis's to count.)
    #[cfg(feature = "rate-redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-redis")))]
    pub redis: Option<super::RedisSnapshot>,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimitHandle<K> {
    pub(crate) fn from_limiter(limiter: Arc<Limiter<K>>) -> Self {
        Self {
            limiter,
            #[cfg(feature = "rate-redis")]
            redis: None,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> RateLimitHandle<K> {
    /// The quota in force (a shared limit's: the fleet's, not this
    /// instance's share).
    pub fn quota(&self) -> Quota {
        #[cfg(feature = "rate-redis")]
        if let Some(redis) = &self.redis {
            return redis.shared().fleet().quota;
        }
        self.limiter.quota()
    }

    /// Changes the quota for every service of the layer. Each key's history
    /// carries over: a caller that just spent its burst does not get a new one.
    ///
    /// On a Redis-backed limit, the quota of the whole fleet: in force here
    /// at once, written to Redis with the next batch (retried until Redis
    /// takes it), and read back by every other instance with its next batch.
    pub fn set_quota(&self, quota: Quota) {
        #[cfg(feature = "rate-redis")]
        if let Some(redis) = &self.redis {
            let shared = redis.shared();
            self.limiter.set_quota(shared.share(&quota));
            shared.publish(quota);
            return;
        }
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
        let (allowed, limited) = self.counts();
        RateLimitSnapshot {
            rate_per_sec: 1.0 / quota.replenish_interval().as_secs_f64(),
            burst: quota.burst_size(),
            allowed,
            limited,
            keys: self.keys(),
            max_keys: self.limiter.store().max_keys(),
            #[cfg(feature = "rate-redis")]
            redis: self.redis.as_ref().map(|r| r.shared().snapshot()),
        }
    }

    /// Requests allowed and refused, by Redis or the fallback.
    fn counts(&self) -> (u64, u64) {
        #[cfg(feature = "rate-redis")]
        if let Some(redis) = &self.redis {
            return redis.shared().counts();
        }
        self.limiter.counts()
    }
}
