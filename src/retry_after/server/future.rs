use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;

use super::layer::Config;
use crate::hint::{RetryAfterPolicy, ceil_secs, pushback_ms};
use crate::{
    OverloadSource,
    grpc::{self, GRPC_RETRY_PUSHBACK_MS},
    http::{MakeRejection, RequestInfo, ResponseBody, rejection_response},
};

pin_project! {
    /// The response future of [`RetryAfter`].
    pub struct ResponseFuture<F, M> {
        #[pin]
        pub(super) inner: F,
        pub(super) info: RequestInfo,
        pub(super) config: Arc<Config<M>>,
    }
}

impl<F, M> std::fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<F, M, ResB, E> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: OverloadSource,
    M: MakeRejection,
{
    type Output = Result<Response<ResponseBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(mut res) => {
                if let Some(policy) = &this.config.fill_missing {
                    fill_missing_hint(&mut res, policy);
                }
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
            Err(err) => match err.overloaded().copied() {
                Some(overloaded) => Poll::Ready(Ok(rejection_response(
                    &this.config.make,
                    this.info,
                    overloaded,
                ))),
                None => Poll::Ready(Err(err)),
            },
        }
    }
}

fn fill_missing_hint<B>(res: &mut Response<B>, policy: &RetryAfterPolicy) {
    let status = res.status();
    let headers = res.headers_mut();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        if !headers.contains_key(header::RETRY_AFTER) {
            let secs = ceil_secs(policy.delay(None)).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    } else if matches!(grpc::grpc_status(headers), Some(8 | 14))
        && !headers.contains_key(GRPC_RETRY_PUSHBACK_MS)
    {
        let ms = pushback_ms(policy.pushback(None));
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms));
    }
}
