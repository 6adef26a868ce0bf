//! The future a [`Batch`](super::Batch) caller awaits.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::sync::oneshot;

use super::error::Closed;
use crate::BoxError;

/// Resolves to the caller's own item result, once its batch has been answered.
///
/// Dropping it does not disturb the batch: an item not yet sent is skipped, an
/// item already sent is still written and its result discarded.
pub struct ResponseFuture<R> {
    state: State<R>,
}

enum State<R> {
    Waiting(oneshot::Receiver<Result<R, BoxError>>),
    Failed(Option<BoxError>),
}

impl<R> ResponseFuture<R> {
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<R, BoxError>>) -> Self {
        Self {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed(Some(err)),
        }
    }
}

impl<R> fmt::Debug for ResponseFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting",
            State::Failed(_) => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<R> Future for ResponseFuture<R> {
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin`.
        match &mut self.get_mut().state {
            State::Waiting(rx) => Poll::Ready(match ready!(Pin::new(rx).poll(cx)) {
                Ok(result) => result,
                // The worker dropped this caller's sender without answering:
                // it stopped, and its batches with it.
                Err(_) => Err(Box::new(Closed::new())),
            }),
            State::Failed(err) => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| Box::new(Closed::new()))))
            }
        }
    }
}
