use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;

use super::{Bypass, NoBypass, Permit, future::ResponseFuture, layer::Shedder};
use crate::{
    AsError, BoxError, Reject,
    priority::{Classify, FromExtensions},
};

/// The service [`PriorityShedLayer`](super::PriorityShedLayer) makes.
///
/// It reports ready when its inner service is, and decides each request in
/// `call`, once its priority is known: admitted requests go to the inner
/// service holding a [`Permit`]; refused ones are answered at once through
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

/// How a face holds an admitted request's [`Permit`] and maps the inner
/// service's answers: the generic face ([`AsError`]) releases the permit when
/// the response arrives; the HTTP face
/// ([`AsResponse`](crate::http::AsResponse)) moves it into the response body,
/// so it covers streaming responses until their last byte.
///
/// It agrees with the face's [`Reject`] implementation on the response and
/// error types; implement both for a custom face.
pub trait HoldPermit<Res, E> {
    /// The response holding the permit, as the face's [`Reject`] sees it.
    type Held;
    /// The face's response.
    type Response;
    /// The face's error.
    type Error;

    /// The inner service answered `res`; `permit` must live as long as the
    /// request is in progress.
    fn hold(res: Res, permit: Permit) -> Self::Response;

    /// The inner service failed with `err`.
    fn fail(err: E) -> Self::Error;
}

impl<Res, E> HoldPermit<Res, E> for AsError
where
    E: Into<BoxError>,
{
    type Held = Res;
    type Response = Res;
    type Error = BoxError;

    #[inline]
    fn hold(res: Res, permit: Permit) -> Res {
        permit.complete();
        res
    }

    #[inline]
    fn fail(err: E) -> BoxError {
        err.into()
    }
}

#[cfg(feature = "http")]
impl<M, B, E> HoldPermit<http::Response<B>, E> for crate::http::AsResponse<M>
where
    B: http_body::Body,
{
    type Held = http::Response<crate::http::Guarded<B, Permit>>;
    type Response = http::Response<crate::http::ResponseBody<crate::http::Guarded<B, Permit>>>;
    type Error = E;

    #[inline]
    fn hold(res: http::Response<B>, permit: Permit) -> Self::Response {
        res.map(|body| crate::http::ResponseBody::inner(crate::http::Guarded::new(body, permit)))
    }

    #[inline]
    fn fail(err: E) -> E {
        err
    }
}

impl<S, Req, R, C, P> Service<Req> for PriorityShed<S, R, C, P>
where
    S: Service<Req>,
    R: HoldPermit<S::Response, S::Error>
        + Reject<
            Req,
            <R as HoldPermit<S::Response, S::Error>>::Held,
            S::Error,
            Response = <R as HoldPermit<S::Response, S::Error>>::Response,
            Error = <R as HoldPermit<S::Response, S::Error>>::Error,
        >,
    C: Classify<Req>,
    P: Bypass<Req>,
{
    type Response = <R as HoldPermit<S::Response, S::Error>>::Response;
    type Error = <R as HoldPermit<S::Response, S::Error>>::Error;
    type Future = ResponseFuture<S::Future, R, Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(R::fail)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        if shared.bypass.bypass(&req) {
            shared
                .state
                .bypassed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return ResponseFuture::bypassed(self.inner.call(req));
        }
        let priority = shared.classify.classify(&req);
        let cohort = shared.classify.cohort(&req);
        match shared
            .state
            .admit(priority, cohort, shared.state.signal.get(), &shared.policy)
        {
            Ok(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            Err(overloaded) => {
                let info = shared.reject.info(&req);
                shared.reject.discard(req);
                ResponseFuture::rejected(shared.reject.reject(info, overloaded))
            }
        }
    }
}
