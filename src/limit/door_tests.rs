//! The forecast at the door, with a paused clock: refusals by expected wait
//! and by deadline, the priorities a shedder is told to refuse, and the
//! return to queueing once an overload is over.

use std::{sync::Arc, time::Duration};

use tokio::time::{Instant, advance};

use super::{
    Gradient, LimitHandle, Outcome, Permit,
    admission::{Admission, Limiter},
    queue::QueueConfig,
};
use crate::{LoadSignal, Priority, Reason};

const MS: Duration = Duration::from_millis(1);

/// A limiter of exactly two slots whose forecast has seen requests of `rtt`
/// (100 ms: 20 requests a second). `max_queue` is fixed at 100, so only the
/// forecast refuses.
async fn two_slots(rtt: Duration) -> (Arc<Limiter>, LimitHandle) {
    limiter(2, rtt, FIXED_QUEUE).await
}

/// A queue of 100 whatever the limit.
const FIXED_QUEUE: QueueConfig = QueueConfig {
    max_len: 100,
    auto_len: false,
    ..QueueConfig::DEFAULT
};

/// A limiter of exactly `slots` slots whose forecast has seen requests of
/// `rtt`.
async fn limiter(slots: usize, rtt: Duration, config: QueueConfig) -> (Arc<Limiter>, LimitHandle) {
    let gradient = Gradient::builder()
        .initial_limit(slots)
        .min_limit(slots)
        .max_limit(slots)
        .build()
        .unwrap();
    let shared = Arc::new(Limiter::new(Box::new(gradient), config, "limit".into()));
    let handle = LimitHandle::new(Arc::clone(&shared));
    let running: Vec<Permit> = (0..slots)
        .map(|_| admit(&shared, Priority::Default))
        .collect();
    advance(rtt).await;
    for permit in running {
        permit.finish(Outcome::Success);
    }
    (shared, handle)
}

