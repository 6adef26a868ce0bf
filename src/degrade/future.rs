//! The response future of [`Degrade`](super::Degrade).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::remember::{Keep, Remember};
use crate::http::{RejectBody, ResponseBody};

pin_project! {
    /// The response future of [`Degrade`](super::Degrade): the inner
    /// service's future, or a fallback answer that is ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] fut: F, keep: Option<Keep> },
        Answered { res: Option<Response<RejectBody>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(fut: F, keep: Option<Keep>) -> Self {
        Self {
            kind: Kind::Called { fut, keep },
        }
    }

    pub(super) fn answered(res: Response<RejectBody>) -> Self {
        Self {
            kind: Kind::Answered { res: Some(res) },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Answered { .. } => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<Remember<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, keep } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(
                    Remember::response(res, keep.take()).map(ResponseBody::inner)
                ))
            }
            KindProj::Answered { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res.map(ResponseBody::rejected))),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}
