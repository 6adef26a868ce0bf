//! The future a [`Coalesce`](super::Coalesce) caller awaits.

use std::{
    any::Any,
    fmt,
    future::Future,
    panic::resume_unwind,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use futures_util::{FutureExt, future::Shared};
use pin_project_lite::pin_project;
use tower_service::Service;

pub(crate) type Payload = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

/// How a shared call ended, as every waiter sees it.
pub(crate) enum Outcome<Sh, R, E> {
    Shared(Sh),
    /// Only for the caller whose request made the call; others call again.
    Own(Arc<Mutex<Option<R>>>),
    Failed(E),
    Panicked(Payload),
}

impl<Sh: Clone, R, E: Clone> Clone for Outcome<Sh, R, E> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Shared(s) => Outcome::Shared(s.clone()),
            Outcome::Own(r) => Outcome::Own(r.clone()),
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
            Outcome::Panicked(p) => Outcome::Panicked(p.clone()),
        }
    }
}

pub(crate) type BoxCall<Sh, R, E> = Pin<Box<dyn Future<Output = Outcome<Sh, R, E>> + Send>>;
pub(crate) type SharedCall<Sh, R, E> = Shared<BoxCall<Sh, R, E>>;

pin_project! {
    /// Resolves to this caller's copy of the shared response, or to the
    /// response of its own call.
    ///
    /// Dropping it leaves the shared call running for the other waiters; the
    /// call stops only when every waiter has gone.
    pub struct ResponseFuture<S, Req, Res, Sh, R, E>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, Sh, R, E>,
        respond: fn(&Sh) -> R,
        unshared: fn(Res) -> R,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, Sh, R, E>
    where
        S: Service<Req>,
    {
        Direct { #[pin] fut: S::Future },
        Waiting { shared: SharedCall<Sh, R, E>, recall: Option<(S, Req)> },
        Recall { svc: S, req: Option<Req> },
    }
}

impl<S, Req, Res, Sh, R, E> ResponseFuture<S, Req, Res, Sh, R, E>
where
    S: Service<Req>,
{
    pub(crate) fn direct(fut: S::Future, respond: fn(&Sh) -> R, unshared: fn(Res) -> R) -> Self {
        Self {
            state: State::Direct { fut },
            respond,
            unshared,
        }
    }

    pub(crate) fn waiting(
        shared: SharedCall<Sh, R, E>,
        recall: Option<(S, Req)>,
        respond: fn(&Sh) -> R,
        unshared: fn(Res) -> R,
    ) -> Self {
        Self {
            state: State::Waiting { shared, recall },
            respond,
            unshared,
        }
    }
}

impl<S, Req, Res, Sh, R, E> fmt::Debug for ResponseFuture<S, Req, Res, Sh, R, E>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Direct { .. } => "direct",
            State::Waiting { .. } => "waiting",
            State::Recall { .. } => "recall",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, Res, Sh, R, E> Future for ResponseFuture<S, Req, Res, Sh, R, E>
where
    S: Service<Req, Response = Res, Error = E>,
    Sh: Clone,
    E: Clone,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Direct { fut } => {
                    return Poll::Ready(ready!(fut.poll(cx)).map(*this.unshared));
                }
                StateProj::Waiting { shared, recall } => {
                    let outcome = ready!(shared.poll_unpin(cx));
                    match outcome {
                        Outcome::Shared(sh) => return Poll::Ready(Ok((this.respond)(&sh))),
                        Outcome::Failed(err) => return Poll::Ready(Err(err)),
                        Outcome::Panicked(payload) => {
                            let payload = payload
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .take();
                            match payload {
                                Some(payload) => resume_unwind(payload),
                                None => resume_unwind(Box::new("coalesced call panicked")),
                            }
                        }
                        Outcome::Own(slot) => match recall.take() {
                            // This caller's request made the call: the
                            // response is its own.
                            None => {
                                let res = slot
                                    .lock()
                                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                                    .take()
                                    .expect(
                                        "only the caller that made the call takes its response",
                                    );
                                return Poll::Ready(Ok(res));
                            }
                            Some((svc, req)) => this.state.set(State::Recall {
                                svc,
                                req: Some(req),
                            }),
                        },
                    }
                }
                StateProj::Recall { svc, req } => {
                    ready!(svc.poll_ready(cx))?;
                    let req = req.take().expect("recall state holds its request");
                    let fut = svc.call(req);
                    this.state.set(State::Direct { fut });
                }
            }
        }
    }
}
