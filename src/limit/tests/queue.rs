//! The wait queue: order, bounds, timeouts, the standing-queue rule, cancellation.

use super::*;

#[tokio::test(start_paused = true)]
async fn waiters_are_served_by_priority_then_arrival() {
    let (mut svc, handle, started) = setup(fixed(1));
    let (first, c0) = send(&mut svc, Priority::Low, "running").await;
    let mut queued = Vec::new();
    for (p, name) in [
        (Priority::Low, "low-1"),
        (Priority::Default, "default-1"),
        (Priority::Critical, "critical-1"),
        (Priority::Low, "low-2"),
        (Priority::Critical, "critical-2"),
        (Priority::High, "high-1"),
    ] {
        queued.push(send(&mut svc, p, name).await);
    }
    assert_eq!(handle.queued(), 6);
    assert_eq!(handle.queued_by(Priority::Critical), 2);
    assert_eq!(handle.queued_by(Priority::Low), 2);
    assert_eq!(*started.lock().unwrap(), ["running"]);

    first.send(Ok(())).unwrap();
    assert_eq!(c0.await.unwrap().unwrap(), "running");
    // Finish each request as it starts: the order they start in is the
    // queue's order.
    let mut finishers = HashMap::new();
    let mut calls = Vec::new();
    for ((tx, call), name) in queued.into_iter().zip([
        "low-1",
        "default-1",
        "critical-1",
        "low-2",
        "critical-2",
        "high-1",
    ]) {
        finishers.insert(name, tx);
        calls.push(call);
    }
    for _ in 0..6 {
        settle().await;
        let last = *started.lock().unwrap().last().unwrap();
        finishers.remove(last).unwrap().send(Ok(())).unwrap();
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        *started.lock().unwrap(),
        [
            "running",
            "critical-1",
            "critical-2",
            "high-1",
            "default-1",
            "low-1",
            "low-2"
        ]
    );
    assert_eq!(handle.in_flight(), 0);
    let snap = handle.snapshot();
    assert_eq!((snap.admitted, snap.released), (7, 7));
}

#[tokio::test(start_paused = true)]
async fn full_queue_refuses_or_evicts_a_lower_priority() {
    let (mut svc, handle, started) = setup(fixed(1).max_queue(2));
    let (_run, _c0) = send(&mut svc, Priority::Default, "running").await;
    let (_a, a) = send(&mut svc, Priority::Low, "low").await;
    let (_b, _bc) = send(&mut svc, Priority::Default, "default").await;
    assert_eq!(handle.queued(), 2);

    // Same or lower priority than everything queued: refused at once.
    let (_c, c) = send(&mut svc, Priority::Low, "low-2").await;
    assert_eq!(reason(c.await.unwrap()), Reason::QueueFull);

    // Higher: the newest lowest waiter makes room.
    let (_d, _dc) = send(&mut svc, Priority::Critical, "critical").await;
    assert_eq!(reason(a.await.unwrap()), Reason::QueueFull);
    assert_eq!(handle.queued(), 2);
    assert_eq!(handle.queued_by(Priority::Critical), 1);
    assert_eq!(handle.snapshot().rejected_queue_full, 2);
    assert_eq!(*started.lock().unwrap(), ["running"]);
}

#[tokio::test(start_paused = true)]
async fn zero_queue_refuses_at_the_limit() {
    let (mut svc, _handle, _) = setup(fixed(1).max_queue(0));
    let (_run, _c0) = send(&mut svc, Priority::Critical, "running").await;
    let (_b, b) = send(&mut svc, Priority::Critical, "refused").await;
    assert_eq!(reason(b.await.unwrap()), Reason::QueueFull);
}

