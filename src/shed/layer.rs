use std::{sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    Adaptive, NoBypass, PriorityShed, ShedHandle, Thresholds,
    state::{DynSignal, State},
};
use crate::{AsError, LoadSignal, RetryAfterPolicy, priority::FromExtensions};

/// Sheds the least valuable requests first when the service below is
/// overloaded; see the [module docs](super).
///
/// `R` is the rejection strategy ([`AsError`] or, after
/// [`http`](Self::http), [`AsResponse`](crate::http::AsResponse)), `C` the
/// classifier, `P` the [`Bypass`](super::Bypass) predicate.
///
/// The state (counters, admission level) is created by the constructor and
/// shared by every service the layer makes: one layer on an axum `Router`
/// with many routes is one shedder. Configure the layer fully before cloning
/// it.
#[derive(Debug)]
pub struct PriorityShedLayer<R = AsError, C = FromExtensions, P = NoBypass> {
    pub(crate) shared: Arc<Shared<R, C, P>>,
}

pub(crate) struct Shared<R, C, P> {
    pub(crate) state: Arc<State>,
    pub(crate) signal: Option<DynSignal>,
    pub(crate) policy: RetryAfterPolicy,
    pub(crate) classify: C,
    pub(crate) bypass: P,
    pub(crate) reject: R,
}

impl<R, C, P> std::fmt::Debug for Shared<R, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .field("signal", &self.signal.as_ref().map(|_| "..."))
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

impl PriorityShedLayer {
    /// Static shedding on the layer's own count of requests in flight below
    /// it, with `thresholds` per priority ([`Thresholds::ladder`] is the usual
    /// shape).
    pub fn new(thresholds: Thresholds) -> Self {
        Self::from_state(State::new_static(thresholds))
    }

    /// Adaptive shedding with `config` ([`Adaptive::default`] needs nothing
    /// but steers towards a 20 ms queueing delay).
    pub fn adaptive(config: Adaptive) -> Self {
        Self::from_state(State::new_adaptive(config))
    }

    fn from_state(state: State) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Arc::new(state),
                signal: None,
                policy: default_policy(),
                classify: FromExtensions,
                bypass: NoBypass,
                reject: AsError,
            }),
        }
    }
}

/// A 1 s floor, 20 % upward jitter, a 30 s cap.
fn default_policy() -> RetryAfterPolicy {
    RetryAfterPolicy::new()
        .cap(Duration::from_secs(30))
        .unwrap_or_default()
}

impl<R, C, P> PriorityShedLayer<R, C, P> {
    fn into_shared(self) -> Shared<R, C, P> {
        Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| unreachable!("configure a PriorityShedLayer before cloning it"))
    }

    fn rebuild<R2, C2, P2>(
        self,
        f: impl FnOnce(Shared<R, C, P>) -> Shared<R2, C2, P2>,
    ) -> PriorityShedLayer<R2, C2, P2> {
        PriorityShedLayer {
            shared: Arc::new(f(self.into_shared())),
        }
    }

    /// Sheds on `signal` instead of the layer's own in-flight count: an
    /// adaptive limiter's handle (in flight plus queued, with the age of the
    /// oldest waiter as queueing delay), a pool's waiters, a channel's length,
    /// any closure `Fn() -> usize`.
    ///
    /// In adaptive mode, a signal that reports a
    /// [`queue_delay`](LoadSignal::queue_delay) is what the level steers on.
    #[must_use]
    pub fn signal<L>(self, signal: L) -> Self
    where
        L: LoadSignal + Send + Sync + 'static,
    {
        let signal: DynSignal = Arc::new(signal);
        self.shared.state.signal.set(Arc::clone(&signal));
        self.rebuild(|mut s| {
            s.signal = Some(signal);
            s
        })
    }

    /// Reads priorities (and cohorts) with `classify` instead of from the
    /// request's extensions.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> PriorityShedLayer<R, C2, P> {
        self.rebuild(|s| Shared {
            state: s.state,
            signal: s.signal,
            policy: s.policy,
            classify,
            bypass: s.bypass,
            reject: s.reject,
        })
    }

    /// Never sheds nor counts the requests `bypass` picks (for example
    /// [`HealthChecks`](super::HealthChecks)).
    #[must_use]
    pub fn bypass<P2>(self, bypass: P2) -> PriorityShedLayer<R, C, P2> {
        self.rebuild(|s| Shared {
            state: s.state,
            signal: s.signal,
            policy: s.policy,
            classify: s.classify,
            bypass,
            reject: s.reject,
        })
    }

    /// How the retry hint is capped and jittered (default: jitter 20 %, cap
    /// 30 s). The hint itself is what the layer observes: the time its
    /// backlog takes to drain at the measured completion rate, at least 1 s.
    #[must_use]
    pub fn retry_after(self, policy: RetryAfterPolicy) -> Self {
        self.rebuild(|mut s| {
            s.policy = policy;
            s
        })
    }

    /// A handle on the layer's statistics.
    pub fn handle(&self) -> ShedHandle {
        ShedHandle::new(Arc::clone(&self.shared.state))
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<R, C, P> PriorityShedLayer<R, C, P> {
    /// The HTTP face: refusals are `503` responses with `Retry-After` and a
    /// problem+json body (gRPC calls: trailers-only `UNAVAILABLE` with
    /// `grpc-retry-pushback-ms`), and the inner error type is kept, so an
    /// axum `Router` takes the layer with no `HandleErrorLayer`.
    #[must_use]
    pub fn http(
        self,
    ) -> PriorityShedLayer<crate::http::AsResponse<crate::http::ProblemDetails>, C, P> {
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
    pub fn rejection<M>(self, make: M) -> PriorityShedLayer<crate::http::AsResponse<M>, C, P>
    where
        M: crate::http::MakeRejection,
    {
        self.rebuild(|s| Shared {
            state: s.state,
            signal: s.signal,
            policy: s.policy,
            classify: s.classify,
            bypass: s.bypass,
            reject: crate::http::AsResponse::new(make),
        })
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
