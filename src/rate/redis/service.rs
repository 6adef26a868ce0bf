//! The service of a Redis-backed limit: the check is a round trip, so the
//! request waits in the response future (at most the timeout) and the inner
//! service is called once the answer is in.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio::{sync::oneshot, time::Sleep};
use tower_service::Service;

use super::{RedisKey, RedisStore, script::Answer, store::Started};
use crate::{
    key::KeyExtractor,
    rate::{
        gcra::Limiter,
        service::{RateLimit, RateLimitFields, ResponseFuture, respond},
    },
    reject::Reject,
};

impl<S, X, R, Req> Service<Req> for RateLimit<S, X, R, RedisStore>
where
    S: Service<Req> + Clone,
    X: KeyExtractor<Req>,
    X::Key: RedisKey,
    R: Reject<Req, S::Response, S::Error> + RateLimitFields<R::Response> + Clone,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = SharedResponseFuture<S, Req, X::Key, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(R::map_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extractor.key(&req);
        let state = match self.backend.start_check(&key) {
            Started::Fallback => {
                let decision = self
                    .backend
                    .fallback(&self.limiter, &key, self.fields_on_success);
                State::Decided {
                    future: respond(&mut self.inner, &self.reject, req, decision),
                }
            }
            Started::Waiting(answer) => {
                // The service that was made ready goes with the request, to
                // be called once Redis answers; this one keeps a fresh clone
                // (tower's advice for services called from a future).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                State::Checking {
                    deadline: tokio::time::sleep(self.backend.shared().timeout),
                    answer,
                    parts: Some(Parts {
                        inner,
                        req,
                        key,
                        reject: self.reject.clone(),
                        limiter: Arc::clone(&self.limiter),
                        store: self.backend.clone(),
                        fields_on_success: self.fields_on_success,
                    }),
                }
            }
        };
        SharedResponseFuture { state }
    }
}

/// What a waiting check needs once its answer is in.
struct Parts<S, Req, K: std::hash::Hash + Eq + Clone, R> {
    inner: S,
    req: Req,
    key: K,
    reject: R,
    limiter: Arc<Limiter<K>>,
    store: RedisStore,
    fields_on_success: bool,
}

pin_project! {
    /// The response future of a Redis-backed
    /// [`RateLimit`](crate::rate::RateLimit): waiting for Redis's answer (at
    /// most the timeout), then the inner call or a refusal.
    pub struct SharedResponseFuture<S, Req, K, R>
    where
        S: Service<Req>,
        K: std::hash::Hash,
        K: Eq,
        K: Clone,
        R: Reject<Req, S::Response, S::Error>,
    {
        #[pin]
        state: State<S, Req, K, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, K, R>
    where
        S: Service<Req>,
        K: std::hash::Hash,
        K: Eq,
        K: Clone,
        R: Reject<Req, S::Response, S::Error>,
    {
        Checking {
            #[pin]
            deadline: Sleep,
            answer: oneshot::Receiver<Answer>,
            parts: Option<Parts<S, Req, K, R>>,
        },
        Decided {
            #[pin]
            future: ResponseFuture<S::Future, R::Response, R::Error>,
        },
    }
}

impl<S, Req, K, R> fmt::Debug for SharedResponseFuture<S, Req, K, R>
where
    S: Service<Req>,
    K: std::hash::Hash + Eq + Clone,
    R: Reject<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Decided { .. } => "decided",
        };
        f.debug_tuple("SharedResponseFuture").field(&state).finish()
    }
}

impl<S, Req, K, R> Future for SharedResponseFuture<S, Req, K, R>
where
    S: Service<Req>,
    K: std::hash::Hash + Eq + Clone,
    R: Reject<Req, S::Response, S::Error> + RateLimitFields<R::Response>,
{
    type Output = Result<R::Response, R::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Checking {
                    deadline,
                    answer,
                    parts,
                } => {
                    let heard = match Pin::new(answer).poll(cx) {
                        Poll::Ready(Ok(answer)) => Some(answer),
                        // The worker dropped the check: the limit went into
                        // fallback, or Redis failed this batch.
                        Poll::Ready(Err(_)) => None,
                        Poll::Pending => {
                            ready!(deadline.poll(cx));
                            if let Some(p) = parts.as_ref() {
                                p.store.shared().timed_out();
                            }
                            None
                        }
                    };
                    // Polled again after completion: stay pending, never panic.
                    let Some(mut p) = parts.take() else {
                        return Poll::Pending;
                    };
                    let decision = match heard {
                        Some(answer) => {
                            p.store
                                .decide(&p.limiter, &p.key, answer, p.fields_on_success)
                        }
                        None => p.store.fallback(&p.limiter, &p.key, p.fields_on_success),
                    };
                    let future = respond(&mut p.inner, &p.reject, p.req, decision);
                    state.set(State::Decided { future });
                }
                StateProj::Decided { future } => return future.poll(cx),
            }
        }
    }
}