#[tokio::test(start_paused = true)]
async fn waiter_times_out_and_never_runs() {
    let (mut svc, handle, started) = setup(fixed(1).queue_timeout(Duration::from_millis(300)));
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_w, w) = send(&mut svc, Priority::Default, "waiter").await;
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(handle.oldest_wait(), Some(Duration::from_millis(200)));
    assert_eq!(handle.queue_delay(), Some(Duration::from_millis(200)));
    assert_eq!(handle.load(), 2);
    tokio::time::advance(Duration::from_millis(101)).await;
    settle().await;
    let refused = w.await.unwrap().unwrap_err();
    let o = find_overloaded(refused.as_ref()).unwrap();
    assert_eq!(o.reason(), Reason::QueueTimeout);
    assert_eq!(o.priority(), Some(Priority::Default));
    assert_eq!(handle.queued(), 0);
    assert_eq!(handle.oldest_wait(), None);

    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    assert_eq!(*started.lock().unwrap(), ["running"]);
    assert_eq!(handle.snapshot().rejected_queue_timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn standing_queue_shortens_the_wait_and_expired_waiters_are_refused_at_dequeue() {
    let (mut svc, handle, started) = setup(
        fixed(1)
            .queue_timeout(Duration::from_secs(1))
            .standing_queue(Duration::from_millis(100), Duration::from_millis(10)),
    );
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_old, old) = send(&mut svc, Priority::Default, "old").await;
    // The queue has held a backlog for 150 ms: it is standing.
    tokio::time::advance(Duration::from_millis(150)).await;
    let (young_tx, young) = send(&mut svc, Priority::Default, "young").await;

    // A permit frees: the old waiter is past the short timeout and is
    // refused at the head; the young one runs.
    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    settle().await;
    assert_eq!(reason(old.await.unwrap()), Reason::QueueTimeout);
    assert_eq!(*started.lock().unwrap(), ["running", "young"]);
    young_tx.send(Ok(())).unwrap();
    young.await.unwrap().unwrap();

    // A waiter arriving at a standing queue gets the short timeout itself.
    let (_run2, _c2) = send(&mut svc, Priority::Default, "running-2").await;
    let (_a, a) = send(&mut svc, Priority::Default, "a").await;
    tokio::time::advance(Duration::from_millis(120)).await;
    let (_b, b) = send(&mut svc, Priority::Default, "b").await;
    tokio::time::advance(Duration::from_millis(11)).await;
    settle().await;
    assert_eq!(reason(b.await.unwrap()), Reason::QueueTimeout);
    assert!(
        !a.is_finished(),
        "the first waiter keeps its full timeout until dequeued"
    );
    assert_eq!(handle.queued(), 1);
}

#[tokio::test(start_paused = true)]
async fn critical_waiters_keep_the_full_timeout_in_a_standing_queue() {
    let (mut svc, _handle, started) = setup(
        fixed(1)
            .queue_timeout(Duration::from_secs(1))
            .standing_queue(Duration::from_millis(100), Duration::from_millis(10)),
    );
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_low_tx, low) = send(&mut svc, Priority::Low, "low").await;
    tokio::time::advance(Duration::from_millis(150)).await;
    // The queue is standing: a Low arrival gets 10 ms, a Critical one the
    // full second.
    let (critical_tx, critical) = send(&mut svc, Priority::Critical, "critical").await;
    let (_late_tx, late) = send(&mut svc, Priority::Low, "late").await;
    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(reason(late.await.unwrap()), Reason::QueueTimeout);
    assert!(!critical.is_finished(), "Critical still waits after 200 ms");

    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    settle().await;
    assert_eq!(*started.lock().unwrap(), ["running", "critical"]);
    critical_tx.send(Ok(())).unwrap();
    critical.await.unwrap().unwrap();
    assert_eq!(reason(low.await.unwrap()), Reason::QueueTimeout);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue_and_granted_ones_release() {
    let (mut svc, handle, started) = setup(fixed(1));
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_w, w) = send(&mut svc, Priority::Default, "cancelled").await;
    assert_eq!(handle.queued(), 1);
    w.abort();
    settle().await;
    assert_eq!(handle.queued(), 0);

    // Granted but dropped before it could poll: the grant is released.
    let (tx, rx) = oneshot::channel::<Result<(), &'static str>>();
    let fut = svc.ready().await.unwrap().call(Job {
        priority: Priority::Default,
        name: "granted",
        done: rx,
    });
    assert_eq!(handle.queued(), 1);
    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 1, "granted to the waiting future");
    drop(fut);
    drop(tx);
    assert_eq!(handle.in_flight(), 0);
    let snap = handle.snapshot();
    assert_eq!(snap.admitted, snap.released);
    assert_eq!(*started.lock().unwrap(), ["running"]);
}
