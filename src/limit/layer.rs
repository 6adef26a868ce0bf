use std::{sync::Arc, time::Duration};

use tower_layer::Layer;

#[cfg(feature = "http")]
use super::HttpOutcomes;
use super::{
    AdaptiveLimit, Algorithm, ByResult, LimitHandle, Reserved, admission::Limiter,
    queue::QueueConfig,
};
#[cfg(feature = "http")]
use crate::http::{AsResponse, ProblemDetails};
use crate::{AsError, priority::FromExtensions};

/// The name of a limiter whose builder did not set one.
const DEFAULT_NAME: &str = "limit";

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
/// Build it with [`new`](Self::new) (every option at its default) or
/// [`builder`](Self::builder); [`HttpLimitLayer`](super::HttpLimitLayer)
/// names the HTTP face.
#[derive(Debug)]
pub struct AdaptiveLimitLayer<R = AsError, C = ByResult, K = FromExtensions> {
    shared: Arc<Limiter>,
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
    /// A limit driven by `algorithm`, on the generic face, with every option
    /// at its default: refusals are [`Overloaded`](crate::Overloaded)
    /// errors, responses are successes and inner errors drops.
    ///
    /// A request that finds the limit reached waits, by priority, for up to
    /// 1 s; it is let in only when the forecast wait (the waiters ahead of it
    /// and the higher priorities still arriving, over the measured service
    /// rate) is at most half that, and refused at once otherwise. See
    /// [`max_queue`](AdaptiveLimitBuilder::max_queue) for the queue's length.
    pub fn new<A>(algorithm: A) -> Self
    where
        A: Algorithm + Send + 'static,
    {
        Self::builder(algorithm).build()
    }

    /// Configures a limit driven by `algorithm`: set the options in any
    /// order, then [`build`](AdaptiveLimitBuilder::build) it.
    pub fn builder<A>(algorithm: A) -> AdaptiveLimitBuilder
    where
        A: Algorithm + Send + 'static,
    {
        AdaptiveLimitBuilder {
            algorithm: Box::new(algorithm),
            config: QueueConfig::default(),
            name: DEFAULT_NAME.into(),
            reject: AsError,
            outcomes: FaceOutcomes,
            classify: FromExtensions,
        }
    }
}

impl<R, C, K> AdaptiveLimitLayer<R, C, K> {
    /// A handle on the limit, the in-flight count and the queue.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(Arc::clone(&self.shared))
    }
}

/// The options of an [`AdaptiveLimitLayer`], a plain value: set them in any
/// order, then [`build`](Self::build) the layer, which creates the shared
/// limit once.
///
/// `O` is the outcome classification: until [`outcomes`](Self::outcomes)
/// is called, a marker for the face's own ([`ByResult`] on the generic face,
/// [`HttpOutcomes`](super::HttpOutcomes) after [`http`](Self::http)).
#[derive(Debug)]
pub struct AdaptiveLimitBuilder<R = AsError, O = FaceOutcomes, K = FromExtensions> {
    algorithm: Box<dyn Algorithm + Send>,
    config: QueueConfig,
    name: Box<str>,
    reject: R,
    outcomes: O,
    classify: K,
}

/// The outcome classification of an [`AdaptiveLimitBuilder`] whose
/// [`outcomes`](AdaptiveLimitBuilder::outcomes) was not set: the face's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaceOutcomes;

/// An outcome classification chosen with
/// [`outcomes`](AdaptiveLimitBuilder::outcomes), kept whatever face is set
/// afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<C>(C);

/// Resolves a builder's outcome classification for the face `R` when the
/// layer is built: `FaceOutcomes` becomes the face's default, a `Chosen`
/// one stays as it is. (Unnameable outside the crate: a builder's type is
/// never spelled.)
pub trait OutcomesFor<R> {
    /// The classification the layer runs.
    type Outcomes;
    /// Resolves it.
    fn resolve(self) -> Self::Outcomes;
}

impl OutcomesFor<AsError> for FaceOutcomes {
    type Outcomes = ByResult;

    fn resolve(self) -> ByResult {
        ByResult::new()
    }
}

