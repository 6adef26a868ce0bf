use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{ResponseFuture, layer::Config};
use crate::{
    OverloadSource,
    http::{MakeRejection, ProblemDetails, RequestInfo, ResponseBody},
};

/// The service [`RetryAfterLayer`](super::RetryAfterLayer) makes.
#[derive(Debug)]
pub struct RetryAfter<S, M = ProblemDetails> {
    pub(super) inner: S,
    pub(super) config: Arc<Config<M>>,
}

impl<S: Clone, M> Clone for RetryAfter<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S, M, B, ResB> Service<Request<B>> for RetryAfter<S, M>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: OverloadSource,
    M: MakeRejection,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let info = RequestInfo::from_request(&req);
        ResponseFuture {
            inner: self.inner.call(req),
            info,
            config: Arc::clone(&self.config),
        }
    }
}