fn admit(shared: &Arc<Limiter>, p: Priority) -> Permit {
    match shared.acquire(p, || None) {
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
        .map(|_| shared.acquire(Priority::High, || None))
        .collect();
    assert!(queued.iter().all(|a| matches!(a, Admission::Queued(_))));
    // ... the 11th would wait 0.55 s: refused at the door, not after a wait.
    let at = Instant::now();
    let eleventh = shared.acquire(Priority::High, || None);
    assert_eq!(refused(&eleventh), Some(Reason::ExpectedWait));
    assert_eq!(Instant::now(), at);
    // A Critical goes ahead of every High: it is still let in.
    assert!(matches!(
        shared.acquire(Priority::Critical, || None),
        Admission::Queued(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_wait_is_refused_at_once() {
    let (shared, handle) = two_slots(100 * MS).await;
    let _running = [admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    let _ahead: Vec<Admission> = (0..3)
        .map(|_| shared.acquire(Priority::High, || None))
        .collect();
    // Fourth in line: 200 ms. A caller that waits 100 ms is refused now ...
    let hurried = shared.acquire(Priority::High, || Some(Instant::now() + 100 * MS));
    assert_eq!(refused(&hurried), Some(Reason::Deadline));
    // ... one that waits a second is queued ...
    let patient = shared.acquire(Priority::High, || {
        Some(Instant::now() + Duration::from_secs(1))
    });
    assert!(matches!(patient, Admission::Queued(_)));
    // ... and one whose deadline has passed is refused whatever the queue.
    let late = shared.acquire(Priority::Critical, || Some(Instant::now()));
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
        tickets.push(shared.acquire(Priority::Critical, || None));
        advance(2 * MS).await;
    }
    assert!(handle.forecasts_refusals());
    // Below Critical nothing would ever be served: every lower priority is
    // refused at the door, and a shedder in front is told so.
    assert_eq!(handle.refusing(), Some(Priority::High));
    for p in [Priority::High, Priority::Default, Priority::Low] {
        assert_eq!(
            refused(&shared.acquire(p, || None)),
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
        shared.acquire(Priority::Low, || None),
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
    let shared = Arc::new(Limiter::new(Box::new(gradient), config, "limit".into()));
    let _running = admit(&shared, Priority::Default);
    // No rtt measured yet: no forecast, so three wait, whatever their wait.
    let queued: Vec<Admission> = (0..3)
        .map(|_| shared.acquire(Priority::Low, || None))
        .collect();
    assert!(queued.iter().all(|a| matches!(a, Admission::Queued(_))));
    assert!(matches!(
        shared.acquire(Priority::Low, || None),
        Admission::Rejected(Reason::QueueFull, _)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_tier_at_the_margin_leaves_room_in_the_queue_for_the_tiers_above() {
    // Two slots, 100 ms: 20 a second; the queue holds max(2 limits, 8) = 8.
    let (shared, handle) = limiter(2, 100 * MS, QueueConfig::default()).await;
    let _running = [admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    // Default may fill half of it: four wait ...
    let _defaults: Vec<Admission> = (0..4)
        .map(|_| shared.acquire(Priority::Default, || None))
        .collect();
    assert_eq!(handle.queued(), 4);
    // ... and the fifth, forecast to wait only 250 ms, is refused at once:
    // the rest is for the tiers above.
    let fifth = shared.acquire(Priority::Default, || None);
    assert_eq!(refused(&fifth), Some(Reason::QueueFull));
    // High and Critical then join without throwing out a Default waiter
    // that has been waiting.
    let above: Vec<Admission> = [Priority::High, Priority::High, Priority::Critical]
        .into_iter()
        .map(|p| shared.acquire(p, || None))
        .collect();
    assert!(above.iter().all(|a| matches!(a, Admission::Queued(_))));
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.queued_by_priority.default, 4);
    assert_eq!(snapshot.queued, 7);
    assert_eq!(snapshot.rejected_queue_full, 1);
}

#[tokio::test(start_paused = true)]
async fn a_lull_in_the_arrivals_above_is_no_room_for_a_lower_tier() {
    // One slot, 5 ms: 200 a second.
    let (shared, _handle) = limiter(1, 5 * MS, FIXED_QUEUE).await;
    // High takes 180 a second of the 200 for a second. (Each step, a Low
    // that finds the slot taken passes the door and leaves at once: the
    // door is where the rates are measured.)
    for step in 0..200 {
        if step % 10 == 9 {
            advance(5 * MS).await;
            continue;
        }
        let high = admit(&shared, Priority::High);
        drop(shared.acquire(Priority::Low, || None));
        advance(5 * MS).await;
        high.finish(Outcome::Success);
    }
    // 30 ms without a High: over 40 ms, the recent rate falls to 85 a
    // second, which would leave a Low behind seven others a wait of about
    // 100 ms. Over the settled quarter second, High still takes 157 of the
    // 200: the same Low would wait some 530 ms, more than half its second.
    advance(30 * MS).await;
    let _critical = admit(&shared, Priority::Critical);
    let ahead: Vec<Admission> = (0..7)
        .map(|_| shared.acquire(Priority::Critical, || None))
        .collect();
    assert!(ahead.iter().all(|a| matches!(a, Admission::Queued(_))));
    let low = shared.acquire(Priority::Low, || None);
    assert_eq!(refused(&low), Some(Reason::ExpectedWait));
}

#[tokio::test(start_paused = true)]
async fn a_queue_of_critical_alone_takes_more_critical_while_the_door_lets_it_in() {
    // Two slots, 100 ms: 20 a second; the queue holds max(2 limits, 8) = 8.
    let (shared, handle) = limiter(2, 100 * MS, QueueConfig::default()).await;
    let _running = [admit(&shared, Priority::Low), admit(&shared, Priority::Low)];
    let mut waiting: Vec<Admission> = (0..8)
        .map(|_| shared.acquire(Priority::Critical, || None))
        .collect();
    assert!(waiting.iter().all(|a| matches!(a, Admission::Queued(_))));
    // The queue is full of Critical, with nothing below to throw out: the
    // ninth still waits, forecast to be served within half its second (a
    // small limit's short queue would refuse it at once, and an instance
    // refusing at once looks the least loaded to a balancer) ...
    waiting.push(shared.acquire(Priority::Critical, || None));
    assert!(matches!(waiting[8], Admission::Queued(_)));
    assert_eq!(handle.queued(), 9);
    // ... and so does the tenth (forecast: 0.5 s), while the eleventh is
    // refused at the door: the forecast, not the length, bounds Critical.
    waiting.push(shared.acquire(Priority::Critical, || None));
    assert!(matches!(waiting[9], Admission::Queued(_)));
    let eleventh = shared.acquire(Priority::Critical, || None);
    assert_eq!(refused(&eleventh), Some(Reason::ExpectedWait));
    assert_eq!(handle.queued(), 10);
}
