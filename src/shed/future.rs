//! The response future of [`PriorityShed`](super::PriorityShed).

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures_util::TryFuture;
use pin_project_lite::pin_project;

use super::ShedPermit;
use crate::{Reject, guard::Hold};

/// What a face answers for a request of type `Req` to an inner response `Res`
/// and error `E`.
type Answer<R, Req, Res, E> = Result<
    <R as Reject<Req, <R as Hold<Res>>::Held<ShedPermit>, E>>::Response,
    <R as Reject<Req, <R as Hold<Res>>::Held<ShedPermit>, E>>::Error,
>;

pin_project! {
    /// The response future of [`PriorityShed`](super::PriorityShed): the
    /// inner service's future holding the request's permit, or a refusal that
    /// is ready at once.
    pub struct ResponseFuture<F, Req, R>
    where
        F: TryFuture,
        R: Hold<F::Ok>,
        R: Reject<Req, <R as Hold<F::Ok>>::Held<ShedPermit>, F::Error>,
    {
        #[pin]
        kind: Kind<F, Answer<R, Req, F::Ok, F::Error>>,
        face: PhantomData<fn(Req) -> R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, O> {
        // Admitted or bypassed (a bypassed request holds an empty permit).
        Called { #[pin] fut: F, permit: ShedPermit },
        Overloaded { result: Option<O> },
    }
}

impl<F, Req, R> ResponseFuture<F, Req, R>
where
    F: TryFuture,
    R: Hold<F::Ok> + Reject<Req, <R as Hold<F::Ok>>::Held<ShedPermit>, F::Error>,
{
    pub(crate) fn called(fut: F, permit: ShedPermit) -> Self {
        Self::with(Kind::Called { fut, permit })
    }

    pub(crate) fn overloaded(result: Answer<R, Req, F::Ok, F::Error>) -> Self {
        Self::with(Kind::Overloaded {
            result: Some(result),
        })
    }

    fn with(kind: Kind<F, Answer<R, Req, F::Ok, F::Error>>) -> Self {
        Self {
            kind,
            face: PhantomData,
        }
    }
}

impl<F, Req, R> std::fmt::Debug for ResponseFuture<F, Req, R>
where
    F: TryFuture,
    R: Hold<F::Ok> + Reject<Req, <R as Hold<F::Ok>>::Held<ShedPermit>, F::Error>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Overloaded { .. } => "overloaded",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, Req, R> Future for ResponseFuture<F, Req, R>
where
    F: TryFuture,
    R: Hold<F::Ok> + Reject<Req, <R as Hold<F::Ok>>::Held<ShedPermit>, F::Error>,
{
    type Output = Answer<R, Req, F::Ok, F::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, permit } => {
                let polled = fut.try_poll(cx);
                // Admitted against an external signal that counts the request
                // only once the inner service has seen it (a limiter below
                // enqueues it when first polled): from here on it does.
                permit.settle();
                let out = ready!(polled);
                // Polled again after this, the future finds an empty permit
                // and its inner future's own answer to being polled late.
                let permit = std::mem::replace(permit, ShedPermit::none());
                Poll::Ready(match out {
                    Ok(res) => Ok(R::map_response(R::hold(res, permit))),
                    // Dropping the permit releases it without a latency
                    // sample: a failure says nothing about queueing.
                    Err(err) => Err(R::map_error(err)),
                })
            }
            KindProj::Overloaded { result } => match result.take() {
                Some(result) => Poll::Ready(result),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}
