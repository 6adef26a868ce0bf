//! One batch in the inner service, and how its result reaches each caller.

use std::{
    future::Future,
    mem,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::future::CatchUnwind;
use pin_project_lite::pin_project;

use super::{
    answer::Answer,
    error::{BatchFailed, LengthMismatch, Panicked},
    worker::CallerSpan,
};
use crate::BoxError;

/// Fails every caller in `answers`, leaving it empty for the next batch.
pub(super) fn answer_all<R>(answers: &mut Vec<Answer<R>>, err: impl Fn() -> BoxError) {
    for tx in answers.drain(..) {
        tx.send(Err(err()));
    }
}

pin_project! {
    /// One batch in the inner service; answers its callers when it resolves.
    pub(super) struct BatchCall<F, R> {
        #[pin]
        pub(super) fut: CatchUnwind<AssertUnwindSafe<F>>,
        pub(super) answers: Vec<Answer<R>>,
        pub(super) span: CallerSpan,
    }
}

/// A batch that has been answered.
pub(super) struct Finished<R> {
    /// Its callers' (now empty) list, for a later batch.
    pub(super) answers: Vec<Answer<R>>,
    /// It failed as a whole: an inner error, a length mismatch or a panic.
    pub(super) failed: bool,
}

impl<F, R, E, SE> Future for BatchCall<F, R>
where
    F: Future<Output = Result<Vec<Result<R, E>>, SE>>,
    SE: Into<BoxError>,
    E: Into<BoxError>,
{
    type Output = Finished<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        #[cfg(feature = "tracing")]
        let _entered = this.span.enter();
        #[cfg(not(feature = "tracing"))]
        let () = *this.span;
        let outcome = match this.fut.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        let mut answers = mem::take(this.answers);
        let failed = !matches!(&outcome, Ok(Ok(results)) if results.len() == answers.len());
        match outcome {
            Ok(Ok(results)) if results.len() == answers.len() => {
                for (tx, result) in answers.drain(..).zip(results) {
                    tx.send(result.map_err(Into::into));
                }
            }
            Ok(Ok(results)) => {
                let mismatch = LengthMismatch::new(answers.len(), results.len());
                #[cfg(feature = "tracing")]
                tracing::warn!(%mismatch, "batch answered with the wrong number of results");
                answer_all(&mut answers, || Box::new(mismatch));
            }
            Ok(Err(err)) => {
                let failed = BatchFailed::new(err.into());
                answer_all(&mut answers, || Box::new(failed.clone()));
            }
            Err(_panic) => answer_all(&mut answers, || Box::new(Panicked::new())),
        }
        Poll::Ready(Finished { answers, failed })
    }
}
