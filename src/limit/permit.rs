//! A request's right to run ([`Permit`]), its place in the queue while it
//! waits for one ([`Ticket`]), and what it tells the algorithm when it ends
//! ([`Outcome`]).

use std::{fmt, sync::Arc, sync::atomic::Ordering::Relaxed};

use tokio::{sync::oneshot, time::Instant};

use super::admission::Limiter;
use crate::{Priority, Reason};

/// What a request's permit tells the algorithm when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request succeeded: its rtt is a sample.
    Success,
    /// The request failed with an overload signal: a sample with a drop.
    Dropped,
    /// The request says nothing about capacity (client cancellation, a 4xx, a
    /// panic): no sample, the permit is just released.
    Ignored,
}

/// A permit granted to a waiter, sent through its channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    pub(super) start: Option<Instant>,
    pub(super) in_flight: usize,
}

pub(super) type GrantResult = Result<Grant, Reason>;

/// A request's right to run, held from admission until its outcome is known
/// (for HTTP: until the response body ends or is dropped).
///
/// Ending it releases the slot and, unless the outcome is
/// [`Outcome::Ignored`], feeds the request's rtt to the algorithm. A permit
/// dropped without [`finish`](Self::finish) (the caller went away, the inner
/// service panicked) is released as [`Outcome::Ignored`]. Either way it is
/// released exactly once.
#[must_use = "dropping a permit releases it at once"]
pub struct Permit {
    shared: Arc<Limiter>,
    start: Option<Instant>,
    in_flight: usize,
    priority: Priority,
    outcome: Outcome,
}

impl Permit {
    /// Releases the permit with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The priority the request was admitted with.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Requests in flight when this one was admitted, itself included.
    pub fn in_flight_at_admission(&self) -> usize {
        self.in_flight
    }

    pub(super) fn new(
        shared: Arc<Limiter>,
        start: Option<Instant>,
        in_flight: usize,
        priority: Priority,
    ) -> Self {
        Self {
            shared,
            start,
            in_flight,
            priority,
            outcome: Outcome::Ignored,
        }
    }

    pub(crate) fn from_grant(shared: Arc<Limiter>, grant: Grant, priority: Priority) -> Self {
        Self {
            shared,
            start: grant.start,
            in_flight: grant.in_flight,
            priority,
            outcome: Outcome::Ignored,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared
            .release(self.priority, self.start, self.in_flight, self.outcome);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("priority", &self.priority)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// A place in the wait queue.
pub(crate) struct Ticket {
    shared: Arc<Limiter>,
    id: u64,
    priority: Priority,
    pub(crate) deadline: Instant,
    rx: Option<oneshot::Receiver<GrantResult>>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    pub(super) fn new(
        shared: Arc<Limiter>,
        id: u64,
        priority: Priority,
        deadline: Instant,
        rx: oneshot::Receiver<GrantResult>,
    ) -> Self {
        Self {
            shared,
            id,
            priority,
            deadline,
            rx: Some(rx),
        }
    }

    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }

    /// Polls for a grant or a refusal.
    pub(crate) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Permit, Reason>> {
        use std::{future::Future, pin::Pin, task::Poll};
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(Reason::QueueTimeout));
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                self.rx = None;
                Poll::Ready(self.resolve(res.ok()))
            }
        }
    }

    fn resolve(&self, res: Option<GrantResult>) -> Result<Permit, Reason> {
        match res {
            Some(Ok(grant)) => Ok(Permit::from_grant(
                Arc::clone(&self.shared),
                grant,
                self.priority,
            )),
            Some(Err(reason)) => Err(reason),
            None => Err(Reason::QueueTimeout),
        }
    }

    /// The waiter's time is up: leave the queue, unless a grant or refusal
    /// raced the timer, in which case that answer stands.
    pub(crate) fn expire(&mut self) -> Result<Permit, Reason> {
        let Some(mut rx) = self.rx.take() else {
            return Err(Reason::QueueTimeout);
        };
        if self.shared.remove(self.priority, self.id) {
            self.shared.counters.queue_timeout.fetch_add(1, Relaxed);
            return Err(Reason::QueueTimeout);
        }
        self.resolve(rx.try_recv().ok())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if !self.shared.remove(self.priority, self.id) {
                // Granted before we could leave: release the permit.
                if let Ok(Ok(grant)) = rx.try_recv() {
                    drop(Permit::from_grant(
                        Arc::clone(&self.shared),
                        grant,
                        self.priority,
                    ));
                }
            }
        }
    }
}
