//! The way one caller's result travels back: a one-shot mailbox that a
//! handle reuses for its next call.
//!
//! A `tokio::sync::oneshot` channel allocates its shared state on every
//! call. A [`Batch`](super::Batch) handle usually awaits one call at a time
//! (`ready().await`, `call`, `.await`), so it keeps the [`Mailbox`] of its
//! last call and, once both ends of that call are gone (`Arc::get_mut`
//! succeeds), resets it for the next one instead of allocating. A handle
//! whose last call is still pending (or whose worker has not yet let go of
//! it) takes a new mailbox, so reuse never changes who receives what.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering, fence},
    },
    task::{Context, Poll, Waker},
};

use crate::{BoxError, sync::lock};

/// The state both ends share.
#[derive(Debug)]
pub(super) struct Mailbox<R> {
    // Set when the caller's future is dropped; read by the worker to skip
    // items nobody waits for, without taking the lock.
    abandoned: AtomicBool,
    state: Mutex<State<R>>,
}

#[derive(Debug)]
struct State<R> {
    result: Option<Result<R, BoxError>>,
    waker: Option<Waker>,
    // The worker answered, or dropped its end without answering.
    done: bool,
}

impl<R> Mailbox<R> {
    fn new() -> Self {
        Self {
            abandoned: AtomicBool::new(false),
            state: Mutex::new(State {
                result: None,
                waker: None,
                done: false,
            }),
        }
    }

    /// The two ends of a call, reusing `spare` when nobody else holds it.
    pub(super) fn pair(spare: &mut Option<Arc<Self>>) -> (Answer<R>, Receiver<R>) {
        let mailbox = match spare {
            Some(mailbox) if mailbox.is_clean() => mailbox.clone(),
            _ => spare.insert(Arc::new(Self::new())).clone(),
        };
        (
            Answer {
                mailbox: mailbox.clone(),
                sent: false,
            },
            Receiver {
                mailbox,
                taken: false,
            },
        )
    }

    /// Both ends of the last call are gone and it ended with the result
    /// taken, which leaves the state as new (`Receiver::poll_recv` clears
    /// `done`; `finish` took the waker). A mailbox whose caller gave up is
    /// not reused.
    ///
    /// A load, not `Arc::get_mut`'s read-modify-write: the other ends'
    /// `Arc` drops release, and the fence acquires, so everything they did
    /// to the mailbox is seen here.
    fn is_clean(self: &Arc<Self>) -> bool {
        if Arc::strong_count(self) != 1 {
            return false;
        }
        fence(Ordering::Acquire);
        !self.abandoned.load(Ordering::Relaxed)
    }

    fn finish(&self, result: Option<Result<R, BoxError>>) {
        let waker = {
            let mut state = lock(&self.state);
            state.result = result;
            state.done = true;
            state.waker.take()
        };
        // Woken outside the lock: a waker may run arbitrary code.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The worker's end: answers one caller, once. Dropping it unanswered tells
/// the caller the worker stopped.
#[derive(Debug)]
pub(super) struct Answer<R> {
    mailbox: Arc<Mailbox<R>>,
    sent: bool,
}

impl<R> Answer<R> {
    pub(super) fn send(mut self, result: Result<R, BoxError>) {
        self.sent = true;
        self.mailbox.finish(Some(result));
    }

    /// The caller dropped its future: nobody will read the result.
    pub(super) fn is_closed(&self) -> bool {
        self.mailbox.abandoned.load(Ordering::Relaxed)
    }
}

impl<R> Drop for Answer<R> {
    fn drop(&mut self) {
        if !self.sent {
            self.mailbox.finish(None);
        }
    }
}

/// The caller's end.
#[derive(Debug)]
pub(super) struct Receiver<R> {
    mailbox: Arc<Mailbox<R>>,
    taken: bool,
}

impl<R> Receiver<R> {
    /// The result once answered; `Err(())` if the worker dropped its end
    /// without answering (or the result was already taken).
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Result<R, BoxError>, ()>> {
        if self.taken {
            return Poll::Ready(Err(()));
        }
        let mut state = lock(&self.mailbox.state);
        if state.done {
            self.taken = true;
            // As new, for the handle's next call.
            state.done = false;
            return Poll::Ready(state.result.take().ok_or(()));
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => {
                let old = waker.replace(cx.waker().clone());
                drop(state);
                drop(old);
            }
        }
        Poll::Pending
    }
}

impl<R> Drop for Receiver<R> {
    fn drop(&mut self) {
        if !self.taken {
            self.mailbox.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll<R>(rx: &mut Receiver<R>) -> Poll<Result<Result<R, BoxError>, ()>> {
        rx.poll_recv(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_mailbox_is_reused_once_both_ends_are_gone() {
        let mut spare = None;
        let (tx, mut rx) = Mailbox::pair(&mut spare);
        let first = Arc::as_ptr(spare.as_ref().unwrap());
        assert!(poll(&mut rx).is_pending());
        tx.send(Ok(1));
        assert!(matches!(poll(&mut rx), Poll::Ready(Ok(Ok(1)))));
        drop(rx);

        let (tx, mut rx) = Mailbox::pair(&mut spare);
        assert_eq!(Arc::as_ptr(spare.as_ref().unwrap()), first, "reused");
        assert!(!tx.is_closed(), "reset");
        assert!(poll(&mut rx).is_pending(), "reset");

        // The last call is still pending: the next one gets a new mailbox.
        let (tx2, mut rx2) = Mailbox::pair(&mut spare);
        assert_ne!(Arc::as_ptr(spare.as_ref().unwrap()), first);
        tx2.send(Ok(2));
        tx.send(Ok(3));
        assert!(matches!(poll(&mut rx2), Poll::Ready(Ok(Ok(2)))));
        assert!(matches!(poll(&mut rx), Poll::Ready(Ok(Ok(3)))));
    }

    #[test]
    fn dropping_either_end_is_seen_by_the_other() {
        let mut spare = None;
        let (tx, rx) = Mailbox::<u32>::pair(&mut spare);
        let abandoned = Arc::as_ptr(spare.as_ref().unwrap());
        drop(rx);
        assert!(tx.is_closed());
        drop(tx);

        // A mailbox whose caller gave up is not reused.
        let (tx, mut rx) = Mailbox::<u32>::pair(&mut spare);
        let unanswered = Arc::as_ptr(spare.as_ref().unwrap());
        assert_ne!(unanswered, abandoned);
        assert!(!tx.is_closed());
        drop(tx);
        assert!(matches!(poll(&mut rx), Poll::Ready(Err(()))));
        // Polling again answers the same way instead of panicking.
        assert!(matches!(poll(&mut rx), Poll::Ready(Err(()))));
        drop(rx);

        // One whose caller learned that nobody answered is.
        let (_tx, mut rx) = Mailbox::<u32>::pair(&mut spare);
        assert_eq!(Arc::as_ptr(spare.as_ref().unwrap()), unanswered);
        assert!(poll(&mut rx).is_pending());
    }
}
