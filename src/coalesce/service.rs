use std::{
    any::Any,
    collections::HashMap,
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::{FutureExt, future::WeakShared};
use tower_layer::Layer;
use tower_service::Service;

use crate::key::KeyExtractor;

use super::{
    CloneResponse, Collected, Share,
    future::{BoxCall, Outcome, ResponseFuture},
};

/// The calls in flight, by key, shared by every service the layer makes.
///
/// Values are `WeakShared` handles of the calls, type-erased so the map can
/// live in the layer before the inner service's type is known. A handle that
/// no longer upgrades belongs to a call every waiter abandoned.
pub(crate) struct InFlight<K> {
    calls: Mutex<HashMap<K, Entry>>,
    next_id: AtomicU64,
    joined: AtomicU64,
    uncoalesced: AtomicU64,
}

/// Counters of a [`Coalesce`] (shared by every service its layer made), from
/// [`Coalesce::stats`] or [`CoalesceLayer::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CoalesceStats {
    /// Shared calls started (one per distinct key in flight).
    pub calls: u64,
    /// Requests that joined a call in flight instead of calling.
    pub joined: u64,
    /// Requests without a key, passed straight through.
    pub uncoalesced: u64,
    /// Distinct calls in flight now.
    pub in_flight: usize,
}

struct Entry {
    id: u64,
    call: Box<dyn Any + Send + Sync>,
}

impl<K> InFlight<K> {
    pub(crate) fn new() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            uncoalesced: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> CoalesceStats {
        CoalesceStats {
            calls: self.next_id.load(Ordering::Relaxed),
            joined: self.joined.load(Ordering::Relaxed),
            uncoalesced: self.uncoalesced.load(Ordering::Relaxed),
            in_flight: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K> fmt::Debug for InFlight<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("calls", &self.lock().len())
            .finish()
    }
}

/// Removes a call's key when the call completes or every waiter drops it: no
/// caching, and no entry outlives its call.
struct Forget<K: std::hash::Hash + Eq> {
    in_flight: Arc<InFlight<K>>,
    key: Option<K>,
    id: u64,
}

impl<K: std::hash::Hash + Eq> Drop for Forget<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut calls = self.in_flight.lock();
            if calls.get(&key).is_some_and(|e| e.id == self.id) {
                calls.remove(&key);
            }
        }
    }
}

/// Single-flight: requests with the same key that arrive while a call for that
/// key is in flight wait for it and share its response instead of calling
/// the inner service again. See the [module docs](super).
pub struct Coalesce<S, K, Key, M = CloneResponse> {
    inner: S,
    key: K,
    share: M,
    in_flight: Arc<InFlight<Key>>,
}

impl<S, K, Key> Coalesce<S, K, Key, CloneResponse> {
    /// Coalesces calls of `inner` keyed by `key`, sharing `Clone` responses;
    /// see [`CoalesceLayer::new`]. Clones of the service share one table of
    /// calls in flight.
    pub fn new<Req>(inner: S, key: K) -> Self
    where
        K: KeyExtractor<Req, Key = Option<Key>>,
    {
        Self::from_parts(inner, key, CloneResponse, Arc::new(InFlight::new()))
    }
}

impl<S, K, Key, M> Coalesce<S, K, Key, M> {
    pub(crate) fn from_parts(inner: S, key: K, share: M, in_flight: Arc<InFlight<Key>>) -> Self {
        Self {
            inner,
            key,
            share,
            in_flight,
        }
    }

    /// The number of distinct calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CoalesceStats {
        self.in_flight.stats()
    }
}

impl<S, K, Key, M, Req> Service<Req> for Coalesce<S, K, Key, M>
where
    S: Service<Req> + Clone,
    S::Future: Send + 'static,
    S::Error: Clone + Send + Sync + 'static,
    K: KeyExtractor<Req, Key = Option<Key>>,
    Key: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    M: Share<S::Response> + Clone + Send + 'static,
{
    type Response = M::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, S::Response, M::Shared, M::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let respond = M::response;
        let unshared = M::unshared;
        let Some(key) = self.key.key(&req) else {
            self.in_flight.uncoalesced.fetch_add(1, Ordering::Relaxed);
            return ResponseFuture::direct(self.inner.call(req), respond, unshared);
        };

        if let Some(shared) = self.joinable(&key) {
            self.in_flight.joined.fetch_add(1, Ordering::Relaxed);
            // Kept to call again if the response turns out not shareable;
            // polled ready only then.
            let recall = (self.inner.clone(), req);
            return ResponseFuture::waiting(shared, Some(recall), respond, unshared);
        }

        // The inner service is called without the table locked, so an inner
        // service that coalesces through the same table cannot deadlock. Two
        // callers racing through this gap each make a call; only the first is
        // shared.
        let id = self.in_flight.next_id.fetch_add(1, Ordering::Relaxed);
        let forget = Forget {
            in_flight: self.in_flight.clone(),
            key: Some(key.clone()),
            id,
        };
        let fut = self.inner.call(req);
        let share = self.share.clone();
        let call: BoxCall<M::Shared, M::Response, S::Error> = Box::pin(async move {
            let _forget = forget;
            let res = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(res)) => res,
                Ok(Err(err)) => return Outcome::Failed(err),
                Err(panic) => return Outcome::Panicked(Arc::new(Mutex::new(Some(panic)))),
            };
            match AssertUnwindSafe(share.collect(res)).catch_unwind().await {
                Ok(Collected::Shared(sh)) => Outcome::Shared(sh),
                Ok(Collected::Unshared(own)) => Outcome::Own(Arc::new(Mutex::new(Some(own)))),
                Err(panic) => Outcome::Panicked(Arc::new(Mutex::new(Some(panic)))),
            }
        });
        let shared = call.shared();
        if let Some(weak) = shared.downgrade() {
            let mut calls = self.in_flight.lock();
            // A call registered meanwhile keeps its place. The handle that
            // proves it alive may be its last one, if its waiters all left
            // this instant: dropping it drops the call, whose `Forget` locks
            // the table. So it is dropped only once the table is unlocked.
            let registered = calls.get(&key).and_then(|entry| {
                entry
                    .call
                    .downcast_ref::<WeakShared<BoxCall<M::Shared, M::Response, S::Error>>>()?
                    .upgrade()
            });
            if registered.is_none() {
                calls.insert(
                    key,
                    Entry {
                        id,
                        call: Box::new(weak),
                    },
                );
            }
            drop(calls);
            drop(registered);
        }
        ResponseFuture::waiting(shared, None, respond, unshared)
    }
}

