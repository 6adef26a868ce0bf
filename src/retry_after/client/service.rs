//! [`HonorRetryAfter`]: waits out cooldowns and retries within the budget.

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Method, Request, Response};
use tokio::time::Sleep;
use tower_service::Service;

use super::{HonorFuture, ReplayBody, layer::Honour};

/// The service [`HonorRetryAfterLayer`](super::HonorRetryAfterLayer) makes.
pub struct HonorRetryAfter<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Honour>,
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for HonorRetryAfter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            sleep: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HonorRetryAfter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HonorRetryAfter")
            .field("inner", &self.inner)
            .field("cooling_down", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<S, B, ResB> Service<Request<B>> for HonorRetryAfter<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    B: http_body::Body,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = HonorFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        loop {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            // Re-read after each wait: another call may have extended it.
            let cooldown = &self.shared.cooldown;
            let global = (!cooldown.per_origin()).then(|| cooldown.until(&None));
            match global.flatten() {
                Some(until) => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
                None => break,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.stats.calls.fetch_add(1, Relaxed);
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let retries = self
            .shared
            .retries
            .as_ref()
            .filter(|r| r.attempts > 1 && (r.non_idempotent || idempotent(req.method())));
        // The cooldown of its origin (or one opened after it was readied):
        // the call waits for it.
        let origin = self.shared.cooldown.origin_of(&req);
        let cooldown = self.shared.cooldown.until(&origin);
        let shared = Arc::clone(&self.shared);
        match (retries, cooldown) {
            (None, None) => {
                HonorFuture::once(inner.call(req.map(ReplayBody::once)), origin, shared)
            }
            (None, Some(until)) => {
                let (parts, body) = req.into_parts();
                HonorFuture::delayed(
                    until,
                    inner,
                    parts,
                    ReplayBody::once(body),
                    None,
                    origin,
                    shared,
                )
            }
            (Some(r), cooldown) => {
                r.budget.deposit();
                let (parts, body) = req.into_parts();
                let (body, replay) = ReplayBody::first(body, r.max_body_bytes);
                match cooldown {
                    None => {
                        let future = inner.call(Request::from_parts(parts.clone(), body));
                        HonorFuture::retrying(future, inner, parts, replay, origin, shared)
                    }
                    Some(until) => HonorFuture::delayed(
                        until,
                        inner,
                        parts,
                        body,
                        Some(replay),
                        origin,
                        shared,
                    ),
                }
            }
        }
    }
}
