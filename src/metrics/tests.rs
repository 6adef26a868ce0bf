//! The reporter and the limiter's histograms against a debugging recorder:
//! every name of the module's table is registered, with its labels, and
//! carries the handles' figures.

use std::{collections::BTreeSet, time::Duration};

use ::metrics_util::{
    CompositeKey, MetricKind,
    debugging::{DebugValue, DebuggingRecorder, Snapshotter},
};

use tower::{Layer, ServiceExt};

use super::MetricsReporter;
use crate::{
    Priority,
    degrade::DegradeHandle,
    limit::{AdaptiveLimitLayer, Aimd, Fixed},
    shed::{Adaptive, PriorityShedLayer},
};

type Entry = (CompositeKey, DebugValue);

fn entries(snapshotter: &Snapshotter) -> Vec<Entry> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    let mut labels: Vec<_> = key
        .key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    labels
}

/// The value of the metric `name` with exactly `want` as labels.
fn value<'a>(entries: &'a [Entry], name: &str, want: &[(&str, &str)]) -> Option<&'a DebugValue> {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    entries
        .iter()
        .find(|(key, _)| key.key().name() == name && labels(key) == want)
        .map(|(_, v)| v)
}

fn counter(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(entries, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: no counter, found {other:?}"),
    }
}

fn gauge(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(entries, name, labels) {
        Some(DebugValue::Gauge(n)) => n.into_inner(),
        other => panic!("{name} {labels:?}: no gauge, found {other:?}"),
    }
}

/// The names in the module docs' table, with their type.
fn table() -> BTreeSet<(String, String)> {
    include_str!("mod.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `spillway_"))
        .map(|rest| {
            let mut cells = rest.split('|').map(str::trim);
            let name = format!(
                "spillway_{}",
                cells.next().unwrap_or("").trim_end_matches('`')
            );
            (name, cells.next().unwrap_or("").to_owned())
        })
        .collect()
}

fn kind(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

#[tokio::test(start_paused = true)]
async fn the_reporter_publishes_every_name_of_the_table_with_the_handles_figures() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (limit, shed, level, rate, client, reporter) =
        ::metrics::with_local_recorder(&recorder, || {
            let limit = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
                .name("db")
                .max_queue(1)
                .classify(|r: &Req| r.0)
                .build();
            let shed = PriorityShedLayer::builder(Adaptive::default()).build();
            let level = DegradeHandle::new(limit.handle());
            let rate = crate::rate::RateLimitLayer::new(crate::rate::Quota::per_second(1).unwrap());
            let client = crate::retry_after::HonorRetryAfterLayer::new();
            let reporter = MetricsReporter::new()
                .limit(&limit.handle())
                .shed("edge", &shed.handle())
                .degrade("load", &level)
                .rate("api", &rate.handle())
                .honor_retry_after("upstream", &client.handle());
            (limit, shed, level, rate, client, reporter)
        });
    let _ = (&shed, &rate, &client);

    // One admitted, one queued, one refused because the queue is full.
    let svc = limit.layer(tower::service_fn(work));
    let first = tokio::spawn(
        svc.clone()
            .oneshot((Priority::High, Duration::from_millis(30))),
    );
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot((Priority::High, Duration::ZERO)));
    tokio::task::yield_now().await;
    let third = svc.clone().oneshot((Priority::Low, Duration::ZERO)).await;
    assert!(third.is_err(), "refused: the queue is full");
    tokio::time::advance(Duration::from_millis(10)).await;
    reporter.publish();

    let e = entries(&snapshotter);
    let db = [("layer", "db")];
    assert_eq!(gauge(&e, "spillway_limit_concurrency_limit", &db), 1.0);
    assert_eq!(gauge(&e, "spillway_limit_in_flight", &db), 1.0);
    let high = [("layer", "db"), ("priority", "high")];
    assert_eq!(gauge(&e, "spillway_limit_queued", &high), 1.0);
    assert_eq!(counter(&e, "spillway_limit_admitted_total", &high), 1);
    assert_eq!(counter(&e, "spillway_limit_queued_total", &high), 1);
    let full = [("layer", "db"), ("reason", "queue_full")];
    assert_eq!(counter(&e, "spillway_limit_rejected_total", &full), 1);
    let wait = gauge(&e, "spillway_limit_oldest_wait_seconds", &db);
    assert!((wait - 0.01).abs() < 1e-3, "oldest wait {wait}");
    assert_eq!(
        gauge(&e, "spillway_shed_admission_level", &[("layer", "edge")]),
        512.0
    );
    assert_eq!(
        counter(&e, "spillway_rate_admitted_total", &[("layer", "api")]),
        0
    );
    assert_eq!(
        counter(&e, "spillway_client_calls_total", &[("layer", "upstream")]),
        0
    );

    // The first request ends after 30 ms, and the waiter is granted its slot.
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    reporter.publish();
    let e = entries(&snapshotter);
    assert_eq!(counter(&e, "spillway_limit_admitted_total", &high), 2);
    assert_eq!(gauge(&e, "spillway_limit_queued", &high), 0.0);
    match value(&e, "spillway_limit_queue_wait_seconds", &high) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.len(), 1);
            assert!((v[0].into_inner() - 0.03).abs() < 1e-3, "waited {:?}", v[0]);
        }
        other => panic!("no queue wait histogram: {other:?}"),
    }
    // Fixed takes no samples: no rtt recorded.
    match value(&e, "spillway_limit_rtt_seconds", &db) {
        Some(DebugValue::Histogram(v)) => assert!(v.is_empty()),
        other => panic!("no rtt histogram: {other:?}"),
    }
    assert_eq!(
        gauge(&e, "spillway_degrade_load_level", &[("layer", "load")]),
        level.level().index() as f64
    );

    // Every name registered is in the table, with its type, and the other
    // way round.
    let registered: BTreeSet<(String, String)> = e
        .iter()
        .map(|(key, _)| (key.key().name().to_owned(), kind(key.kind()).to_owned()))
        .collect();
    assert_eq!(registered, table());
    let _ = level;
}

