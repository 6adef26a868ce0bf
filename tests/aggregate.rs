//! `Aggregate`: interval, key-bound and shutdown flushes, backpressure,
//! stacked tiers, and exactness (property test).

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_spillway::{
    BoxError,
    aggregate::{Aggregate, AggregateConfig, Merge, ShutDown},
};

type Flushes = Arc<Mutex<Vec<(Duration, HashMap<u32, u64>)>>>;

fn recorder(
    start: Instant,
    flushes: Flushes,
) -> impl Service<HashMap<u32, u64>, Response = (), Error = Infallible, Future: Send> + Send + 'static
{
    service_fn(move |map: HashMap<u32, u64>| {
        flushes.lock().unwrap().push((start.elapsed(), map));
        async { Ok::<_, Infallible>(()) }
    })
}

fn config(interval_ms: u64, max_keys: usize) -> AggregateConfig {
    AggregateConfig::builder()
        .interval(Duration::from_millis(interval_ms))
        .max_keys(max_keys)
        .build()
        .unwrap()
}

fn total(flushes: &Flushes) -> HashMap<u32, u64> {
    let mut sum = HashMap::new();
    for (_, map) in flushes.lock().unwrap().iter() {
        sum.merge(map.clone());
    }
    sum
}

#[tokio::test(start_paused = true)]
async fn answers_at_once_and_flushes_the_merged_map_on_the_interval() {
    let start = Instant::now();
    let flushes = Flushes::default();
    let agg = Aggregate::new(recorder(start, flushes.clone()), config(1000, 100));

    for (k, v) in [(1, 1), (2, 5), (1, 2), (1, 3)] {
        agg.clone().oneshot((k, v)).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "updates answer at once");
    tokio::time::sleep(Duration::from_millis(999)).await;
    assert!(flushes.lock().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        *flushes.lock().unwrap(),
        vec![(Duration::from_millis(1000), HashMap::from([(1, 6), (2, 5)]))]
    );
    // Nothing merged, nothing written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(flushes.lock().unwrap().len(), 1);
    assert_eq!(agg.stats().updates, 4);
    assert_eq!(agg.stats().flushes, 1);
}

