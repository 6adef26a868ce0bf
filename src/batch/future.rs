//! The future a [`Batch`](super::Batch) caller awaits.

use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{answer::Receiver, error::Closed};
use crate::{BoxError, Reject};

pin_project! {
    /// Resolves to the caller's own item result, once its batch has been
    /// answered, mapped by the handle's rejection strategy.
    ///
    /// Dropping it does not disturb the batch: an item not yet sent is skipped,
    /// an item already sent is still written and its result discarded.
    pub struct ResponseFuture<T, R, Rj>
    where
        Rj: Reject<T, R, BoxError>,
    {
        state: State<R, Rj::Response, Rj::Error>,
        _req: PhantomData<fn(T)>,
    }
}

enum State<R, Res, E> {
    Waiting(Receiver<R>),
    Done(Option<Result<Res, E>>),
}

impl<T, R, Rj> ResponseFuture<T, R, Rj>
where
    Rj: Reject<T, R, BoxError>,
{
    pub(super) fn waiting(rx: Receiver<R>) -> Self {
        Self {
            state: State::Waiting(rx),
            _req: PhantomData,
        }
    }

    pub(crate) fn done(result: Result<Rj::Response, Rj::Error>) -> Self {
        Self {
            state: State::Done(Some(result)),
            _req: PhantomData,
        }
    }
}

impl<T, R, Rj> fmt::Debug for ResponseFuture<T, R, Rj>
where
    Rj: Reject<T, R, BoxError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting",
            State::Done(_) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<T, R, Rj> Future for ResponseFuture<T, R, Rj>
where
    Rj: Reject<T, R, BoxError>,
{
    type Output = Result<Rj::Response, Rj::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state {
            State::Waiting(rx) => Poll::Ready(match ready!(rx.poll_recv(cx)) {
                Ok(Ok(res)) => Ok(Rj::map_response(res)),
                Ok(Err(err)) => Err(Rj::map_error(err)),
                // The worker dropped this caller's answer without sending:
                // it stopped, and its batches with it.
                Err(_) => Err(Rj::map_error(Box::new(Closed::new()))),
            }),
            State::Done(result) => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err(Rj::map_error(Box::new(Closed::new())))),
            ),
        }
    }
}