#[tokio::test(start_paused = true)]
async fn a_sampling_limiter_records_each_rtt_under_its_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let limit = ::metrics::with_local_recorder(&recorder, || {
        AdaptiveLimitLayer::builder(Aimd::default())
            .classify(Priority::Default)
            .build()
    });
    assert_eq!(limit.handle().name(), "limit");
    let svc = limit.layer(tower::service_fn(work));
    for _ in 0..3 {
        svc.clone()
            .oneshot((Priority::Default, Duration::from_millis(5)))
            .await
            .unwrap();
    }
    let e = entries(&snapshotter);
    match value(&e, "spillway_limit_rtt_seconds", &[("layer", "limit")]) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.len(), 3);
            assert!(v.iter().all(|s| (s.into_inner() - 0.005).abs() < 1e-6));
        }
        other => panic!("no rtt histogram: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn spawned_publishing_runs_on_its_period_and_stops_when_dropped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (shed, reporter) = ::metrics::with_local_recorder(&recorder, || {
        let shed = PriorityShedLayer::new(crate::shed::Thresholds::ladder(100));
        let reporter = MetricsReporter::new().shed("edge", &shed.handle());
        (shed, reporter)
    });
    let guard = reporter.spawn(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let e = entries(&snapshotter);
    assert_eq!(
        gauge(
            &e,
            "spillway_shed_retry_after_seconds",
            &[("layer", "edge")]
        ),
        0.0
    );
    // A static shedder has no admission level.
    assert!(value(&e, "spillway_shed_admission_level", &[("layer", "edge")]).is_none());
    drop(guard);
    tokio::task::yield_now().await;
    let _ = shed;
    assert!(format!("{reporter:?}").contains("edge"));
}

type Req = (Priority, Duration);

/// Work that takes the request's duration.
async fn work(req: Req) -> Result<(), std::convert::Infallible> {
    tokio::time::sleep(req.1).await;
    Ok(())
}
