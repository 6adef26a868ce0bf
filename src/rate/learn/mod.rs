//! [`LearnPaceLayer`]: a client that paces itself at a quota it learns from
//! the server's answers instead of being told it.

mod learner;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use self::learner::{Learner, policy_rate};
use super::RATELIMIT_POLICY;
use crate::sync::lock;

/// Paces a client at the quota its server enforces, learned from the
/// server's answers: no quota to configure.
///
/// From the first answer announcing the quota in `RateLimit-Policy`
/// (`"default";q=200;w=1`), calls are paced at most at that quota; from a
/// server that announces none, calls go unpaced until it first refuses one
/// for its quota (`429`, or a gRPC `RESOURCE_EXHAUSTED`), and the pace
/// starts at what it accepted then. Every clone of the service shares one
/// pace, judged in rounds of 200 ms:
///
/// - a round with refusals cuts the pace by the share refused (a client
///   that had three quarters of its calls accepted keeps three quarters of
///   its pace), by at least 15 % and at most half: a round refused almost
///   whole halves the pace, and the next round judges again;
/// - a round without refusals, in which the pace held the client back,
///   adds 2 % of the quota a second;
/// - the quota the server announces, on a refusal or any other answer,
///   caps the pace.
///
/// Clients sharing one quota (one API key, many processes) see about the
/// same share of their calls refused, cut alike, and grow by the same step,
/// so their paces converge on equal shares of it: additive increase,
/// multiplicative decrease, as TCP senders share a link. Put it inside
/// [`HonorRetryAfterLayer`](crate::retry_after::HonorRetryAfterLayer), so
/// that a refused call waits for its `Retry-After` and its retry is paced
/// too:
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::{rate::LearnPaceLayer, retry_after::HonorRetryAfterLayer};
///
/// let pace = LearnPaceLayer::new();
/// let handle = pace.handle();
/// let client = ServiceBuilder::new()
///     .layer(HonorRetryAfterLayer::builder().build())
///     .layer(pace)
///     .service_fn(|_: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = (client, handle);
/// ```
///
/// A readied service that is dropped without being called has spent its
/// slot, as with [`PaceLayer`](super::PaceLayer). Callers waiting for a
/// slot ask again when it comes, so a pace that rises applies at once.
#[derive(Clone)]
pub struct LearnPaceLayer {
    learner: Arc<Mutex<Learner>>,
}

impl fmt::Debug for LearnPaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnPaceLayer")
            .field("snapshot", &self.handle().snapshot())
            .finish()
    }
}

impl Default for LearnPaceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl LearnPaceLayer {
    /// A pacer that knows nothing yet.
    pub fn new() -> Self {
        Self {
            learner: Arc::new(Mutex::new(Learner::new(Instant::now()))),
        }
    }

    /// A handle on what it has learned.
    pub fn handle(&self) -> LearnPaceHandle {
        LearnPaceHandle {
            learner: Arc::clone(&self.learner),
        }
    }
}

impl<S> Layer<S> for LearnPaceLayer {
    type Service = LearnPace<S>;

    fn layer(&self, inner: S) -> LearnPace<S> {
        LearnPace {
            inner,
            learner: Arc::clone(&self.learner),
            permit: false,
            sleep: None,
        }
    }
}

/// Reads what a [`LearnPaceLayer`] has learned.
#[derive(Clone)]
pub struct LearnPaceHandle {
    learner: Arc<Mutex<Learner>>,
}

impl fmt::Debug for LearnPaceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnPaceHandle").finish_non_exhaustive()
    }
}

/// A [`LearnPaceLayer`]'s figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LearnPaceSnapshot {
    /// The pace, calls a second; `None` while nothing has been refused.
    pub rate: Option<f64>,
    /// The quota's rate the server announced, calls a second.
    pub quota: Option<f64>,
    /// Answers that refused a call for the quota.
    pub refusals: u64,
    /// Rounds that cut the pace.
    pub cuts: u64,
}

impl LearnPaceHandle {
    /// The figures now.
    pub fn snapshot(&self) -> LearnPaceSnapshot {
        let l = lock(&self.learner);
        LearnPaceSnapshot {
            rate: l.rate,
            quota: l.ceiling,
            refusals: l.refusals,
            cuts: l.cuts,
        }
    }
}

/// The service [`LearnPaceLayer`] makes.
pub struct LearnPace<S> {
    inner: S,
    learner: Arc<Mutex<Learner>>,
    permit: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for LearnPace<S> {
    fn clone(&self) -> Self {
        // A clone has not been readied: no slot, no timer.
        Self {
            inner: self.inner.clone(),
            learner: Arc::clone(&self.learner),
            permit: false,
            sleep: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LearnPace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnPace")
            .field("inner", &self.inner)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B> Service<Req> for LearnPace<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = LearnFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.permit {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            // Asked again after each wait: the pace may have changed, or
            // another caller taken the slot.
            match lock(&self.learner).try_send(Instant::now()) {
                None => self.permit = true,
                Some(until) => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Called without being readied is a caller bug; it is served anyway
        // rather than panicking, and takes no slot.
        self.permit = false;
        LearnFuture {
            inner: self.inner.call(req),
            learner: Arc::clone(&self.learner),
            sent: Instant::now(),
        }
    }
}

pin_project! {
    /// The response future of [`LearnPace`]: the inner call, whose answer
    /// the pacer learns from.
    pub struct LearnFuture<F> {
        #[pin]
        inner: F,
        learner: Arc<Mutex<Learner>>,
        sent: Instant,
    }
}

impl<F: fmt::Debug> fmt::Debug for LearnFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for LearnFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        // An error (no answer) says nothing about the quota.
        if let Ok(res) = &out {
            let refused = refused_for_quota(res.status(), res.headers());
            let quota = res
                .headers()
                .get(RATELIMIT_POLICY)
                .and_then(|v| policy_rate(v.as_bytes()));
            lock(this.learner).answered(refused, quota, *this.sent, Instant::now());
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests;

/// `429`, or a gRPC trailers-only `RESOURCE_EXHAUSTED` (8).
fn refused_for_quota(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || crate::grpc::grpc_status(headers) == Some(8)
}
