//! The forecast at the door, with a paused clock: refusals by expected wait
//! and by deadline, the priorities a shedder is told to refuse, and the
//! return to queueing once an overload is over.

use std::{sync::Arc, time::Duration};

use tokio::time::{Instant, advance};

use super::{
    Gradient, LimitHandle, Outcome, Permit,
    queue::{Admission, QueueConfig, Shared},
};
use crate::{LoadSignal, Priority, Reason};

const MS: Duration = Duration::from_millis(1);

/// A limiter of exactly two slots whose forecast has seen requests of `rtt`
/// (100 ms: 20 requests a second). `max_queue` is fixed at 100, so only the
/// forecast refuses.
async fn two_slots(rtt: Duration) -> (Arc<Shared>, LimitHandle) {
    let gradient = Gradient::builder()
        .initial_limit(2)
        .min_limit(2)
        .max_limit(2)
        .build()
        .unwrap();
    let config = QueueConfig {
        max_len: 100,
        auto_len: false,
        ..QueueConfig::default()
    };
    let shared = Arc::new(Shared::new(Box::new(gradient), config));
    let handle = LimitHandle::new(Arc::clone(&shared));
    let (a, b) = (
        admit(&shared, Priority::Default),
        admit(&shared, Priority::Default),
    );
    advance(rtt).await;
    a.finish(Outcome::Success);
    b.finish(Outcome::Success);
    (shared, handle)
}

fn admit(shared: &Arc<Shared>, p: Priority) -> Permit {
    match shared.acquire(p, None) {
        Admission::Admitted(permit) => permit,
        _ => panic!("not admitted"),
    }
}

fn refused(a: &Admission) -> Option<Reason> {
    match a {
        Admission::Rejected(reason, hint) => {
            assert!(hint.is_some(), "a refusal carries a drain-time hint");
            Some(*reason)
        }
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_would_wait_too_long_is_refused_at_once() {
    let (shared, _handle) = two_slots(100 * MS).await;
    let _running = [admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    // 20/s: the waiters at positions 1..=10 wait at most 0.5 s, half the
    // 1 s queue timeout, and are queued ...
    let queued: Vec<Admission> = (0..10)
        .map(|_| shared.acquire(Priority::High, None))
        .collect();
    assert!(queued.iter().all(|a| matches!(a, Admission::Queued(_))));
    // ... the 11th would wait 0.55 s: refused at the door, not after a wait.
    let at = Instant::now();
    let eleventh = shared.acquire(Priority::High, None);
    assert_eq!(refused(&eleventh), Some(Reason::ExpectedWait));
    assert_eq!(Instant::now(), at);
    // A Critical goes ahead of every High: it is still let in.
    assert!(matches!(
        shared.acquire(Priority::Critical, None),
        Admission::Queued(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_wait_is_refused_at_once() {
    let (shared, handle) = two_slots(100 * MS).await;
    let _running = [admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    let _ahead: Vec<Admission> = (0..3)
        .map(|_| shared.acquire(Priority::High, None))
        .collect();
    // Fourth in line: 200 ms. A caller that waits 100 ms is refused now ...
    let hurried = shared.acquire(Priority::High, Some(Instant::now() + 100 * MS));
    assert_eq!(refused(&hurried), Some(Reason::Deadline));
    // ... one that waits a second is queued ...
    let patient = shared.acquire(
        Priority::High,
        Some(Instant::now() + Duration::from_secs(1)),
    );
    assert!(matches!(patient, Admission::Queued(_)));
    // ... and one whose deadline has passed is refused whatever the queue.
    let late = shared.acquire(Priority::Critical, Some(Instant::now()));
    assert_eq!(refused(&late), Some(Reason::Deadline));
    assert_eq!(handle.snapshot().rejected_deadline, 2);
}

#[tokio::test(start_paused = true)]
async fn higher_priorities_that_take_every_slot_refuse_the_lower_ones_and_recover() {
    // 10 ms requests: 200 a second.
    let (shared, handle) = two_slots(10 * MS).await;
    let mut running = vec![admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    // Critical arrives at 500/s, two and a half times the service rate, for
    // 100 ms.
    let mut tickets = Vec::new();
    for _ in 0..50 {
        tickets.push(shared.acquire(Priority::Critical, None));
        advance(2 * MS).await;
    }
    assert!(handle.forecasts_refusals());
    // Below Critical nothing would ever be served: every lower priority is
    // refused at the door, and a shedder in front is told so.
    assert_eq!(handle.refusing(), Some(Priority::High));
    for p in [Priority::High, Priority::Default, Priority::Low] {
        assert_eq!(
            refused(&shared.acquire(p, None)),
            Some(Reason::ExpectedWait),
            "{p}"
        );
    }
    // The overload ends: no more Critical arrivals; the queue drains.
    drop(tickets);
    running.clear();
    assert_eq!(handle.queued(), 0);
    // With nobody waiting, nothing is refused on the forecast's word ...
    assert_eq!(handle.refusing(), None);
    // ... and within tens of milliseconds of calm the rates have fallen:
    // a Low that finds the limit reached is queued again.
    advance(60 * MS).await;
    let _busy = [
        admit(&shared, Priority::Default),
        admit(&shared, Priority::Default),
    ];
    advance(60 * MS).await;
    assert!(matches!(
        shared.acquire(Priority::Low, None),
        Admission::Queued(_)
    ));
    assert_eq!(handle.refusing(), None);
}

#[tokio::test(start_paused = true)]
async fn without_a_forecast_the_queue_is_bounded_by_length_and_time_only() {
    let gradient = Gradient::builder()
        .initial_limit(1)
        .min_limit(1)
        .build()
        .unwrap();
    let config = QueueConfig {
        max_len: 3,
        auto_len: false,
        ..QueueConfig::default()
    };
    let shared = Arc::new(Shared::new(Box::new(gradient), config));
    let _running = admit(&shared, Priority::Default);
    // No rtt measured yet: no forecast, so three wait, whatever their wait.
    let queued: Vec<Admission> = (0..3)
        .map(|_| shared.acquire(Priority::Low, None))
        .collect();
    assert!(queued.iter().all(|a| matches!(a, Admission::Queued(_))));
    assert!(matches!(
        shared.acquire(Priority::Low, None),
        Admission::Rejected(Reason::QueueFull, _)
    ));
}
