//! `Batch`: flush timing on a paused clock, result mapping, failures,
//! cancellation, backpressure, and a real PostgreSQL round trip (ignored
//! unless `DATABASE_URL` is set, see `.ci/run`).

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::join_all;
use tokio::{sync::Semaphore, time::Instant};
use tower::{Service, ServiceExt, service_fn};
use tower_spillway::{
    BoxError, Reason,
    batch::{
        Batch, BatchConfig,
        error::{BatchFailed, Closed, LengthMismatch, Panicked},
    },
    find_overloaded,
};

type Doubled = Vec<Result<u32, Infallible>>;
type Log = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

/// An inner service that doubles each item after `delay`, logging each batch
/// with the (paused) time it arrived.
fn doubler(
    delay: Duration,
    start: Instant,
    log: Log,
) -> impl Service<
    Vec<u32>,
    Response = Doubled,
    Error = Infallible,
    Future = impl Future<Output = Result<Doubled, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |items: Vec<u32>| {
        log.lock().unwrap().push((start.elapsed(), items.clone()));
        async move {
            tokio::time::sleep(delay).await;
            Ok(items.into_iter().map(|i| Ok(i * 2)).collect())
        }
    })
}

/// A batcher over a [`doubler`] that takes `delay`, the (paused) time it
/// starts from, and the log of its batches.
fn doubling(delay: Duration, config: BatchConfig<u32>) -> (Batch<u32, u32>, Instant, Log) {
    let start = Instant::now();
    let log = Log::default();
    let batch = Batch::new(doubler(delay, start, log.clone()), config);
    (batch, start, log)
}

fn sizes(log: &Log) -> Vec<usize> {
    log.lock().unwrap().iter().map(|(_, b)| b.len()).collect()
}

/// Each item's answer: the item itself.
fn echo<T>(items: Vec<T>) -> Answers<T> {
    items.into_iter().map(Ok).collect()
}

/// A batch's answers, none of which fails.
type Answers<R> = Vec<Result<R, Infallible>>;

/// An inner service that holds each batch until `gate` has a permit (and
/// hands the permit back), then answers each item with `answer(item)`.
fn gated<T, R>(
    gate: &Arc<Semaphore>,
    answer: fn(T) -> R,
) -> impl Service<
    Vec<T>,
    Response = Answers<R>,
    Error = Infallible,
    Future = impl Future<Output = Result<Answers<R>, Infallible>> + Send + use<T, R>,
>
+ Send
+ 'static
+ use<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let gate = gate.clone();
    service_fn(move |items: Vec<T>| {
        let gate = gate.clone();
        async move {
            let _ = gate.acquire().await.unwrap();
            Ok(items.into_iter().map(|i| Ok(answer(i))).collect())
        }
    })
}

