use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;

use super::{Bypass, NoBypass, ShedPermit, future::ResponseFuture, layer::Shedder};
use crate::{
    AsError, Reject,
    guard::Hold,
    priority::{Classify, FromExtensions},
};

/// The service [`PriorityShedLayer`](super::PriorityShedLayer) makes.
///
/// It reports ready when its inner service is, and decides each request in
/// `call`, once its priority is known: admitted requests go to the inner
/// service holding a [`ShedPermit`]; refused ones are answered at once through
/// `R`, without touching the inner service or the request body.
#[derive(Debug)]
pub struct PriorityShed<S, R = AsError, C = FromExtensions, P = NoBypass> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shedder<R, C, P>>,
}

impl<S: Clone, R, C, P> Clone for PriorityShed<S, R, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, Req, R, C, P> Service<Req> for PriorityShed<S, R, C, P>
where
    S: Service<Req>,
    R: Hold<S::Response> + Reject<Req, <R as Hold<S::Response>>::Held<ShedPermit>, S::Error>,
    C: Classify<Req>,
    P: Bypass<Req>,
{
    type Response =
        <R as Reject<Req, <R as Hold<S::Response>>::Held<ShedPermit>, S::Error>>::Response;
    type Error = <R as Reject<Req, <R as Hold<S::Response>>::Held<ShedPermit>, S::Error>>::Error;
    type Future = ResponseFuture<S::Future, Req, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(R::map_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if shared.bypass.bypass(&req) {
            shared
                .state
                .bypassed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return ResponseFuture::called(self.inner.call(req), ShedPermit::none());
        }
        let priority = shared.classify.classify(&req);
        let cohort = || shared.classify.cohort(&req);
        match shared
            .state
            .admit(priority, cohort, shared.state.signal.get(), &shared.policy)
        {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(overloaded) => {
                let info = shared.reject.info(&req);
                shared.reject.discard(req);
                ResponseFuture::overloaded(shared.reject.reject(info, overloaded))
            }
        }
    }
}
