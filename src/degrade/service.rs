use std::{
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    ResponseFuture,
    fallback::Found,
    layer::Shared,
    remember::{Keep, Remember, has_credentials},
};
use crate::http::ResponseBody;

/// The service a [`DegradeLayer`](super::DegradeLayer) makes: stamps the
/// level, then calls the inner service or answers from a fallback.
///
/// It never refuses anything: it is ready when the inner service is, and
/// keeps the inner error type.
#[derive(Debug)]
pub struct Degrade<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

impl<S: Clone> Clone for Degrade<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Degrade<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ResponseBody<Remember<ResBody>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let level = shared.handle.level();
        req.extensions_mut().insert(level);
        if shared.routes.is_empty() {
            return ResponseFuture::called(self.inner.call(req), None);
        }
        let Some(route) = shared.routes.get(req.method(), req.uri().path()) else {
            return ResponseFuture::called(self.inner.call(req), None);
        };
        match route.find(level, req.uri().query()) {
            Found::Answer(res) => {
                shared
                    .handle
                    .sensor
                    .fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                ResponseFuture::answered(res)
            }
            Found::Call(slot) => {
                let keep = slot.map(|slot| Keep {
                    slot,
                    query: req.uri().query().map(Box::from),
                    credentials: has_credentials(req.headers()),
                });
                ResponseFuture::called(self.inner.call(req), keep)
            }
        }
    }
}
