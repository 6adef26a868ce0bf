use std::{sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    Adaptive, NoBypass, PriorityShed, ShedHandle, Thresholds,
    mode::{AdaptiveState, Mode},
    state::{DynSignal, State},
};
use crate::{AsError, LoadSignal, RetryAfterPolicy, priority::FromExtensions};

/// Sheds the least valuable requests first when the service below is
/// overloaded; see the [module docs](super).
///
/// `R` is the rejection strategy ([`AsError`] or, after
/// [`http`](PriorityShedBuilder::http),
/// [`AsResponse`](crate::http::AsResponse)), `C` the classifier, `P` the
/// [`Bypass`](super::Bypass) predicate. [`HttpShedLayer`](super::HttpShedLayer)
/// names the HTTP face with the default classifier.
///
/// The state (counters, admission level) is created once, by
/// [`new`](Self::new) or [`PriorityShedBuilder::build`], and shared by every
/// service the layer makes: one layer on an axum `Router` with many routes
/// is one shedder, and `layer()` only clones an `Arc`, as tower's
/// `GlobalConcurrencyLimitLayer` does.
#[derive(Debug)]
pub struct PriorityShedLayer<R = AsError, C = FromExtensions, P = NoBypass> {
    pub(crate) shared: Arc<Shedder<R, C, P>>,
}

/// What every service of one layer reads.
pub(crate) struct Shedder<R, C, P> {
    pub(crate) state: Arc<State>,
    pub(crate) policy: RetryAfterPolicy,
    pub(crate) classify: C,
    pub(crate) bypass: P,
    pub(crate) reject: R,
}

impl<R, C, P> std::fmt::Debug for Shedder<R, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shedder")
            .field("state", &self.state)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<R, C, P> Clone for PriorityShedLayer<R, C, P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// How a shedder decides: static thresholds on the load, or an adaptive
/// admission level. Both convert into it, so
/// [`PriorityShedLayer::new`] takes either.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// A threshold per priority ([`Thresholds::ladder`] is the usual shape).
    Static(Thresholds),
    /// An admission level steered by queueing delay ([`Adaptive::default`]
    /// needs nothing but steers towards a 20 ms queueing delay).
    Adaptive(Adaptive),
}

impl From<Thresholds> for Rule {
    fn from(thresholds: Thresholds) -> Self {
        Self::Static(thresholds)
    }
}

impl From<Adaptive> for Rule {
    fn from(config: Adaptive) -> Self {
        Self::Adaptive(config)
    }
}

impl PriorityShedLayer {
    /// A shedder on the generic face, deciding by `rule` on the layer's own
    /// count of requests in flight below it, with every other option at its
    /// default.
    pub fn new(rule: impl Into<Rule>) -> Self {
        Self::builder(rule).build()
    }

    /// Configures a shedder deciding by `rule`: set the options, then
    /// [`build`](PriorityShedBuilder::build) it.
    pub fn builder(rule: impl Into<Rule>) -> PriorityShedBuilder {
        PriorityShedBuilder {
            rule: rule.into(),
            signal: None,
            policy: default_policy(),
            classify: FromExtensions,
            bypass: NoBypass,
            reject: AsError,
        }
    }
}

impl<R, C, P> PriorityShedLayer<R, C, P> {
    /// A handle on the layer's statistics.
    pub fn handle(&self) -> ShedHandle {
        ShedHandle::new(Arc::clone(&self.shared.state))
    }
}

/// A 1 s floor, 20 % upward jitter, a 30 s cap.
fn default_policy() -> RetryAfterPolicy {
    RetryAfterPolicy::new()
        .cap(Duration::from_secs(30))
        .unwrap_or_default()
}

/// The options of a [`PriorityShedLayer`], a plain value: set them in any
/// order, then [`build`](Self::build) the layer, which creates the shared
/// state once.
#[derive(Clone)]
pub struct PriorityShedBuilder<R = AsError, C = FromExtensions, P = NoBypass> {
    rule: Rule,
    signal: Option<DynSignal>,
    policy: RetryAfterPolicy,
    classify: C,
    bypass: P,
    reject: R,
}