impl<S, K, Key, M> Coalesce<S, K, Key, M>
where
    Key: std::hash::Hash + Eq,
{
    /// The call in flight for `key`, if there is one that still has waiters.
    fn joinable<Sh, R, E>(
        &self,
        key: &Key,
    ) -> Option<futures_util::future::Shared<BoxCall<Sh, R, E>>>
    where
        Sh: Clone + 'static,
        R: 'static,
        E: Clone + 'static,
    {
        let calls = self.in_flight.lock();
        calls
            .get(key)?
            .call
            .downcast_ref::<WeakShared<BoxCall<Sh, R, E>>>()?
            .upgrade()
    }
}

impl<S: Clone, K: Clone, Key, M: Clone> Clone for Coalesce<S, K, Key, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key.clone(),
            share: self.share.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl<S: fmt::Debug, K, Key, M: fmt::Debug> fmt::Debug for Coalesce<S, K, Key, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("share", &self.share)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// Applies [`Coalesce`]; every service it makes shares one table of calls in
/// flight, so a router's routes coalesce together.
pub struct CoalesceLayer<K, Key, M = CloneResponse> {
    key: K,
    share: M,
    in_flight: Arc<InFlight<Key>>,
}

impl<K, Key> CoalesceLayer<K, Key, CloneResponse> {
    /// The generic face: requests are keyed by `key` (a
    /// [`KeyExtractor`] whose key is an `Option`, such as a closure
    /// `Fn(&Req) -> Option<Key>` through [`key_fn`](crate::key::key_fn);
    /// `None` is never shared), responses must be `Clone`, and
    /// errors are shared too, so the inner error type must be `Clone` (wrap a
    /// non-`Clone` error in an `Arc` with `map_err`).
    pub fn new<Req>(key: K) -> Self
    where
        K: KeyExtractor<Req, Key = Option<Key>>,
    {
        Self {
            key,
            share: CloneResponse,
            in_flight: Arc::new(InFlight::new()),
        }
    }
}

#[cfg(feature = "http")]
impl CoalesceLayer<super::HttpKey, super::HttpRequestKey, super::BufferBody> {
    /// The HTTP face: shares `GET` and `HEAD` requests with equal method, URI,
    /// `Host`, credentials and `Accept*` headers ([`HttpKey`](super::HttpKey)),
    /// never conditional or range requests, and only responses that set no
    /// cookie, are not `private` or `no-store`, vary on nothing outside the
    /// key and say their length, by buffering response bodies of up to 1 MiB
    /// ([`BufferBody`](super::BufferBody); change it with
    /// [`max_body`](Self::max_body)).
    pub fn http() -> Self {
        Self {
            key: super::HttpKey::new(),
            share: super::BufferBody::default(),
            in_flight: Arc::new(InFlight::new()),
        }
    }

    /// Shares bodies of up to `max` bytes; larger responses go to the caller
    /// that made the call, and the other waiters make their own calls.
    #[must_use]
    pub fn max_body(mut self, max: usize) -> Self {
        self.share = super::BufferBody::new(max);
        self
    }
}

impl<K, Key, M> CoalesceLayer<K, Key, M> {
    /// A snapshot of the counters of every service this layer made.
    pub fn stats(&self) -> CoalesceStats {
        self.in_flight.stats()
    }

    /// Shares responses with `share` instead.
    #[must_use]
    pub fn share<M2>(self, share: M2) -> CoalesceLayer<K, Key, M2> {
        CoalesceLayer {
            key: self.key,
            share,
            in_flight: self.in_flight,
        }
    }
}

impl<S, K, Key, M> Layer<S> for CoalesceLayer<K, Key, M>
where
    K: Clone,
    M: Clone,
{
    type Service = Coalesce<S, K, Key, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce::from_parts(
            inner,
            self.key.clone(),
            self.share.clone(),
            self.in_flight.clone(),
        )
    }
}

impl<K: Clone, Key, M: Clone> Clone for CoalesceLayer<K, Key, M> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            share: self.share.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl<K, Key, M: fmt::Debug> fmt::Debug for CoalesceLayer<K, Key, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("share", &self.share)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}
