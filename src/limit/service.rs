use std::{
    mem,
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;

use super::{
    ClassifyOutcome, LimitHandle,
    admission::{Admission, Limiter},
    future::ResponseFuture,
};
use crate::{AsError, Overloaded, Reject, priority::Classify, priority::FromExtensions};

/// The service [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer) makes.
///
/// It reports ready when its inner service is ready and decides in `call`:
/// admit the request (and call the inner service at once), queue it, or
/// refuse it. A queued request takes the inner service that was polled ready
/// with it and leaves a fresh clone behind, so no clone is ever called
/// without having been polled ready. A queued request therefore holds
/// whatever its inner service's readiness reserves (for a tonic `Channel`, a
/// slot in its buffer) while it waits; keep
/// [`max_queue`](super::AdaptiveLimitBuilder::max_queue) below such a buffer.
#[derive(Debug)]
pub struct AdaptiveLimit<S, R = AsError, C = super::ByResult, K = FromExtensions> {
    inner: S,
    shared: Arc<Limiter>,
    reject: R,
    outcomes: C,
    classify: K,
}

impl<S, R, C, K> AdaptiveLimit<S, R, C, K> {
    pub(crate) fn from_parts(
        inner: S,
        shared: Arc<Limiter>,
        reject: R,
        outcomes: C,
        classify: K,
    ) -> Self {
        Self {
            inner,
            shared,
            reject,
            outcomes,
            classify,
        }
    }

    /// A handle on the shared limit.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(Arc::clone(&self.shared))
    }

    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> Arc<Limiter> {
        Arc::clone(&self.shared)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, R: Clone, C: Clone, K: Clone> Clone for AdaptiveLimit<S, R, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            reject: self.reject.clone(),
            outcomes: self.outcomes.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, R, C, K, Req> Service<Req> for AdaptiveLimit<S, R, C, K>
where
    S: Service<Req> + Clone,
    C: ClassifyOutcome<S::Response, S::Error> + Clone,
    R: Reject<Req, super::future::Held<S, Req, C>, S::Error> + Clone,
    K: Classify<Req>,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = ResponseFuture<S, Req, R, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(R::map_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.classify.classify(&req);
        let deadline = || self.classify.deadline(&req).map(|d| d.instant());
        match self.shared.acquire(priority, deadline) {
            Admission::Admitted(permit) => {
                // Should the inner call panic, the permit is dropped while
                // unwinding, which releases it.
                let fut = self.inner.call(req);
                ResponseFuture::running(fut, permit, self.outcomes.clone())
            }
            Admission::Queued(ticket) => {
                let info = self.reject.info(&req);
                let ready = self.inner.clone();
                let svc = mem::replace(&mut self.inner, ready);
                ResponseFuture::waiting(
                    ticket,
                    svc,
                    req,
                    info,
                    self.reject.clone(),
                    self.outcomes.clone(),
                )
            }
            Admission::Rejected(reason, hint) => {
                let info = self.reject.info(&req);
                self.reject.discard(req);
                let mut overloaded = Overloaded::new(reason).with_priority(priority);
                if let Some(hint) = hint {
                    overloaded = overloaded.with_retry_after(hint);
                }
                ResponseFuture::done(self.reject.reject(info, overloaded))
            }
        }
    }
}