impl<R: std::fmt::Debug, C, P> std::fmt::Debug for PriorityShedBuilder<R, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityShedBuilder")
            .field("rule", &self.rule)
            .field("signal", &self.signal.as_ref().map(|_| ".."))
            .field("policy", &self.policy)
            .field("reject", &self.reject)
            .finish_non_exhaustive()
    }
}

impl<R, C, P> PriorityShedBuilder<R, C, P> {
    /// Sheds on `signal` instead of the layer's own in-flight count: an
    /// adaptive limiter's handle (in flight plus queued, with the age of the
    /// oldest waiter as queueing delay), a pool's waiters, a channel's length,
    /// any closure `Fn() -> usize`.
    ///
    /// In adaptive mode, a signal that reports a
    /// [`queue_delay`](LoadSignal::queue_delay) is what the level steers on.
    #[must_use]
    pub fn signal<L>(mut self, signal: L) -> Self
    where
        L: LoadSignal + Send + Sync + 'static,
    {
        self.signal = Some(Arc::new(signal));
        self
    }

    /// Reads priorities (and cohorts) with `classify` instead of from the
    /// request's extensions.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> PriorityShedBuilder<R, C2, P> {
        PriorityShedBuilder {
            rule: self.rule,
            signal: self.signal,
            policy: self.policy,
            classify,
            bypass: self.bypass,
            reject: self.reject,
        }
    }

    /// Never sheds nor counts the requests `bypass` picks (for example
    /// [`HealthChecks`](super::HealthChecks), or a function
    /// `fn(&Request<B>) -> bool`).
    #[must_use]
    pub fn bypass<P2>(self, bypass: P2) -> PriorityShedBuilder<R, C, P2> {
        PriorityShedBuilder {
            rule: self.rule,
            signal: self.signal,
            policy: self.policy,
            classify: self.classify,
            bypass,
            reject: self.reject,
        }
    }

    /// How the retry hint is capped and jittered (default: jitter 20 %, cap
    /// 30 s). The hint itself is what the layer observes: the time its
    /// backlog takes to drain at the measured completion rate, at least 1 s.
    #[must_use]
    pub fn retry_after(mut self, policy: RetryAfterPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Creates the shared state and the layer.
    pub fn build(self) -> PriorityShedLayer<R, C, P> {
        let mode = match self.rule {
            Rule::Static(thresholds) => Mode::Static(thresholds),
            Rule::Adaptive(config) => Mode::Adaptive(AdaptiveState::new(config)),
        };
        PriorityShedLayer {
            shared: Arc::new(Shedder {
                state: Arc::new(State::new(mode, self.signal)),
                policy: self.policy,
                classify: self.classify,
                bypass: self.bypass,
                reject: self.reject,
            }),
        }
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<R, C, P> PriorityShedBuilder<R, C, P> {
    /// The HTTP face: refusals are `503` responses with `Retry-After` and a
    /// problem+json body (gRPC calls: trailers-only `UNAVAILABLE` with
    /// `grpc-retry-pushback-ms`), and the inner error type is kept, so an
    /// axum `Router` takes the layer with no `HandleErrorLayer`.
    #[must_use]
    pub fn http(
        self,
    ) -> PriorityShedBuilder<crate::http::AsResponse<crate::http::ProblemDetails>, C, P> {
        // The layer has already jittered and capped its hint; the response
        // carries it as it is.
        let as_is = RetryAfterPolicy::new()
            .jitter(0.0)
            .and_then(|p| p.cap(Duration::MAX))
            .unwrap_or_default();
        self.rejection(crate::http::ProblemDetails::new().retry_after(as_is))
    }

    /// The HTTP face with refusal responses built by `make`. The
    /// [`Overloaded`](crate::Overloaded) it receives already carries the
    /// jittered, capped hint.
    #[must_use]
    pub fn rejection<M>(self, make: M) -> PriorityShedBuilder<crate::http::AsResponse<M>, C, P>
    where
        M: crate::http::MakeRejection,
    {
        PriorityShedBuilder {
            rule: self.rule,
            signal: self.signal,
            policy: self.policy,
            classify: self.classify,
            bypass: self.bypass,
            reject: crate::http::AsResponse::new(make),
        }
    }
}

impl<S, R, C, P> Layer<S> for PriorityShedLayer<R, C, P> {
    type Service = PriorityShed<S, R, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityShed {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