#[cfg(feature = "http")]
impl<M> OutcomesFor<AsResponse<M>> for FaceOutcomes {
    type Outcomes = HttpOutcomes;

    fn resolve(self) -> HttpOutcomes {
        HttpOutcomes::new()
    }
}

impl<R, C> OutcomesFor<R> for Chosen<C> {
    type Outcomes = C;

    fn resolve(self) -> C {
        self.0
    }
}

impl<R, O, K> AdaptiveLimitBuilder<R, O, K> {
    /// Names the limiter (default `"limit"`): the `layer` label of its
    /// metrics (feature `metrics`), which a
    /// `MetricsReporter` (feature `metrics`) reads from its
    /// [`LimitHandle::name`], so the histograms the limiter records and the
    /// figures the reporter publishes carry the same label. Give each
    /// limiter of a process its own name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into_boxed_str();
        self
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
    /// tier at the margin leaves room for those above it; and a queue of
    /// Critical alone may hold up to 32, each let in only if the forecast
    /// has it served within half its wait, so that a small limit does not
    /// refuse Critical at once (a balancer sending to the least loaded would
    /// then send that instance the most). Setting a length
    /// fixes it and lifts the shares: a full queue then makes room for a request
    /// by refusing the newest waiter of a lower priority.
    #[must_use]
    pub fn max_queue(mut self, len: usize) -> Self {
        self.config.max_len = len;
        self.config.auto_len = false;
        self
    }

    /// How long a request may wait for a permit (default 1 s).
    #[must_use]
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
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
        self.config.standing = Some((interval, short_timeout));
        self
    }

    /// Reserves shares of the limit for priorities.
    #[must_use]
    pub fn reserved(mut self, reserved: Reserved) -> Self {
        self.config.reserved = reserved;
        self
    }

    /// Classifies outcomes with `outcomes`, for example
    /// [`HttpOutcomes`](super::HttpOutcomes) tuned, or for a client of an
    /// HTTP or gRPC service on the generic face. Kept whichever face is set,
    /// before or after.
    #[must_use]
    pub fn outcomes<C>(self, outcomes: C) -> AdaptiveLimitBuilder<R, Chosen<C>, K> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            config: self.config,
            name: self.name,
            reject: self.reject,
            outcomes: Chosen(outcomes),
            classify: self.classify,
        }
    }

    /// Finds each request's priority with `classify` (by default, the
    /// [`Priority`](crate::Priority) in the request's extensions).
    #[must_use]
    pub fn classify<K2>(self, classify: K2) -> AdaptiveLimitBuilder<R, O, K2> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            config: self.config,
            name: self.name,
            reject: self.reject,
            outcomes: self.outcomes,
            classify,
        }
    }

    /// Creates the shared limit and the layer.
    pub fn build(self) -> AdaptiveLimitLayer<R, O::Outcomes, K>
    where
        O: OutcomesFor<R>,
    {
        AdaptiveLimitLayer {
            shared: Arc::new(Limiter::new(self.algorithm, self.config, self.name)),
            reject: self.reject,
            outcomes: self.outcomes.resolve(),
            classify: self.classify,
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<R, O, K> AdaptiveLimitBuilder<R, O, K> {
    /// The HTTP face: refusals are `503` responses with `Retry-After` (or
    /// trailers-only gRPC `UNAVAILABLE`), outcomes are classified by
    /// [`HttpOutcomes`] unless [`outcomes`](Self::outcomes) chose otherwise,
    /// and each permit lasts until its response body ends.
    #[must_use]
    pub fn http(self) -> AdaptiveLimitBuilder<AsResponse<ProblemDetails>, O, K> {
        self.rejection(ProblemDetails::default())
    }

    /// The HTTP face with refusals built by `make`.
    #[must_use]
    pub fn rejection<M>(self, make: M) -> AdaptiveLimitBuilder<AsResponse<M>, O, K> {
        AdaptiveLimitBuilder {
            algorithm: self.algorithm,
            config: self.config,
            name: self.name,
            reject: AsResponse::new(make),
            outcomes: self.outcomes,
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