/// One item a batch, one item queued, and a refusal when the queue is full.
fn refusing_config<T>() -> BatchConfig<T> {
    BatchConfig::builder()
        .max_items(1)
        .queue_capacity(1)
        .reject_when_full(true)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_request_at_idle_waits_zero() {
    let config = BatchConfig::builder()
        .max_items(100)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let (batch, start, log) = doubling(Duration::ZERO, config);

    let answer = batch.clone().oneshot(21).await.unwrap();
    assert_eq!(answer, 42);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, Duration::ZERO, "sent at once, not after max_wait");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn under_load_batches_fill_to_max_items() {
    let config = BatchConfig::builder()
        .max_items(10)
        .max_wait(Duration::from_secs(1))
        .queue_capacity(1000)
        .build()
        .unwrap();
    let (batch, start, log) = doubling(Duration::from_millis(5), config);

    let calls = (0..95).map(|i| batch.clone().oneshot(i));
    let answers = join_all(calls).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), 2 * i as u32);
    }
    assert_eq!(sizes(&log), vec![10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    let stats = batch.stats();
    assert_eq!(
        (stats.batches, stats.items, stats.failed_batches),
        (10, 95, 0)
    );
    // Never waited for max_wait: each batch left when the previous finished.
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn opportunistic_batches_grow_while_one_is_in_flight() {
    let config = BatchConfig::builder()
        .max_items(100)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let (batch, _, log) = doubling(Duration::from_millis(50), config);

    let first = tokio::spawn(batch.clone().oneshot(1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rest = join_all((2..=6).map(|i| batch.clone().oneshot(i)));
    let (first, rest) = tokio::join!(first, rest);
    assert_eq!(first.unwrap().unwrap(), 2);
    assert_eq!(rest.len(), 5);

    let log = log.lock().unwrap();
    assert_eq!(log[0], (Duration::ZERO, vec![1]));
    // The second batch left when the first finished, not after max_wait.
    assert_eq!(log[1], (Duration::from_millis(50), vec![2, 3, 4, 5, 6]));
}

#[tokio::test(start_paused = true)]
async fn max_wait_is_honoured() {
    // Opportunistic, two batches in flight, the first one slow: the second
    // batch leaves when its first item has waited max_wait.
    let config = BatchConfig::builder()
        .max_items(100)
        .max_wait(Duration::from_millis(20))
        .max_in_flight(2)
        .build()
        .unwrap();
    let (batch, _, log) = doubling(Duration::from_millis(100), config);

    let a = tokio::spawn(batch.clone().oneshot(1));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let b = tokio::spawn(batch.clone().oneshot(2));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let c = tokio::spawn(batch.clone().oneshot(3));
    for h in [a, b, c] {
        h.await.unwrap().unwrap();
    }
    let log = log.lock().unwrap();
    assert_eq!(log[0], (Duration::ZERO, vec![1]));
    assert_eq!(log[1], (Duration::from_millis(21), vec![2, 3]));
}

#[tokio::test(start_paused = true)]
async fn linger_waits_for_the_window_at_idle() {
    let config = BatchConfig::builder()
        .max_items(10)
        .linger(Duration::from_millis(30))
        .build()
        .unwrap();
    let (batch, _, log) = doubling(Duration::ZERO, config);

    let answers = join_all((1..=3).map(|i| batch.clone().oneshot(i))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(
        *log.lock().unwrap(),
        vec![(Duration::from_millis(30), vec![1, 2, 3])]
    );
}

#[tokio::test(start_paused = true)]
async fn weight_bounds_a_batch() {
    let config = BatchConfig::builder()
        .max_items(100)
        .linger(Duration::from_millis(10))
        .max_weight(10, |i: &u32| u64::from(*i))
        .build()
        .unwrap();
    let (batch, _, log) = doubling(Duration::ZERO, config);

    let answers = join_all([4, 4, 4, 20, 1].map(|i| batch.clone().oneshot(i))).await;
    assert!(answers.iter().all(Result::is_ok));
    let batches: Vec<_> = log.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    // 4+4 fits, the third 4 opens the next batch; 20 is too heavy for any
    // batch and goes alone.
    assert_eq!(batches, vec![vec![4, 4], vec![4], vec![20], vec![1]]);
}

#[tokio::test]
async fn each_caller_gets_its_own_result_and_item_errors_stay_local() {
    let inner = service_fn(|items: Vec<u32>| async move {
        Ok::<_, Infallible>(
            items
                .into_iter()
                .map(|i| {
                    if i % 3 == 0 {
                        Err(format!("item {i} rejected"))
                    } else {
                        Ok(format!("item {i}"))
                    }
                })
                .collect::<Vec<_>>(),
        )
    });
    let config = BatchConfig::builder().max_items(7).build().unwrap();
    let batch = Batch::new(inner, config);

    let answers = join_all((0..50).map(|i| batch.clone().oneshot(i))).await;
    for (i, a) in answers.into_iter().enumerate() {
        match a {
            Ok(s) => {
                assert_ne!(i % 3, 0);
                assert_eq!(s, format!("item {i}"));
            }
            Err(e) => {
                assert_eq!(i % 3, 0);
                assert_eq!(e.to_string(), format!("item {i} rejected"));
            }
        }
    }
}

/// Fails batches containing 13, answers batches containing 7 with one result
/// too few, panics on batches containing 99 (in the future) or 66 (in `call`),
/// doubles everything else.
#[derive(Clone)]
struct Moody;

impl Service<Vec<u32>> for Moody {
    type Response = Vec<Result<u32, Infallible>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, items: Vec<u32>) -> Self::Future {
        assert!(!items.contains(&66), "inner call panicked");
        Box::pin(async move {
            tokio::task::yield_now().await;
            if items.contains(&13) {
                return Err("database unavailable".into());
            }
            if items.contains(&99) {
                panic!("inner future panicked");
            }
            let mut out: Vec<_> = items.iter().map(|i| Ok(i * 2)).collect();
            if items.contains(&7) {
                out.pop();
            }
            Ok(out)
        })
    }
}

fn linger_batch() -> Batch<u32, u32> {
    let config = BatchConfig::builder()
        .max_items(3)
        .linger(Duration::from_millis(1))
        .build()
        .unwrap();
    Batch::new(Moody, config)
}

async fn three(batch: &Batch<u32, u32>, items: [u32; 3]) -> Vec<Result<u32, BoxError>> {
    join_all(items.map(|i| batch.clone().oneshot(i))).await
}

/// The worker survived: a batch of items that fail nothing is answered.
async fn assert_still_serves(batch: &Batch<u32, u32>) {
    assert!(three(batch, [4, 5, 6]).await.into_iter().all(|a| a.is_ok()));
}

#[tokio::test(start_paused = true)]
async fn batch_error_reaches_every_caller_and_the_worker_survives() {
    let batch = linger_batch();
    for answer in three(&batch, [1, 13, 2]).await {
        let err = answer.unwrap_err();
        let failed = err.downcast_ref::<BatchFailed>().expect("BatchFailed");
        assert_eq!(failed.inner().to_string(), "database unavailable");
    }
    let ok = three(&batch, [1, 2, 3]).await;
    assert_eq!(
        ok.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
}

#[tokio::test(start_paused = true)]
async fn length_mismatch_fails_the_whole_batch_and_the_worker_survives() {
    let batch = linger_batch();
    for answer in three(&batch, [1, 7, 2]).await {
        let err = answer.unwrap_err();
        let mismatch = err
            .downcast_ref::<LengthMismatch>()
            .expect("LengthMismatch");
        assert_eq!((mismatch.expected(), mismatch.actual()), (3, 2));
    }
    assert_still_serves(&batch).await;
}

#[tokio::test(start_paused = true)]
async fn inner_panics_answer_every_caller_and_the_worker_survives() {
    let batch = linger_batch();
    for items in [[1, 99, 2], [3, 66, 4]] {
        for answer in three(&batch, items).await {
            assert!(answer.unwrap_err().is::<Panicked>(), "{items:?}");
        }
    }
    assert_eq!(batch.stats().failed_batches, 2);
    assert_still_serves(&batch).await;
}

#[tokio::test(start_paused = true)]
async fn a_caller_dropping_its_future_does_not_disturb_the_batch() {
    let config = BatchConfig::builder()
        .max_items(10)
        .linger(Duration::from_millis(10))
        .build()
        .unwrap();
    let (mut batch, _, log) = doubling(Duration::from_millis(10), config);

    // Dropped before the batch leaves: the item is skipped.
    batch.ready().await.unwrap();
    let a = batch.call(1);
    batch.ready().await.unwrap();
    let b = batch.call(2);
    batch.ready().await.unwrap();
    let c = batch.call(3);
    drop(b);
    let (a, c) = tokio::join!(a, c);
    assert_eq!((a.unwrap(), c.unwrap()), (2, 6));
    assert_eq!(log.lock().unwrap()[0].1, vec![1, 3]);

    // Dropped while its batch is in flight: the others still get answers.
    let a = tokio::spawn(batch.clone().oneshot(4));
    let b = tokio::spawn(batch.clone().oneshot(5));
    let c = tokio::spawn(batch.clone().oneshot(6));
    tokio::time::sleep(Duration::from_millis(15)).await; // sent, not answered
    b.abort();
    assert_eq!(a.await.unwrap().unwrap(), 8);
    assert_eq!(c.await.unwrap().unwrap(), 12);
    assert_eq!(log.lock().unwrap()[1].1, vec![4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn worker_shutdown_answers_every_pending_caller() {
    // An inner service that never answers.
    let stuck = service_fn(|_: Vec<u32>| {
        std::future::pending::<Result<Vec<Result<u32, Infallible>>, Infallible>>()
    });
    let config = BatchConfig::builder().max_items(2).build().unwrap();
    let (batch, worker) = Batch::pair(stuck, config);
    let worker = tokio::spawn(worker);

    let calls: Vec<_> = (0..5)
        .map(|i| tokio::spawn(batch.clone().oneshot(i)))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    worker.abort();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<Closed>(), "{err}");
    }
    let err = batch.clone().oneshot(9).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_drains_the_queue_then_stops() {
    let start = Instant::now();
    let log = Log::default();
    let config = BatchConfig::builder().max_items(4).build().unwrap();
    let (mut batch, worker) = Batch::pair(
        doubler(Duration::from_millis(1), start, log.clone()),
        config,
    );
    let mut calls = Vec::new();
    for i in 0..10 {
        batch.ready().await.unwrap();
        calls.push(batch.call(i));
    }
    drop(batch);
    let worker = tokio::spawn(worker);
    let answers = join_all(calls).await;
    assert!(answers.into_iter().all(|a| a.is_ok()));
    worker.await.unwrap();
    assert_eq!(sizes(&log).iter().sum::<usize>(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_applies_backpressure_or_refuses() {
    let gate = Arc::new(Semaphore::new(0));
    let config = BatchConfig::builder()
        .max_items(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let batch = Batch::new(gated(&gate, |i: u32| i), config);

    // Item 0 is in flight, item 1 fills the (one-item) batch, 2 and 3 fill the queue.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(tokio::spawn(batch.clone().oneshot(i)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut next = batch.clone();
    let ready = tokio::time::timeout(Duration::from_secs(1), next.ready()).await;
    assert!(ready.is_err(), "poll_ready waits while the queue is full");
    assert_eq!(batch.queued(), 2);

    let refusing = Batch::new(gated(&gate, |i: u32| i), refusing_config());
    let mut held2 = Vec::new();
    for i in 0..3 {
        held2.push(tokio::spawn(refusing.clone().oneshot(i)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let err = refusing.clone().oneshot(3).await.unwrap_err();
    assert_eq!(
        find_overloaded(err.as_ref()).map(|o| o.reason()),
        Some(Reason::QueueFull)
    );

    gate.add_permits(100);
    for h in held.into_iter().chain(held2) {
        h.await.unwrap().unwrap();
    }
    next.ready().await.unwrap();
    // Every slot came back once: only `next`'s reservation is in use.
    assert_eq!(batch.queued(), 1);
    drop(next);
    assert_eq!(batch.queued(), 0);
    assert_eq!(refusing.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_handle_waiting_for_room_learns_that_the_worker_stopped() {
    let stuck = service_fn(|_: Vec<u32>| {
        std::future::pending::<Result<Vec<Result<u32, Infallible>>, Infallible>>()
    });
    let config = BatchConfig::builder()
        .max_items(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (batch, worker) = Batch::pair(stuck, config);
    let worker = tokio::spawn(worker);
    // Item 0 is in flight, item 1 fills the batch, item 2 the queue.
    let calls: Vec<_> = (0..3)
        .map(|i| tokio::spawn(batch.clone().oneshot(i)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let waiting = tokio::spawn({
        let mut next = batch.clone();
        async move { next.ready().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!waiting.is_finished(), "no room");

    worker.abort();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
    for call in calls {
        assert!(call.await.unwrap().unwrap_err().is::<Closed>());
    }
    // A call without `poll_ready` is told the same.
    let err = batch.clone().call(9).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
}

/// A service whose `poll_ready` fails until `recovered` is set, as a pool
/// that lost its connections does until it reconnects.
#[derive(Clone)]
struct BrokenReady(Arc<std::sync::atomic::AtomicBool>);

impl Service<Vec<u32>> for BrokenReady {
    type Response = Vec<Result<u32, Infallible>>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err("connection pool closed".into()))
        }
    }

    fn call(&mut self, items: Vec<u32>) -> Self::Future {
        std::future::ready(Ok(items.into_iter().map(Ok).collect()))
    }
}

#[tokio::test]
async fn a_failing_poll_ready_fails_only_its_batch() {
    let recovered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batch = Batch::new(BrokenReady(recovered.clone()), BatchConfig::default());
    let answers = join_all((0..5).map(|i| batch.clone().oneshot(i))).await;
    for a in answers {
        let err = a.unwrap_err();
        assert!(err.is::<BatchFailed>(), "{err}");
        assert!(err.to_string().contains("connection pool closed"), "{err}");
    }
    // The batcher is not closed: once the service recovers, it serves.
    recovered.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(batch.clone().oneshot(7).await.unwrap(), 7);
    assert!(batch.stats().failed_batches >= 1);
}

/// Writes rows through `Batch` into a real PostgreSQL with multi-row INSERTs.
/// Run by `.ci/run` (which starts a server) with `DATABASE_URL` set.
#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn postgres_writes_through_the_batcher() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set for this test");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to DATABASE_URL");
    tokio::spawn(connection);
    let table = format!("batch_test_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, body TEXT NOT NULL)"
        ))
        .await
        .unwrap();
    let client = Arc::new(client);
    let statements = Arc::new(Mutex::new(0usize));

    let insert = {
        let (client, table, statements) = (client.clone(), table.clone(), statements.clone());
        service_fn(move |rows: Vec<(i64, String)>| {
            let (client, table, statements) = (client.clone(), table.clone(), statements.clone());
            async move {
                let mut sql = format!("INSERT INTO {table} (id, body) VALUES ");
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
                for (i, (id, body)) in rows.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
                    params.push(id);
                    params.push(body);
                }
                sql.push_str(" RETURNING id");
                let returned = client.query(&sql, &params).await?;
                *statements.lock().unwrap() += 1;
                let mut ids: Vec<i64> = returned.iter().map(|r| r.get(0)).collect();
                ids.sort_unstable();
                // One result per row, in the rows' order.
                Ok::<_, BoxError>(
                    rows.iter()
                        .map(|(id, _)| {
                            ids.binary_search(id)
                                .map(|_| *id)
                                .map_err(|_| format!("row {id} not written"))
                        })
                        .collect::<Vec<_>>(),
                )
            }
        })
    };
    let config = BatchConfig::builder()
        .max_items(100)
        .queue_capacity(2000)
        .build()
        .unwrap();
    let batch = Batch::new(insert, config);

    let n = 1000i64;
    let answers = join_all((0..n).map(|id| batch.clone().oneshot((id, format!("row {id}"))))).await;
    for (id, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), id as i64);
    }
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, n);
    let statements = *statements.lock().unwrap();
    assert!(statements <= 11, "{statements} statements for {n} rows");

    // A duplicate key fails its whole batch and only that batch.
    let dup = batch
        .clone()
        .oneshot((0, "again".into()))
        .await
        .unwrap_err();
    assert!(dup.is::<BatchFailed>(), "{dup}");
    assert_eq!(batch.clone().oneshot((n, "more".into())).await.unwrap(), n);

    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[cfg(feature = "tracing")]
mod spans {
    use std::{
        collections::HashMap,
        sync::{
            Arc, Mutex,
            atomic::{AtomicU64, Ordering},
        },
    };

    use futures_util::future::join_all;
    use tower::{ServiceExt, service_fn};
    use tower_spillway::batch::{Batch, BatchConfig};
    use tracing::{
        Event, Id, Instrument, Metadata, Subscriber,
        span::{Attributes, Record},
    };

    use super::echo;

    /// Records span names and `follows_from` links.
    #[derive(Default)]
    struct Links {
        next: AtomicU64,
        names: Mutex<HashMap<u64, String>>,
        follows: Mutex<Vec<(u64, u64)>>,
        entered: Mutex<Vec<u64>>,
        stack: Mutex<Vec<u64>>,
        meta: Mutex<HashMap<u64, &'static Metadata<'static>>>,
    }

    #[derive(Clone, Default)]
    struct Recorder(Arc<Links>);

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
            self.0
                .names
                .lock()
                .unwrap()
                .insert(id, attrs.metadata().name().to_string());
            self.0.meta.lock().unwrap().insert(id, attrs.metadata());
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, span: &Id, follows: &Id) {
            self.0
                .follows
                .lock()
                .unwrap()
                .push((span.into_u64(), follows.into_u64()));
        }
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, span: &Id) {
            self.0.entered.lock().unwrap().push(span.into_u64());
            self.0.stack.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &Id) {
            self.0.stack.lock().unwrap().pop();
        }
        // The runtime is single-threaded, so one stack is the current thread's.
        fn current_span(&self) -> tracing_core::span::Current {
            match self.0.stack.lock().unwrap().last() {
                Some(id) => {
                    let meta = self.0.meta.lock().unwrap()[id];
                    tracing_core::span::Current::new(Id::from_u64(*id), meta)
                }
                None => tracing_core::span::Current::none(),
            }
        }
    }

    #[tokio::test]
    async fn each_batch_follows_from_its_callers_spans() {
        let recorder = Recorder::default();
        let _guard = tracing::subscriber::set_default(recorder.clone());

        let inner =
            service_fn(
                |items: Vec<u32>| async move { Ok::<_, std::convert::Infallible>(echo(items)) },
            );
        let config = BatchConfig::builder().max_items(3).build().unwrap();
        let batch = Batch::new(inner, config);

        let calls = (0..3).map(|i| {
            let span = tracing::info_span!("request", i);
            batch.clone().oneshot(i).instrument(span)
        });
        assert!(join_all(calls).await.into_iter().all(|r| r.is_ok()));

        let names = recorder.0.names.lock().unwrap().clone();
        let follows = recorder.0.follows.lock().unwrap().clone();
        let batch_spans: Vec<u64> = names
            .iter()
            .filter(|(_, n)| n.as_str() == "batch")
            .map(|(id, _)| *id)
            .collect();
        let requests: Vec<u64> = names
            .iter()
            .filter(|(_, n)| n.as_str() == "request")
            .map(|(id, _)| *id)
            .collect();
        assert!(!batch_spans.is_empty());
        // The inner service's call and future run inside the batch span.
        let entered = recorder.0.entered.lock().unwrap().clone();
        assert!(
            batch_spans.iter().all(|b| entered.contains(b)),
            "{entered:?}"
        );
        for request in requests {
            assert!(
                follows
                    .iter()
                    .any(|(b, r)| batch_spans.contains(b) && *r == request),
                "request span {request} is linked to a batch: {follows:?}"
            );
        }
    }
}

/// Handlers of a real axum server share one `Batch`: concurrent HTTP requests
/// become few inner calls, and each response carries its own item's result.
#[tokio::test]
async fn axum_handlers_share_one_batcher() {
    use axum::{Router, extract::State, routing::post};
    use http_body_util::{BodyExt, Full};

    let config = BatchConfig::builder()
        .max_items(100)
        .max_wait(Duration::from_millis(20))
        .build()
        .unwrap();
    let (batch, _, log) = doubling(Duration::from_millis(20), config);
    let app = Router::new()
        .route(
            "/double",
            post(
                |State(batch): State<Batch<u32, u32>>, body: String| async move {
                    let n: u32 = body.parse().unwrap();
                    batch.oneshot(n).await.unwrap().to_string()
                },
            ),
        )
        .with_state(batch);
    let url = format!("http://{}/double", support::serve_axum(app).await);

    let client = support::h1_client::<Full<bytes::Bytes>>();
    let requests = (0..50u32).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let req = http::Request::post(url)
                .body(Full::from(i.to_string()))
                .unwrap();
            let res = client.request(req).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (i, String::from_utf8(body.to_vec()).unwrap())
        }
    });
    for (i, answer) in join_all(requests).await {
        assert_eq!(answer, (2 * i).to_string());
    }
    let batches = sizes(&log);
    assert_eq!(batches.iter().sum::<usize>(), 50);
    assert!(
        batches.len() < 50,
        "{} batches for 50 requests",
        batches.len()
    );
}

/// The HTTP face: a batcher of HTTP requests refuses with a 503 response and
/// `Retry-After` instead of an error.
#[tokio::test(start_paused = true)]
async fn the_http_face_refuses_with_a_response() {
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use tower_spillway::Overloaded;

    let gate = Arc::new(Semaphore::new(0));
    let answer = |r: Request<String>| Response::new(format!("echo {}", r.body()));
    let batch = Batch::new(gated(&gate, answer), refusing_config()).http();

    let mut held = Vec::new();
    for i in 0..3 {
        let req = Request::post("/items").body(i.to_string()).unwrap();
        held.push(tokio::spawn(batch.clone().oneshot(req)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refused = batch
        .clone()
        .oneshot(Request::post("/items").body("3".into()).unwrap())
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(http::header::RETRY_AFTER));
    assert_eq!(
        refused.extensions().get::<Overloaded>().map(|o| o.reason()),
        Some(Reason::QueueFull)
    );

    gate.add_permits(10);
    for (i, h) in held.into_iter().enumerate() {
        let res = h.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("echo {i}"));
    }
}

/// A request body that has not ended, and says whether anyone read it.
struct Probe(Arc<std::sync::atomic::AtomicBool>);

impl http_body::Body for Probe {
    type Data = bytes::Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(None)
    }
}

/// A refused request's unfinished body is drained in the background, as the
/// other layers do, not dropped (which makes an HTTP/2 server reset the
/// stream, and h2 close the connection after enough of those).
#[tokio::test(start_paused = true)]
async fn the_http_face_drains_a_refused_body() {
    use http::{Request, Response, StatusCode};

    let gate = Arc::new(Semaphore::new(0));
    let empty = |_: Request<Probe>| Response::new(String::new());
    let batch = Batch::new(gated(&gate, empty), refusing_config()).http();
    let probe = || Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut held = Vec::new();
    for _ in 0..3 {
        let req = Request::post("/items").body(Probe(probe())).unwrap();
        held.push(tokio::spawn(batch.clone().oneshot(req)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let read = probe();
    let req = Request::post("/items")
        .body(Probe(Arc::clone(&read)))
        .unwrap();
    let refused = batch.clone().oneshot(req).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(read.load(std::sync::atomic::Ordering::SeqCst), "drained");
    gate.add_permits(10);
    for h in held {
        h.await.unwrap().unwrap();
    }
}

/// A caller that gives up while its item waits in a batch still filling is
/// left out of the batch when it is sent; a batch whose callers all gave up
/// is not sent at all.
#[tokio::test(start_paused = true)]
async fn callers_that_gave_up_before_their_batch_was_sent_are_left_out() {
    let sent = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
    let inner = {
        let sent = sent.clone();
        service_fn(move |items: Vec<u32>| {
            sent.lock().unwrap().push(items.clone());
            async move { Ok::<_, Infallible>(echo(items)) }
        })
    };
    let config = BatchConfig::builder()
        .max_items(10)
        .linger(Duration::from_millis(50))
        .build()
        .unwrap();
    let batch = Batch::new(inner, config);
    let stays = tokio::spawn(batch.clone().oneshot(1));
    let leaves = tokio::spawn(batch.clone().oneshot(2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    leaves.abort();
    assert_eq!(stays.await.unwrap().unwrap(), 1);
    assert_eq!(*sent.lock().unwrap(), vec![vec![1]]);

    let gone = tokio::spawn(batch.clone().oneshot(3));
    tokio::time::sleep(Duration::from_millis(10)).await;
    gone.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sent.lock().unwrap().len(), 1, "no empty batch");
    assert_eq!(batch.clone().oneshot(4).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_handle_calling_in_turn_gets_each_answer_once() {
    let config = BatchConfig::builder()
        .max_items(10)
        .max_in_flight(2)
        .build()
        .unwrap();
    let (mut batch, _start, log) = doubling(Duration::from_millis(5), config);

    // Awaited one after the other: the handle reuses what carried the last
    // answer, and each call still gets its own.
    for i in 0..3 {
        assert_eq!(batch.ready().await.unwrap().call(i).await.unwrap(), 2 * i);
    }
    // A call given up while its batch is in flight: its item is still
    // written, and the next call on the handle does not see its answer.
    batch.ready().await.unwrap();
    let abandoned = batch.call(10);
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(abandoned);
    batch.ready().await.unwrap();
    let next = batch.call(20);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(next.await.unwrap(), 40);
    let sent: Vec<u32> = log
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert_eq!(sent, vec![0, 1, 2, 10, 20]);
}

#[test]
fn handles_and_their_futures_are_send_and_sync() {
    fn send_sync<X: Send + Sync>() {}
    send_sync::<Batch<u32, u32>>();
    send_sync::<tower_spillway::batch::future::ResponseFuture<u32, u32, tower_spillway::AsError>>();
}