#[tokio::test(start_paused = true)]
async fn flushes_at_the_key_bound_before_the_interval() {
    let start = Instant::now();
    let flushes = Flushes::default();
    let agg = Aggregate::new(recorder(start, flushes.clone()), config(60_000, 3));

    for k in [1, 2, 1, 3, 4] {
        agg.clone().oneshot((k, 1)).await.unwrap();
    }
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let got = flushes.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(Duration::ZERO, HashMap::from([(1, 2), (2, 1), (3, 1)]))]
    );
    assert_eq!(agg.stats().pending_keys, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_everything_and_refuses_later_updates() {
    let start = Instant::now();
    let flushes = Flushes::default();
    let agg = Aggregate::new(recorder(start, flushes.clone()), config(60_000, 1000));
    for k in 0..10 {
        agg.clone().oneshot((k % 4, 10)).await.unwrap();
    }
    agg.shutdown().await;
    assert_eq!(
        total(&flushes),
        HashMap::from([(0, 30), (1, 30), (2, 20), (3, 20)])
    );
    assert_eq!(start.elapsed(), Duration::ZERO);

    let err = agg.clone().oneshot((1, 1)).await.unwrap_err();
    assert!(err.is::<ShutDown>());
    // A second shutdown (from any clone) just waits for the first.
    agg.clone().shutdown().await;
    assert_eq!(flushes.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_flushes_what_is_left() {
    let flushes = Flushes::default();
    let agg = Aggregate::new(
        recorder(Instant::now(), flushes.clone()),
        config(60_000, 1000),
    );
    agg.clone().oneshot((7, 7)).await.unwrap();
    drop(agg);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(total(&flushes), HashMap::from([(7, 7)]));
}

#[tokio::test(start_paused = true)]
async fn a_slow_inner_service_applies_backpressure_at_the_key_bound() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let flushed = Arc::new(Mutex::new(HashMap::<u32, u64>::new()));
    let inner = {
        let (gate, flushed) = (gate.clone(), flushed.clone());
        service_fn(move |map: HashMap<u32, u64>| {
            let (gate, flushed) = (gate.clone(), flushed.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                flushed.lock().unwrap().merge(map);
                Ok::<_, Infallible>(())
            }
        })
    };
    let config = AggregateConfig::builder()
        .interval(Duration::from_secs(60))
        .max_keys(1)
        .max_pending_flushes(1)
        .build()
        .unwrap();
    let mut agg = Aggregate::new(inner, config);

    // Key 1 fills the map and is handed off (the only flush slot); key 2
    // fills the next map, which has nowhere to go.
    ServiceExt::<(u32, u64)>::ready(&mut agg).await.unwrap();
    Service::<(u32, u64)>::call(&mut agg, (1, 1)).await.unwrap();
    ServiceExt::<(u32, u64)>::ready(&mut agg).await.unwrap();
    Service::<(u32, u64)>::call(&mut agg, (2, 1)).await.unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        ServiceExt::<(u32, u64)>::ready(&mut agg),
    )
    .await;
    assert!(waited.is_err(), "poll_ready waits for a flush slot");
    assert_eq!(agg.stats().pending_keys, 1);

    gate.add_permits(10);
    ServiceExt::<(u32, u64)>::ready(&mut agg).await.unwrap();
    agg.shutdown().await;
    assert_eq!(*flushed.lock().unwrap(), HashMap::from([(1, 1), (2, 1)]));
}

#[tokio::test(start_paused = true)]
async fn tiers_stack_and_each_reduces_writes() {
    let start = Instant::now();
    let flushes = Flushes::default();
    let regional = Aggregate::new(recorder(start, flushes.clone()), config(10_000, 10_000));
    let apps: Vec<_> = (0..4)
        .map(|_| Aggregate::new(regional.clone(), config(1000, 10_000)))
        .collect();

    let mut events = 0u64;
    for round in 0..30u32 {
        for (i, app) in apps.iter().enumerate() {
            for page in 0..5u32 {
                app.clone()
                    .oneshot((page, u64::from(round) + i as u64))
                    .await
                    .unwrap();
                events += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for app in &apps {
        app.shutdown().await;
    }
    let app_writes: u64 = apps.iter().map(|a| a.stats().flushes).sum();
    regional.shutdown().await;

    let expected: u64 = (0..30u64)
        .map(|r| (0..4u64).map(|i| (r + i) * 5).sum::<u64>())
        .sum();
    assert_eq!(total(&flushes).values().sum::<u64>(), expected);
    let store_writes = flushes.lock().unwrap().len() as u64;
    assert_eq!(events, 600);
    assert!(app_writes <= 16, "{app_writes} app-tier flushes");
    assert!(store_writes <= 2, "{store_writes} store writes");
}

/// An inner service that fails (or panics, with `panic`) its first `fail`
/// calls, then records what it is given.
fn flaky(
    fail: usize,
    panic: bool,
    flushes: Flushes,
) -> impl Service<HashMap<u32, u64>, Response = (), Error = BoxError, Future: Send> + Send + 'static
{
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    service_fn(move |map: HashMap<u32, u64>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let flushes = flushes.clone();
        async move {
            if n < fail {
                assert!(!panic, "the store's bug");
                return Err::<(), BoxError>("store down".into());
            }
            flushes.lock().unwrap().push((Duration::ZERO, map));
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_failed_flush_is_kept_and_retried_with_backoff() {
    let flushes = Flushes::default();
    let agg = Aggregate::new(flaky(2, false, flushes.clone()), config(1000, 100));
    agg.clone().oneshot((1, 1)).await.unwrap();
    agg.clone().oneshot((2, 1)).await.unwrap();
    // The tick at 1 s fails, and so does the retry 100 ms later ...
    tokio::time::sleep(Duration::from_millis(1150)).await;
    assert_eq!(agg.stats().failed_flushes, 2);
    assert!(flushes.lock().unwrap().is_empty());
    agg.clone().oneshot((1, 5)).await.unwrap();
    // ... the next, 200 ms after that, succeeds with the kept map.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(flushes.lock().unwrap().len(), 1);
    agg.shutdown().await;
    assert_eq!(total(&flushes), HashMap::from([(1, 6), (2, 1)]));
    let stats = agg.stats();
    assert_eq!((stats.failed_flushes, stats.retries), (2, 2));
    assert_eq!(stats.keys_dropped, 0);
    // Only what the inner service took counts as flushed.
    let taken: usize = flushes.lock().unwrap().iter().map(|(_, m)| m.len()).sum();
    assert_eq!(stats.keys_flushed, taken as u64);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_flush_is_a_failure_not_the_end_of_the_worker() {
    let flushes = Flushes::default();
    let agg = Aggregate::new(flaky(1, true, flushes.clone()), config(100, 100));
    agg.clone().oneshot((7, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(agg.stats().failed_flushes, 1);
    // The worker carries on: later updates are accepted and everything
    // reaches the store.
    agg.clone().oneshot((7, 2)).await.unwrap();
    agg.shutdown().await;
    assert_eq!(total(&flushes), HashMap::from([(7, 3)]));
}

#[tokio::test(start_paused = true)]
async fn a_map_that_fails_every_attempt_is_given_up_counted_and_shutdown_returns() {
    let failing =
        service_fn(|_: HashMap<u32, u64>| async { Err::<(), BoxError>("store down".into()) });
    let agg = Aggregate::new(failing, config(1000, 10));
    agg.clone().oneshot((1, 1)).await.unwrap();
    agg.clone().oneshot((2, 1)).await.unwrap();
    let start = Instant::now();
    agg.shutdown().await;
    // Five attempts, with 100 + 200 + 400 + 800 ms between them.
    assert!(
        start.elapsed() <= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let stats = agg.stats();
    assert_eq!(stats.failed_flushes, 5);
    assert_eq!(stats.keys_dropped, 2);
    assert_eq!(stats.keys_flushed, 0);
}

#[test]
fn a_worker_that_stopped_fails_every_later_call_and_shutdown_returns() {
    let flushes = Flushes::default();
    // The worker lives on a runtime that is then shut down, cancelling it.
    let agg = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let agg = rt.block_on(async {
            let agg = Aggregate::new(recorder(Instant::now(), flushes.clone()), config(1000, 10));
            agg.clone().oneshot((1, 1)).await.unwrap();
            agg
        });
        drop(rt);
        agg
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = agg.clone().oneshot((2, 1)).await.unwrap_err();
        assert!(err.is::<ShutDown>(), "{err}");
        tokio::time::timeout(Duration::from_secs(5), agg.shutdown())
            .await
            .expect("shutdown returns");
    });
    // The update it held when it stopped is counted, not silently lost.
    assert_eq!(agg.stats().keys_dropped, 1);
    assert!(flushes.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_interval_of_duration_max_flushes_on_the_key_bound_and_at_shutdown() {
    let flushes = Flushes::default();
    let config = AggregateConfig::builder()
        .interval(Duration::MAX)
        .max_keys(2)
        .build()
        .unwrap();
    let agg = Aggregate::new(recorder(Instant::now(), flushes.clone()), config);
    for k in 0..5 {
        agg.clone().oneshot((k, 1)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    agg.clone().oneshot((9, 1)).await.unwrap();
    agg.shutdown().await;
    let expected: HashMap<u32, u64> = [0, 1, 2, 3, 4, 9].map(|k| (k, 1)).into();
    assert_eq!(total(&flushes), expected);
}

#[derive(Debug, Clone)]
enum Step {
    Update(u32, u64),
    Map(Vec<(u32, u64)>),
    Sleep(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u32..20, 0u64..1000).prop_map(|(k, v)| Step::Update(k, v)),
        1 => proptest::collection::vec((0u32..20, 0u64..1000), 0..8).prop_map(Step::Map),
        1 => (0u64..300).prop_map(Step::Sleep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn flushed_deltas_add_up_to_the_inputs(
        steps in proptest::collection::vec(step(), 0..200),
        max_keys in 1usize..12,
        pending in 1usize..3,
        interval in 1u64..200,
    ) {
        let rt = support::paused_runtime();
        let (inputs, flushed) = rt.block_on(async move {
            let flushes = Flushes::default();
            let config = AggregateConfig::builder()
                .interval(Duration::from_millis(interval))
                .max_keys(max_keys)
                .max_pending_flushes(pending)
                .build()
                .unwrap();
            let mut agg = Aggregate::new(recorder(Instant::now(), flushes.clone()), config);
            let mut inputs: HashMap<u32, u64> = HashMap::new();
            for step in steps {
                match step {
                    Step::Update(k, v) => {
                        inputs.merge(HashMap::from([(k, v)]));
                        ServiceExt::<(u32, u64)>::ready(&mut agg).await.unwrap();
                        Service::<(u32, u64)>::call(&mut agg, (k, v)).await.unwrap();
                    }
                    Step::Map(entries) => {
                        let mut map = HashMap::new();
                        for (k, v) in entries {
                            map.merge(HashMap::from([(k, v)]));
                        }
                        inputs.merge(map.clone());
                        ServiceExt::<HashMap<u32, u64>>::ready(&mut agg).await.unwrap();
                        Service::<HashMap<u32, u64>>::call(&mut agg, map).await.unwrap();
                    }
                    Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                }
            }
            agg.shutdown().await;
            (inputs, total(&flushes))
        });
        let nonzero = |m: HashMap<u32, u64>| m.into_iter().filter(|(_, v)| *v != 0).collect::<HashMap<_, _>>();
        prop_assert_eq!(nonzero(flushed), nonzero(inputs));
    }
}
