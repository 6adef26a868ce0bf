//! Telling requests apart: the one trait, [`KeyExtractor`], through which rate
//! limits, cohorts and coalescing read a request's key.

use std::{fmt, hash::Hash, marker::PhantomData};

/// The key type of a [`KeyExtractor`], whatever the request type.
pub trait KeyType {
    /// The key; kept in memory for every recently seen caller.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
}

/// Picks the key of a request: which caller it comes from, or which calls
/// are the same.
///
/// One trait for every layer that tells requests apart: a
/// [`RateLimitLayer`](crate::rate::RateLimitLayer) keeps one bucket per key
/// (a missing key is a key too, so requests without one share a bucket);
/// [`Cohorts`](crate::priority::Cohorts) put the callers of a key
/// `Option<T>` in one cohort (`None`: the caller is unknown, and gets none);
/// a [`CoalesceLayer`](crate::coalesce::CoalesceLayer) shares one call among
/// requests of equal key `Option<T>` (`None`: never shared). The HTTP
/// extractors are in [`rate`](crate::rate) ([`PeerIp`](crate::rate::PeerIp),
/// [`HeaderKey`](crate::rate::HeaderKey), [`ApiKey`](crate::rate::ApiKey)) and
/// [`coalesce`](crate::coalesce) ([`HttpKey`](crate::coalesce::HttpKey)).
///
/// Any closure `Fn(&Req) -> K` becomes a key extractor with [`key_fn`], so
/// any request type can be keyed:
///
/// ```
/// use tower_spillway::{key::key_fn, rate::{Quota, RateLimitLayer}};
///
/// let by_tenant = key_fn(|req: &http::Request<()>| req.headers().get("x-tenant").cloned());
/// let layer = RateLimitLayer::builder(Quota::per_second(10)?).keyed(by_tenant).build();
/// # let _ = layer;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
pub trait KeyExtractor<Req>: KeyType {
    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

/// A closure as a [`KeyExtractor`]; see [`key_fn`].
pub struct KeyFn<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

impl<F: Clone, K> Clone for KeyFn<F, K> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K> fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

/// Keys requests with a closure.
pub fn key_fn<Req, K, F>(f: F) -> KeyFn<F, K>
where
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    KeyFn {
        f,
        _key: PhantomData,
    }
}

impl<F, K> KeyType for KeyFn<F, K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;
}

impl<Req, F, K> KeyExtractor<Req> for KeyFn<F, K>
where
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn key(&self, req: &Req) -> K {
        (self.f)(req)
    }
}

/// One key for every request: a global rate limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyType for Global {
    type Key = ();
}

impl<Req> KeyExtractor<Req> for Global {
    #[inline]
    fn key(&self, _req: &Req) {}
}
