//! The response future of [`PriorityShed`](super::PriorityShed).

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{HoldPermit, Permit};

pin_project! {
    /// The response future of [`PriorityShed`](super::PriorityShed): the
    /// inner service's future holding the request's permit, or a refusal that
    /// is ready at once.
    pub struct ResponseFuture<F, R, T, E> {
        #[pin]
        kind: Kind<F, T, E>,
        face: PhantomData<fn() -> R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T, E> {
        Admitted { #[pin] fut: F, permit: Option<Permit> },
        // Admitted against an external signal that does not count the
        // request until the inner future is first polled.
        Claimed { #[pin] fut: F, permit: Option<Permit> },
        Bypassed { #[pin] fut: F },
        Rejected { result: Option<Result<T, E>> },
    }
}

impl<F, R, T, E> ResponseFuture<F, R, T, E> {
    pub(crate) fn admitted(fut: F, permit: Permit) -> Self {
        if permit.is_claimed() {
            Self::with(Kind::Claimed {
                fut,
                permit: Some(permit),
            })
        } else {
            Self::with(Kind::Admitted {
                fut,
                permit: Some(permit),
            })
        }
    }

    pub(crate) fn bypassed(fut: F) -> Self {
        Self::with(Kind::Bypassed { fut })
    }

    pub(crate) fn rejected(result: Result<T, E>) -> Self {
        Self::with(Kind::Rejected {
            result: Some(result),
        })
    }

    fn with(kind: Kind<F, T, E>) -> Self {
        Self {
            kind,
            face: PhantomData,
        }
    }
}

impl<F, R, T, E> std::fmt::Debug for ResponseFuture<F, R, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Admitted { .. } | Kind::Claimed { .. } => "admitted",
            Kind::Bypassed { .. } => "bypassed",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, R, Res, InnerE, T, E> Future for ResponseFuture<F, R, T, E>
where
    F: Future<Output = Result<Res, InnerE>>,
    R: HoldPermit<Res, InnerE, Response = T, Error = E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { fut, permit } => {
                let out = ready!(fut.poll(cx));
                let permit = permit.take().unwrap_or_else(Permit::none);
                Poll::Ready(match out {
                    Ok(res) => Ok(R::hold(res, permit)),
                    // Dropping the permit releases it without a latency
                    // sample: a failure says nothing about queueing.
                    Err(err) => Err(R::fail(err)),
                })
            }
            KindProj::Claimed { fut, permit } => {
                let polled = fut.poll(cx);
                // The inner service has now seen the request (a limiter
                // below enqueues it when first polled): the signal counts it
                // from here on.
                if let Some(permit) = permit.as_mut() {
                    permit.settle();
                }
                let out = ready!(polled);
                let permit = permit.take().unwrap_or_else(Permit::none);
                Poll::Ready(match out {
                    Ok(res) => Ok(R::hold(res, permit)),
                    Err(err) => Err(R::fail(err)),
                })
            }
            KindProj::Bypassed { fut } => Poll::Ready(match ready!(fut.poll(cx)) {
                Ok(res) => Ok(R::hold(res, Permit::none())),
                Err(err) => Err(R::fail(err)),
            }),
            KindProj::Rejected { result } => match result.take() {
                Some(result) => Poll::Ready(result),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}
