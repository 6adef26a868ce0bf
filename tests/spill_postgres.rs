//! `PostgresStore` over a real PostgreSQL server: the store's contract, and
//! two stores leasing from one queue at once. Ignored unless run with
//! `DATABASE_URL` set (see `.ci/run` and `.ci/postgres.sh`).

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::{Mutex, MutexGuard};
use tower_spillway::{
    Priority,
    spill::{Bounds, Enqueued, Finish, JobId, JobStatus, NewJob, PostgresStore, SpillStore},
};

const HOUR: Duration = Duration::from_secs(3600);

/// The tests share one table: they run one at a time, each on an empty table.
static TABLE: Mutex<()> = Mutex::const_new(());

async fn store() -> (PostgresStore, MutexGuard<'static, ()>) {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must be set for this test (see .ci/postgres.sh)");
    let guard = TABLE.lock().await;
    let store = PostgresStore::connect(&url)
        .await
        .expect("connect to DATABASE_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to DATABASE_URL");
    tokio::spawn(connection);
    client
        .batch_execute("DELETE FROM spill_jobs; UPDATE spill_tally SET jobs = 0, bytes = 0")
        .await
        .unwrap();
    (store, guard)
}

fn url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL must be set for this test")
}

fn job(priority: Priority, uri: &str) -> NewJob {
    NewJob {
        priority,
        method: Method::POST,
        uri: uri.parse().unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"{}"),
        idempotency_key: None,
    }
}

fn keyed(key: &str) -> NewJob {
    NewJob {
        idempotency_key: Some(key.to_owned()),
        ..job(Priority::Default, "/k")
    }
}

