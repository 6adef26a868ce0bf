//! The batches in the inner service, each in a lane that is reused by a
//! later batch.
//!
//! `FuturesUnordered` allocates a task for every future it is given, and at
//! idle the worker sends a batch of one per request, so that was one
//! allocation per request. Here a lane (at most `max_in_flight` of them) is
//! allocated once: a pinned box each batch's future is written into, and a
//! waker that marks the lane woken and wakes the worker. As with
//! `FuturesUnordered`, only woken lanes are polled, so a worker woken for a
//! new item does not poll every batch in flight.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// The futures in flight, polled when woken.
pub(super) struct InFlight<F> {
    lanes: Vec<Lane<F>>,
    busy: usize,
    // The worker's own waker, woken by any lane.
    worker: Arc<AtomicWaker>,
}

struct Lane<F> {
    fut: Pin<Box<Option<F>>>,
    wake: Arc<LaneWake>,
    waker: Waker,
}

struct LaneWake {
    woken: AtomicBool,
    worker: Arc<AtomicWaker>,
}

impl Wake for LaneWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Release: pairs with the worker's swap, so whatever the future
        // did before waking is visible when it is polled.
        self.woken.store(true, Ordering::Release);
        self.worker.wake();
    }
}

impl<F> InFlight<F> {
    pub(super) fn new() -> Self {
        Self {
            lanes: Vec::new(),
            busy: 0,
            worker: Arc::new(AtomicWaker::new()),
        }
    }

    /// How many futures are in flight.
    pub(super) fn len(&self) -> usize {
        self.busy
    }

    pub(super) fn is_empty(&self) -> bool {
        self.busy == 0
    }
}

impl<F: Future> InFlight<F> {
    /// Puts `fut` in a free lane (a new one if every lane is busy); it is
    /// first polled by the next [`poll_done`](Self::poll_done).
    pub(super) fn push(&mut self, fut: F) {
        let lane = match self.lanes.iter().position(|lane| lane.fut.is_none()) {
            Some(free) => &mut self.lanes[free],
            None => {
                let wake = Arc::new(LaneWake {
                    woken: AtomicBool::new(false),
                    worker: self.worker.clone(),
                });
                self.lanes.push(Lane {
                    fut: Box::pin(None),
                    waker: Waker::from(wake.clone()),
                    wake,
                });
                let last = self.lanes.len() - 1;
                &mut self.lanes[last]
            }
        };
        lane.fut.set(Some(fut));
        lane.wake.woken.store(true, Ordering::Relaxed);
        self.busy += 1;
    }

    /// Polls every woken lane, handing each finished future's output to
    /// `done`; wakes `cx` when a lane is woken later.
    pub(super) fn poll_done(&mut self, cx: &mut Context<'_>, mut done: impl FnMut(F::Output)) {
        if self.busy == 0 {
            return;
        }
        for lane in &mut self.lanes {
            if !lane.wake.woken.swap(false, Ordering::AcqRel) {
                continue;
            }
            let Some(fut) = lane.fut.as_mut().as_pin_mut() else {
                continue;
            };
            if let Poll::Ready(output) = fut.poll(&mut Context::from_waker(&lane.waker)) {
                lane.fut.set(None);
                self.busy -= 1;
                done(output);
            }
        }
        // Registered only while something is still in flight: a batch that
        // finished on its first poll (an in-memory inner service) costs no
        // registration.
        if self.busy == 0 {
            return;
        }
        self.worker.register(cx.waker());
        // A lane woken after its poll but before this registration woke an
        // older waker, or none: poll again soon rather than miss it. (Not in
        // a loop: a future that wakes itself on every poll must not keep the
        // worker from yielding.)
        let missed = self
            .lanes
            .iter()
            .any(|lane| lane.fut.is_some() && lane.wake.woken.load(Ordering::Acquire));
        if missed {
            cx.waker().wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::{pending, ready},
        sync::atomic::AtomicUsize,
    };

    use futures_util::future::{BoxFuture, FutureExt};
    use tokio::sync::oneshot;

    use super::*;

    fn poll_done<F: Future>(flight: &mut InFlight<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        flight.poll_done(&mut Context::from_waker(Waker::noop()), |o| out.push(o));
        out
    }

    #[test]
    fn lanes_are_reused_and_only_woken_lanes_are_polled() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = |fut: BoxFuture<'static, u32>| {
            let polls = polls.clone();
            let mut fut = fut;
            futures_util::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                fut.poll_unpin(cx)
            })
            .boxed()
        };
        let mut flight = InFlight::new();
        flight.push(counted(ready(1).boxed()));
        assert_eq!(poll_done(&mut flight), vec![1]);
        assert!(flight.is_empty());

        // The free lane takes the next future: still one lane.
        let (tx, rx) = oneshot::channel::<u32>();
        flight.push(counted(rx.map(|r| r.unwrap_or(0)).boxed()));
        flight.push(counted(pending().boxed()));
        assert_eq!(flight.lanes.len(), 2);
        assert_eq!(flight.len(), 2);
        assert!(poll_done(&mut flight).is_empty());
        let before = polls.load(Ordering::Relaxed);
        // Nobody woke: nothing is polled.
        assert!(poll_done(&mut flight).is_empty());
        assert_eq!(polls.load(Ordering::Relaxed), before);

        // Only the woken lane is polled.
        tx.send(7).unwrap();
        assert_eq!(poll_done(&mut flight), vec![7]);
        assert_eq!(polls.load(Ordering::Relaxed), before + 1);
        assert_eq!(flight.len(), 1);

        flight.push(counted(ready(3).boxed()));
        assert_eq!(flight.lanes.len(), 2, "the finished lane is reused");
        assert_eq!(poll_done(&mut flight), vec![3]);
    }
}
