//! The server half: overload errors from inner layers become 503/429 answers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::hint::{RetryAfterPolicy, ceil_secs, pushback_ms};
use crate::{
    OverloadSource,
    grpc::{self, GRPC_RETRY_PUSHBACK_MS},
    http::{MakeRejection, ProblemDetails, RequestInfo, ResponseBody, rejection_response},
};

/// Answers [`Overloaded`](crate::Overloaded) errors from the inner service with
/// refusal responses: `503`/`429` with `Retry-After` and a problem+json body,
/// or a trailers-only gRPC status with `grpc-retry-pushback-ms`.
///
/// Every other error passes through untouched, with its own type. The layers
/// of this crate answer their own refusals on their HTTP face and do not need
/// this; it is for errors that come from elsewhere: a generic face, a tower
/// layer wrapped in one of ours, a handler that returns `Overloaded`.
///
/// Optionally ([`fill_missing`](Self::fill_missing)) it also adds a
/// `Retry-After` to 503 and 429 responses that lack one (and
/// `grpc-retry-pushback-ms` to trailers-only `UNAVAILABLE` /
/// `RESOURCE_EXHAUSTED` answers), so every overload answer tells the client
/// when to return.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::retry_after::RetryAfterLayer;
///
/// let stack = ServiceBuilder::new().layer(RetryAfterLayer::new());
/// # let _ = stack;
/// ```
#[derive(Debug, Clone)]
pub struct RetryAfterLayer<M = ProblemDetails> {
    config: Config<M>,
}

#[derive(Debug, Clone)]
struct Config<M> {
    make: M,
    fill_missing: Option<RetryAfterPolicy>,
}

impl RetryAfterLayer<ProblemDetails> {
    /// Answers refusals with [`ProblemDetails`].
    pub fn new() -> Self {
        Self::with_rejection(ProblemDetails::default())
    }
}

impl Default for RetryAfterLayer<ProblemDetails> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RetryAfterLayer<M> {
    /// Answers refusals with responses from `make`.
    pub fn with_rejection(make: M) -> Self {
        Self {
            config: Config {
                make,
                fill_missing: None,
            },
        }
    }

    /// Adds a retry hint computed by `policy` (with no observed hint, so its
    /// default delay, jittered) to inner 503/429 responses, and trailers-only
    /// gRPC 14/8 answers, that carry none.
    #[must_use]
    pub fn fill_missing(mut self, policy: RetryAfterPolicy) -> Self {
        self.config.fill_missing = Some(policy);
        self
    }
}

impl<S, M: Clone> Layer<S> for RetryAfterLayer<M> {
    type Service = RetryAfter<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryAfter {
            inner,
            config: Arc::new(self.config.clone()),
        }
    }
}

/// The service [`RetryAfterLayer`] makes.
#[derive(Debug)]
pub struct RetryAfter<S, M = ProblemDetails> {
    inner: S,
    config: Arc<Config<M>>,
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

pin_project! {
    /// The response future of [`RetryAfter`].
    pub struct ResponseFuture<F, M> {
        #[pin]
        inner: F,
        info: RequestInfo,
        config: Arc<Config<M>>,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::{BoxError, Overloaded, Priority, Reason};

    type Body = Full<bytes::Bytes>;

    fn failing(
        err: fn() -> BoxError,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone
    {
        service_fn(move |_req: Request<Body>| async move { Err::<Response<Body>, _>(err()) })
    }

    #[tokio::test]
    async fn overloaded_error_becomes_503() {
        let svc = RetryAfterLayer::new().layer(failing(|| {
            Box::new(
                Overloaded::new(Reason::QueueTimeout)
                    .with_priority(Priority::High)
                    .with_retry_after(Duration::from_secs(3)),
            )
        }));
        let res = svc.oneshot(Request::new(Body::default())).await.unwrap();
        assert_eq!(res.status(), 503);
        let secs: u64 = res.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((3..=4).contains(&secs), "{secs}");
        assert_eq!(
            res.extensions().get::<Overloaded>().map(Overloaded::reason),
            Some(Reason::QueueTimeout)
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["priority"], "high");
    }

    #[tokio::test]
    async fn other_errors_pass_untouched() {
        let svc = RetryAfterLayer::new().layer(failing(|| "database on fire".into()));
        let err = svc
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "database on fire");
    }

    #[tokio::test]
    async fn grpc_request_gets_trailers_only() {
        let svc = RetryAfterLayer::new()
            .layer(failing(|| Box::new(Overloaded::new(Reason::RateLimited))));
        let req = Request::builder()
            .header("content-type", "application/grpc")
            .body(Body::default())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "8");
        assert!(res.headers().contains_key(GRPC_RETRY_PUSHBACK_MS));
    }

    #[tokio::test]
    async fn fills_missing_retry_after_only_when_asked() {
        let answer = |status: u16| {
            service_fn(move |_req: Request<Body>| async move {
                let mut res = Response::new(Body::default());
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, BoxError>(res)
            })
        };
        let policy = RetryAfterPolicy::new().default_delay(Duration::from_secs(5));
        // Configuring a layer that was already cloned is fine too.
        let original = RetryAfterLayer::new();
        let _clone = original.clone();
        let filled = original.fill_missing(policy.clone());

        let res = filled
            .layer(answer(503))
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        let secs: u64 = res.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((5..=6).contains(&secs));

        let res = filled
            .layer(answer(500))
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        assert!(!res.headers().contains_key(header::RETRY_AFTER));

        let res = RetryAfterLayer::new()
            .layer(answer(429))
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        assert!(!res.headers().contains_key(header::RETRY_AFTER));

        let kept = service_fn(|_req: Request<Body>| async {
            let mut res = Response::new(Body::default());
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("42"));
            Ok::<_, BoxError>(res)
        });
        let res = filled
            .layer(kept)
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        assert_eq!(res.headers()[header::RETRY_AFTER], "42");

        let grpc = service_fn(|_req: Request<Body>| async {
            let mut res = Response::new(Body::default());
            res.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("14"));
            Ok::<_, BoxError>(res)
        });
        let res = filled
            .layer(grpc)
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        let ms: u64 = res.headers()[GRPC_RETRY_PUSHBACK_MS]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((5000..=6000).contains(&ms));
    }
}
