use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::HeaderValue;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    gcra::{Decision, Limiter, current_field},
    layer::Local,
};
use crate::{
    AsError, Overloaded, Reason,
    http::AsResponse,
    key::{KeyExtractor, KeyType},
    reject::Reject,
};

/// The service [`RateLimitLayer`](super::RateLimitLayer) makes; `B` is
/// where its buckets live ([`Local`], or a `RedisStore` with the feature
/// `rate-redis`).
pub struct RateLimit<S, X: KeyType, R, B = Local> {
    pub(super) inner: S,
    pub(super) extractor: Arc<X>,
    pub(super) limiter: Arc<Limiter<X::Key>>,
    pub(super) reject: R,
    pub(super) fields_on_success: bool,
    pub(super) backend: B,
}

impl<S, X: KeyType, R, B> RateLimit<S, X, R, B> {
    pub(crate) fn new(
        inner: S,
        extractor: Arc<X>,
        limiter: Arc<Limiter<X::Key>>,
        reject: R,
        fields_on_success: bool,
        backend: B,
    ) -> Self {
        Self {
            inner,
            extractor,
            limiter,
            reject,
            fields_on_success,
            backend,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, X: KeyType, R: Clone, B: Clone> Clone for RateLimit<S, X, R, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: Arc::clone(&self.extractor),
            limiter: Arc::clone(&self.limiter),
            reject: self.reject.clone(),
            fields_on_success: self.fields_on_success,
            backend: self.backend.clone(),
        }
    }
}

impl<S: fmt::Debug, X: KeyType + fmt::Debug, R: fmt::Debug, B> fmt::Debug
    for RateLimit<S, X, R, B>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("reject", &self.reject)
            .finish_non_exhaustive()
    }
}

/// Adds a rate limit's fields to a refusal: the IETF `RateLimit-Policy` and
/// `RateLimit` fields on the HTTP face, nothing on the generic face.
pub trait RateLimitFields<Res> {
    /// Adds the fields for a refusal under the quota described by `policy`
    /// (a `RateLimit-Policy` value) whose next call conforms after `wait`.
    fn add_fields(&self, res: &mut Res, policy: &HeaderValue, wait: Duration);

    /// Adds the `RateLimit-Policy` and `RateLimit` values to an admitted
    /// request's response (see
    /// [`fields_on_success`](super::RateLimitBuilder::fields_on_success)).
    fn add_success_fields(res: &mut Res, policy: HeaderValue, current: HeaderValue);
}

impl<Res> RateLimitFields<Res> for AsError {
    #[inline]
    fn add_fields(&self, _res: &mut Res, _policy: &HeaderValue, _wait: Duration) {}

    #[inline]
    fn add_success_fields(_res: &mut Res, _policy: HeaderValue, _current: HeaderValue) {}
}

impl<M, B> RateLimitFields<http::Response<B>> for AsResponse<M> {
    fn add_fields(&self, res: &mut http::Response<B>, policy: &HeaderValue, wait: Duration) {
        let headers = res.headers_mut();
        headers.insert(RATELIMIT_POLICY, policy.clone());
        headers.insert(RATELIMIT, current_field(0, wait));
    }

    fn add_success_fields(res: &mut http::Response<B>, policy: HeaderValue, current: HeaderValue) {
        let headers = res.headers_mut();
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, current);
    }
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

impl<S, X, R, Req> Service<Req> for RateLimit<S, X, R>
where
    S: Service<Req>,
    X: KeyExtractor<Req>,
    R: Reject<Req, S::Response, S::Error> + RateLimitFields<R::Response>,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = ResponseFuture<S::Future, R::Response, R::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(R::map_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extractor.key(&req);
        let decision = self.limiter.check(&key, self.fields_on_success);
        respond(&mut self.inner, &self.reject, req, decision)
    }
}

/// Calls `inner` with `req`, or refuses it, as `decision` says.
pub(super) fn respond<S, R, Req>(
    inner: &mut S,
    reject: &R,
    req: Req,
    decision: Decision,
) -> ResponseFuture<S::Future, R::Response, R::Error>
where
    S: Service<Req>,
    R: Reject<Req, S::Response, S::Error> + RateLimitFields<R::Response>,
{
    match decision {
        Decision::Allow { fields, .. } => ResponseFuture::inner(
            inner.call(req),
            |out| out.map(R::map_response).map_err(R::map_error),
            fields.map(|(policy, current)| Fields {
                policy,
                current,
                add: R::add_success_fields,
            }),
        ),
        Decision::Deny { wait, policy } => {
            let info = reject.info(&req);
            reject.discard(req);
            let overloaded = Overloaded::new(Reason::RateLimited).with_retry_after(wait);
            let mut answer = reject.reject(info, overloaded);
            if let Ok(res) = &mut answer {
                reject.add_fields(res, &policy, wait);
            }
            ResponseFuture::rejected(answer)
        }
    }
}

pin_project! {
    /// The response future of [`RateLimit`]: the inner call, or a refusal
    /// ready at once.
    pub struct ResponseFuture<F: Future, T, E> {
        #[pin]
        kind: Kind<F, T, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F: Future, T, E> {
        Inner {
            #[pin]
            future: F,
            map: fn(F::Output) -> Result<T, E>,
            fields: Option<Fields<T>>,
        },
        Rejected { answer: Option<Result<T, E>> },
    }
}

/// The `RateLimit-Policy` and `RateLimit` values for an admitted request's
/// response, and how to add them.
struct Fields<T> {
    policy: HeaderValue,
    current: HeaderValue,
    add: fn(&mut T, HeaderValue, HeaderValue),
}

impl<F: Future, T, E> ResponseFuture<F, T, E> {
    fn inner(future: F, map: fn(F::Output) -> Result<T, E>, fields: Option<Fields<T>>) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                map,
                fields,
            },
        }
    }

    fn rejected(answer: Result<T, E>) -> Self {
        Self {
            kind: Kind::Rejected {
                answer: Some(answer),
            },
        }
    }
}

impl<F: Future, T, E> fmt::Debug for ResponseFuture<F, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

impl<F: Future, T, E> Future for ResponseFuture<F, T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner {
                future,
                map,
                fields,
            } => {
                let mut out = map(ready!(future.poll(cx)));
                if let (Ok(res), Some(f)) = (&mut out, fields.take()) {
                    (f.add)(res, f.policy, f.current);
                }
                Poll::Ready(out)
            }
            KindProj::Rejected { answer } => match answer.take() {
                Some(answer) => Poll::Ready(answer),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
