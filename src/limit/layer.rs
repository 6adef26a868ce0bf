use std::{sync::Arc, time::Duration};

use tower_layer::Layer;

#[cfg(feature = "http")]
use super::HttpOutcomes;
use super::{
    AdaptiveLimit, Algorithm, ByResult, LimitHandle, Reserved, admission::Shared,
    queue::QueueConfig,
};
#[cfg(feature = "http")]
use crate::http::{AsResponse, ProblemDetails};
use crate::{AsError, priority::FromExtensions};

/// Applies an adaptive concurrency limit, with a bounded, priority-ordered
/// wait queue, to the services it wraps.
///
/// All services made by one layer (every route of an axum `Router`, every
/// connection of a tonic server) share one limit: the state is created in
/// [`new`](Self::new) and `layer()` only clones an `Arc`.
///
/// Type parameters: `R` answers refusals ([`AsError`] or
/// [`AsResponse`](crate::http::AsResponse)), `C` classifies outcomes
/// ([`ByResult`] or [`HttpOutcomes`](super::HttpOutcomes)), `K` finds a
/// request's priority ([`FromExtensions`] by default).
///
/// Set the options before the layer is cloned or applied: they change the
/// shared state, and doing so on a shared layer panics.
#[derive(Debug)]
pub struct AdaptiveLimitLayer<R = AsError, C = ByResult, K = FromExtensions> {
    shared: Arc<Shared>,
    reject: R,
    outcomes: C,
    classify: K,
}

impl<R: Clone, C: Clone, K: Clone> Clone for AdaptiveLimitLayer<R, C, K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            reject: self.reject.clone(),
            outcomes: self.outcomes.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl AdaptiveLimitLayer {
    /// A limit driven by `algorithm`, on the generic face: refusals are
    /// [`Overloaded`](crate::Overloaded) errors, responses are successes and
    /// inner errors drops.
    ///
    /// A request that finds the limit reached waits, by priority, for up to
    /// 1 s; it is let in only when the forecast wait (the waiters ahead of it
    /// and the higher priorities still arriving, over the measured service
    /// rate) is at most half that, and refused at once otherwise. See
    /// [`max_queue`](Self::max_queue) for the queue's length.
    pub fn new<A>(algorithm: A) -> Self
    where
        A: Algorithm + Send + 'static,
    {
        Self {
            shared: Arc::new(Shared::new(Box::new(algorithm), QueueConfig::default())),
            reject: AsError,
            outcomes: ByResult::new(),
            classify: FromExtensions,
        }
    }
}

impl<R, C, K> AdaptiveLimitLayer<R, C, K> {
    fn configure(&mut self, f: impl FnOnce(&mut QueueConfig)) {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => {
                f(&mut shared.config);
                shared.reconfigured();
            }
            None => panic!("configure an AdaptiveLimitLayer before cloning or applying it"),
        }
    }

    /// How many requests may wait for a permit. Zero refuses at once at the
    /// limit. When the queue is full, a request refuses the newest waiter of
    /// the lowest priority below its own, or is refused.
    ///
    /// By default, once the algorithm has measured an rtt, the queue holds
    /// at most two limits' worth (about two round trips of work, and at least
    /// 8), never more than 1,024: enough to keep the backend busy through any
    /// wobble of the arrivals, little enough that the backlog a spike leaves
    /// drains within a few round trips and the calm traffic after it is
    /// queued, not refused. Each tier below Critical may then fill only a
    /// share of it (High three quarters, Default half, Low a quarter), so a
    /// tier at the margin leaves room for those above it. Setting a length
    /// fixes it and lifts the shares: a full queue then makes room for a request
    /// by refusing the newest waiter of a lower priority.
    #[must_use]
    pub fn max_queue(mut self, len: usize) -> Self {
        self.configure(|c| {
            c.max_len = len;
            c.auto_len = false;
        });
        self
    }

    /// How long a request may wait for a permit (default 1 s).
    #[must_use]
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.configure(|c| c.timeout = timeout);
        self
    }

    /// CoDel-style standing-queue rule (off by default): once the queue has
    /// not been empty for `interval`, the queue is no longer absorbing a
    /// burst but holding a backlog, and a waiter below Critical may only wait
    /// `short_timeout`. Waiters past their time are refused when they reach
    /// the head of the queue, never run. The forecast at the door already
    /// keeps waits short; this rule trades refusals after a wait for an even
    /// shorter queue.
    #[must_use]
    pub fn standing_queue(mut self, interval: Duration, short_timeout: Duration) -> Self {
        self.configure(|c| c.standing = Some((interval, short_timeout)));
        self
    }

    /// Turns the standing-queue rule off (the default): every waiter may wait
    /// the full [`queue_timeout`](Self::queue_timeout).
    #[must_use]
    pub fn without_standing_queue(mut self) -> Self {
        self.configure(|c| c.standing = None);
        self
    }

    /// Reserves shares of the limit for priorities.
    #[must_use]
    pub fn reserved(mut self, reserved: Reserved) -> Self {
        self.configure(|c| c.reserved = reserved);
        self
    }

    /// Classifies outcomes with `outcomes`, for example
    /// [`HttpOutcomes`](super::HttpOutcomes) for a client of an HTTP or gRPC
    /// service on the generic face.
    #[must_use]
    pub fn outcomes<C2>(self, outcomes: C2) -> AdaptiveLimitLayer<R, C2, K> {
        AdaptiveLimitLayer {
            shared: self.shared,
            reject: self.reject,
            outcomes,
            classify: self.classify,
        }
    }

    /// Finds each request's priority with `classify` (by default, the
    /// [`Priority`](crate::Priority) in the request's extensions).
    #[must_use]
    pub fn classify<K2>(self, classify: K2) -> AdaptiveLimitLayer<R, C, K2> {
        AdaptiveLimitLayer {
            shared: self.shared,
            reject: self.reject,
            outcomes: self.outcomes,
            classify,
        }
    }

    /// A handle on the limit, the in-flight count and the queue.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(Arc::clone(&self.shared))
    }
}

#[cfg(feature = "http")]
impl<R, C, K> AdaptiveLimitLayer<R, C, K> {
    /// The HTTP face: refusals are `503` responses with `Retry-After` (or
    /// trailers-only gRPC `UNAVAILABLE`), outcomes are classified by
    /// [`HttpOutcomes`], and each permit lasts until its response body ends.
    ///
    /// This sets the classification to `HttpOutcomes::new()`; to tune it,
    /// call [`outcomes`](Self::outcomes) afterwards.
    #[must_use]
    pub fn http(self) -> AdaptiveLimitLayer<AsResponse<ProblemDetails>, HttpOutcomes, K> {
        self.rejection(ProblemDetails::default())
    }

    /// The HTTP face with refusals built by `make`.
    #[must_use]
    pub fn rejection<M>(self, make: M) -> AdaptiveLimitLayer<AsResponse<M>, HttpOutcomes, K> {
        AdaptiveLimitLayer {
            shared: self.shared,
            reject: AsResponse::new(make),
            outcomes: HttpOutcomes::new(),
            classify: self.classify,
        }
    }
}

impl<S, R: Clone, C: Clone, K: Clone> Layer<S> for AdaptiveLimitLayer<R, C, K> {
    type Service = AdaptiveLimit<S, R, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::from_parts(
            inner,
            Arc::clone(&self.shared),
            self.reject.clone(),
            self.outcomes.clone(),
            self.classify.clone(),
        )
    }
}
