use tracing::Level;

use crate::log_recorder::Recorder;

use super::*;

#[tokio::test(start_paused = true)]
async fn transitions_and_summaries_not_requests() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let load = Arc::new(AtomicU64::new(1_000));
    let signal = {
        let load = Arc::clone(&load);
        move || load.load(Ordering::Relaxed) as usize
    };
    let svc = PriorityShedLayer::builder(Thresholds::ladder(100))
        .classify(by_name)
        .signal(signal)
        .build()
        .layer(ok_service());
    for _ in 0..1_000 {
        assert!(svc.clone().oneshot("low").await.is_err());
    }
    let events = std::mem::take(&mut *recorder.0.lock().unwrap());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, Level::WARN);
    assert_eq!(events[0].1, "shedding started");

    // Ten seconds on, a summary comes within sixteen refusals: a refusal
    // that has not read the clock looks at the time only every sixteenth
    // event.
    tokio::time::advance(Duration::from_secs(11)).await;
    let mut refused = 0;
    let events = loop {
        assert!(svc.clone().oneshot("low").await.is_err());
        refused += 1;
        let events = std::mem::take(&mut *recorder.0.lock().unwrap());
        if !events.is_empty() || refused == 16 {
            break events;
        }
    };
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].1,
        format!("shed {} requests in the last 10 s", 1_000 + refused)
    );

    // Load gone: a quiet period later, the tier is reported recovered.
    load.store(0, Ordering::Relaxed);
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..5_000 {
        svc.clone().oneshot("low").await.unwrap();
    }
    let events = std::mem::take(&mut *recorder.0.lock().unwrap());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, "shedding stopped");
}
