//! The response future of [`AdaptiveLimit`](super::AdaptiveLimit).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};
use tower_service::Service;

use super::{ClassifyOutcome, Permit, PermitGuard, permit::Ticket};
use crate::guard::Hold;

/// The inner service's response carrying the request's permit.
pub(crate) type Held<S, Req, C> = <<C as ClassifyOutcome<
    <S as Service<Req>>::Response,
    <S as Service<Req>>::Error,
>>::Hold as Hold<<S as Service<Req>>::Response>>::Held<PermitGuard<C>>;
use crate::{Overloaded, Reject};

/// A request waiting in the queue, with the ready service it will call.
struct Wait<S, Req, R, I, C> {
    ticket: Ticket,
    sleep: Pin<Box<Sleep>>,
    svc: S,
    req: Req,
    info: I,
    reject: R,
    outcomes: C,
}

pin_project! {
    /// The response future of [`AdaptiveLimit`](super::AdaptiveLimit): waits
    /// for a permit if the request was queued, then runs the inner call and
    /// classifies its outcome.
    pub struct ResponseFuture<S, Req, R, C>
    where
        S: Service<Req>,
        C: ClassifyOutcome<S::Response, S::Error>,
        R: Reject<Req, Held<S, Req, C>, S::Error>,
    {
        #[pin]
        state: State<S::Future, Wait<S, Req, R, R::Info, C>, C, Result<R::Response, R::Error>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, W, C, O> {
        Waiting { wait: Option<Box<W>> },
        // The permit with the classification that will release it.
        Running { #[pin] fut: F, permit: Option<(Permit, C)> },
        Done { result: Option<O> },
    }
}

impl<S, Req, R, C> ResponseFuture<S, Req, R, C>
where
    S: Service<Req>,
    C: ClassifyOutcome<S::Response, S::Error>,
    R: Reject<Req, Held<S, Req, C>, S::Error>,
{
    pub(crate) fn running(fut: S::Future, permit: Permit, outcomes: C) -> Self {
        Self {
            state: State::Running {
                fut,
                permit: Some((permit, outcomes)),
            },
        }
    }

    pub(crate) fn waiting(
        ticket: Ticket,
        svc: S,
        req: Req,
        info: R::Info,
        reject: R,
        outcomes: C,
    ) -> Self {
        let sleep = Box::pin(sleep_until(ticket.deadline));
        Self {
            state: State::Waiting {
                wait: Some(Box::new(Wait {
                    ticket,
                    sleep,
                    svc,
                    req,
                    info,
                    reject,
                    outcomes,
                })),
            },
        }
    }

    pub(crate) fn done(result: Result<R::Response, R::Error>) -> Self {
        Self {
            state: State::Done {
                result: Some(result),
            },
        }
    }
}

impl<S, Req, R, C> Future for ResponseFuture<S, Req, R, C>
where
    S: Service<Req>,
    C: ClassifyOutcome<S::Response, S::Error>,
    R: Reject<Req, Held<S, Req, C>, S::Error>,
{
    type Output = Result<R::Response, R::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let Some(w) = wait.as_mut() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let admitted = match w.ticket.poll(cx) {
                        Poll::Ready(res) => res,
                        Poll::Pending => {
                            ready!(w.sleep.as_mut().poll(cx));
                            w.ticket.expire()
                        }
                    };
                    let Some(w) = wait.take() else {
                        unreachable!("checked above");
                    };
                    let Wait {
                        ticket,
                        mut svc,
                        req,
                        info,
                        reject,
                        outcomes,
                        ..
                    } = *w;
                    match admitted {
                        Ok(permit) => {
                            let fut = svc.call(req);
                            state.set(State::Running {
                                fut,
                                permit: Some((permit, outcomes)),
                            });
                        }
                        Err(reason) => {
                            let overloaded =
                                Overloaded::new(reason).with_priority(ticket.priority());
                            reject.discard(req);
                            state.set(State::Done { result: None });
                            return Poll::Ready(reject.reject(info, overloaded));
                        }
                    }
                }
                StateProj::Running { fut, permit } => {
                    let res = ready!(fut.poll(cx));
                    let Some((permit, outcomes)) = permit.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let out = match res {
                        Ok(res) => {
                            let guard = PermitGuard::new::<_, S::Error>(permit, &res, outcomes);
                            Ok(R::map_response(C::Hold::hold(res, guard)))
                        }
                        Err(err) => {
                            permit.finish(outcomes.on_error(&err));
                            Err(R::map_error(err))
                        }
                    };
                    state.set(State::Done { result: None });
                    return Poll::Ready(out);
                }
                StateProj::Done { result } => {
                    let Some(result) = result.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl<S, Req, R, C> fmt::Debug for ResponseFuture<S, Req, R, C>
where
    S: Service<Req>,
    C: ClassifyOutcome<S::Response, S::Error>,
    R: Reject<Req, Held<S, Req, C>, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Done { .. } => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