fn new_id(e: Enqueued) -> JobId {
    match e {
        Enqueued::New(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn ok() -> Finish {
    Finish::Done {
        status: StatusCode::OK,
        body: Bytes::new(),
    }
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn a_job_round_trips_with_binary_headers_and_body() {
    let (store, _table) = store().await;
    let mut headers = HeaderMap::new();
    headers.append("x-bin", HeaderValue::from_bytes(b"\x80\xfe\xff").unwrap());
    headers.append("x-bin", HeaderValue::from_static("second"));
    let sent = NewJob {
        priority: Priority::High,
        method: Method::PUT,
        uri: "/orders/7?x=%20y".parse().unwrap(),
        headers,
        body: Bytes::from_static(b"\x00\x01binary\xff"),
        idempotency_key: Some("k-1".into()),
    };
    let id = new_id(
        store
            .enqueue(vec![sent.clone()], Bounds::default())
            .await
            .unwrap()[0],
    );
    let jobs = store.lease(10, HOUR).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let got = &jobs[0];
    assert_eq!((got.id, got.attempt), (id, 1));
    assert_eq!(got.request.method, sent.method);
    assert_eq!(got.request.uri, sent.uri);
    assert_eq!(got.request.headers, sent.headers);
    assert_eq!(got.request.body, sent.body);
    assert_eq!(got.request.priority, sent.priority);
    assert_eq!(
        store.status(id).await.unwrap(),
        Some(JobStatus::Running { attempts: 1 })
    );
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn leases_go_by_priority_then_arrival() {
    let (store, _table) = store().await;
    let order = [
        (Priority::Low, "/l1"),
        (Priority::High, "/h1"),
        (Priority::Default, "/d1"),
        (Priority::Critical, "/c1"),
        (Priority::High, "/h2"),
        (Priority::Low, "/l2"),
    ];
    let jobs = order.iter().map(|(p, u)| job(*p, u)).collect();
    store.enqueue(jobs, Bounds::default()).await.unwrap();
    let first = store.lease(4, HOUR).await.unwrap();
    let rest = store.lease(10, HOUR).await.unwrap();
    let uris: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|j| j.request.uri.to_string())
        .collect();
    assert_eq!(uris, ["/c1", "/h1", "/h2", "/d1", "/l1", "/l2"]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.queued_total(), stats.running), (0, 6));
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn an_idempotency_key_answers_the_first_job_also_from_another_store() {
    let (store, _table) = store().await;
    let answers = store
        .enqueue(vec![keyed("a"), keyed("b"), keyed("a")], Bounds::default())
        .await
        .unwrap();
    let (a, b) = (new_id(answers[0]), new_id(answers[1]));
    assert_ne!(a, b);
    assert_eq!(answers[2], Enqueued::Existing(a));
    let other = PostgresStore::connect(&url()).await.unwrap();
    let again = other
        .enqueue(vec![keyed("b"), keyed("c")], Bounds::default())
        .await
        .unwrap();
    assert_eq!(again[0], Enqueued::Existing(b));
    assert!(matches!(again[1], Enqueued::New(_)));
    assert_eq!(store.stats().await.unwrap().queued_total(), 3);
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn each_bound_refuses_past_it() {
    let (store, _table) = store().await;
    let jobs = Bounds {
        max_jobs: 2,
        ..Bounds::default()
    };
    let answers = store
        .enqueue((0..3).map(|_| job(Priority::Low, "/x")).collect(), jobs)
        .await
        .unwrap();
    assert!(matches!(
        answers[..],
        [Enqueued::New(_), Enqueued::New(_), Enqueued::Full]
    ));
    store.lease(1, HOUR).await.unwrap();
    // Running jobs count too, and so do another instance's.
    let other = PostgresStore::connect(&url()).await.unwrap();
    assert_eq!(
        other
            .enqueue(vec![job(Priority::Low, "/x")], jobs)
            .await
            .unwrap(),
        [Enqueued::Full]
    );

    let weight = job(Priority::Low, "/x").weight();
    let bytes = Bounds {
        max_bytes: 3 * weight + 1,
        ..Bounds::default()
    };
    let answers = store
        .enqueue((0..2).map(|_| job(Priority::Low, "/x")).collect(), bytes)
        .await
        .unwrap();
    assert!(matches!(answers[..], [Enqueued::New(_), Enqueued::Full]));
    assert_eq!(store.stats().await.unwrap().bytes, 3 * weight);

    let age = Bounds {
        max_age: Duration::from_millis(5),
        ..Bounds::default()
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        store
            .enqueue(vec![job(Priority::High, "/y")], age)
            .await
            .unwrap(),
        [Enqueued::Full]
    );
    assert!(store.stats().await.unwrap().oldest_ms.unwrap() >= 30);
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn an_expired_lease_is_queued_again_and_its_late_answer_changes_nothing() {
    let (store, _table) = store().await;
    let id = new_id(
        store
            .enqueue(vec![job(Priority::Low, "/x")], Bounds::default())
            .await
            .unwrap()[0],
    );
    assert_eq!(
        store.lease(1, Duration::from_millis(1)).await.unwrap()[0].attempt,
        1
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = store.lease(1, HOUR).await.unwrap();
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
    assert!(!store.finish(id, 1, ok()).await.unwrap());
    assert!(store.finish(id, 2, ok()).await.unwrap());
    assert_eq!(store.stats().await.unwrap().done, 1);
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn a_retry_not_counted_gives_the_attempt_back_and_waits_its_backoff() {
    let (store, _table) = store().await;
    let id = new_id(
        store
            .enqueue(vec![job(Priority::Low, "/x")], Bounds::default())
            .await
            .unwrap()[0],
    );
    store.lease(1, HOUR).await.unwrap();
    let overloaded = Finish::Retry {
        after: Duration::ZERO,
        counted: false,
    };
    assert!(store.finish(id, 1, overloaded).await.unwrap());
    assert_eq!(
        store.status(id).await.unwrap(),
        Some(JobStatus::Queued {
            ahead: 0,
            attempts: 0
        })
    );
    assert_eq!(store.lease(1, HOUR).await.unwrap()[0].attempt, 1);
    let failed = Finish::Retry {
        after: Duration::from_millis(40),
        counted: true,
    };
    assert!(store.finish(id, 1, failed).await.unwrap());
    assert!(
        store.lease(1, HOUR).await.unwrap().is_empty(),
        "leased before its backoff"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.lease(1, HOUR).await.unwrap()[0].attempt, 2);
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn done_and_failed_jobs_report_their_end_and_are_pruned() {
    let (store, _table) = store().await;
    let answers = store
        .enqueue(
            vec![
                job(Priority::Low, "/a"),
                job(Priority::Low, "/b"),
                job(Priority::Low, "/c"),
            ],
            Bounds::default(),
        )
        .await
        .unwrap();
    let (a, b, c) = (new_id(answers[0]), new_id(answers[1]), new_id(answers[2]));
    store.lease(2, HOUR).await.unwrap();
    let made = Finish::Done {
        status: StatusCode::CREATED,
        body: Bytes::from_static(b"made"),
    };
    assert!(store.finish(a, 1, made).await.unwrap());
    assert!(
        store
            .finish(
                b,
                1,
                Finish::Failed {
                    reason: "gave up".into()
                }
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.status(a).await.unwrap(),
        Some(JobStatus::Done {
            status: StatusCode::CREATED,
            body: Bytes::from_static(b"made")
        })
    );
    assert_eq!(
        store.status(b).await.unwrap(),
        Some(JobStatus::Failed {
            attempts: 1,
            reason: "gave up".into()
        })
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.bytes, stats.done, stats.failed, stats.queued_total()),
        (job(Priority::Low, "/c").weight(), 1, 1, 1)
    );
    let forged = JobId {
        tag: c.tag ^ 1,
        ..c
    };
    assert_eq!(store.status(forged).await.unwrap(), None);
    assert_eq!(store.prune(HOUR).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.prune(Duration::from_millis(5)).await.unwrap(), 2);
    assert_eq!(store.status(a).await.unwrap(), None);
    assert!(store.status(c).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn two_stores_leasing_at_once_never_get_the_same_job() {
    let (store, _table) = store().await;
    let other = PostgresStore::connect(&url()).await.unwrap();
    const JOBS: usize = 400;
    for chunk in 0..4 {
        let jobs = (0..JOBS / 4)
            .map(|i| job(Priority::ALL[i % 4], &format!("/{chunk}/{i}")))
            .collect();
        store.enqueue(jobs, Bounds::default()).await.unwrap();
    }
    let drain = |s: PostgresStore| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = s.lease(7, HOUR).await.unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.id));
            }
        })
    };
    let tasks: Vec<_> = [store.clone(), store.clone(), other.clone(), other]
        .into_iter()
        .map(drain)
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "{id} leased twice");
        }
    }
    assert_eq!((total, seen.len()), (JOBS, JOBS));
}

#[tokio::test]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn finished_jobs_free_their_place_in_the_bounds_once() {
    let (store, _table) = store().await;
    let two = Bounds {
        max_jobs: 2,
        ..Bounds::default()
    };
    let answers = store
        .enqueue((0..3).map(|_| job(Priority::Low, "/x")).collect(), two)
        .await
        .unwrap();
    assert!(matches!(
        answers[..],
        [Enqueued::New(_), Enqueued::New(_), Enqueued::Full]
    ));
    let (a, b) = (new_id(answers[0]), new_id(answers[1]));
    store.lease(2, HOUR).await.unwrap();
    // One done, one back in the queue: one place is free.
    let again = Finish::Retry {
        after: Duration::ZERO,
        counted: true,
    };
    assert_eq!(
        store
            .finish_many(vec![(a, 1, ok()), (b, 1, again)])
            .await
            .unwrap(),
        [true, true]
    );
    let one = || store.enqueue(vec![job(Priority::Low, "/y")], two);
    assert!(matches!(one().await.unwrap()[..], [Enqueued::New(_)]));
    assert_eq!(one().await.unwrap(), [Enqueued::Full]);
    // A late end of the same attempt changes nothing, the tally included.
    assert!(!store.finish(a, 1, ok()).await.unwrap());
    assert_eq!(one().await.unwrap(), [Enqueued::Full]);

    // Rows removed by hand are counted right from the next connect.
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("DELETE FROM spill_jobs WHERE state = 0", &[])
        .await
        .unwrap();
    assert_eq!(one().await.unwrap(), [Enqueued::Full], "the tally is stale");
    let restarted = PostgresStore::connect(&url()).await.unwrap();
    let answers = restarted
        .enqueue(
            vec![job(Priority::Low, "/z"), job(Priority::Low, "/z")],
            two,
        )
        .await
        .unwrap();
    assert!(matches!(answers[..], [Enqueued::New(_), Enqueued::New(_)]));
}
