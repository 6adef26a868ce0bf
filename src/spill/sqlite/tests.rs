use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::Priority;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spillway-sqlite-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("spill.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn job(priority: Priority, body: &str, key: Option<&str>) -> NewJob {
    let mut headers = HeaderMap::new();
    headers.append("x-bin", HeaderValue::from_bytes(b"\x80\xff ok").unwrap());
    headers.append("content-type", HeaderValue::from_static("text/plain"));
    NewJob {
        priority,
        method: Method::POST,
        uri: "/likes?n=1".parse().unwrap(),
        headers,
        body: Bytes::from(body.to_owned()),
        idempotency_key: key.map(str::to_owned),
    }
}

fn new_id(e: Enqueued) -> JobId {
    match e {
        Enqueued::New(id) => id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_job_round_trips_with_binary_headers_and_body() {
    let store = SqliteStore::open_in_memory().unwrap();
    let sent = job(Priority::High, "\u{0}body\u{ff}", None);
    let id = new_id(
        store
            .enqueue(vec![sent.clone()], Bounds::default())
            .await
            .unwrap()[0],
    );
    let leased = store.lease(10, LEASE).await.unwrap();
    assert_eq!(leased.len(), 1);
    let got = &leased[0];
    assert_eq!((got.id, got.attempt), (id, 1));
    assert_eq!(got.request.priority, Priority::High);
    assert_eq!(got.request.method, Method::POST);
    assert_eq!(got.request.uri, sent.uri);
    assert_eq!(got.request.headers, sent.headers);
    assert_eq!(got.request.body, sent.body);
}

#[tokio::test]
async fn jobs_are_leased_highest_priority_first_then_oldest_first() {
    let store = SqliteStore::open_in_memory().unwrap();
    let order = [
        Priority::Low,
        Priority::Critical,
        Priority::Default,
        Priority::Critical,
        Priority::Low,
    ];
    let jobs = order
        .iter()
        .enumerate()
        .map(|(i, p)| job(*p, &i.to_string(), None))
        .collect();
    store.enqueue(jobs, Bounds::default()).await.unwrap();
    let first = store.lease(3, LEASE).await.unwrap();
    let second = store.lease(3, LEASE).await.unwrap();
    let bodies: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|j| j.request.body.clone())
        .collect();
    assert_eq!(bodies, ["1", "3", "2", "0", "4"]);
    assert!(store.lease(3, LEASE).await.unwrap().is_empty());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.queued_total(), stats.running), (0, 5));
}

#[tokio::test]
async fn an_idempotency_key_answers_the_first_job_also_after_a_reopen() {
    let dir = TempDir::new("idem");
    let store = SqliteStore::open(dir.db()).unwrap();
    let answers = store
        .enqueue(
            vec![
                job(Priority::Low, "a", Some("k")),
                job(Priority::Low, "b", Some("k")),
            ],
            Bounds::default(),
        )
        .await
        .unwrap();
    let first = new_id(answers[0]);
    assert_eq!(answers[1], Enqueued::Existing(first));
    let leased = store.lease(1, LEASE).await.unwrap();
    assert_eq!(leased[0].request.idempotency_key.as_deref(), Some("k"));
    let refused = Finish::Retry {
        after: Duration::ZERO,
        counted: false,
    };
    assert!(store.finish(first, 1, refused).await.unwrap());
    drop(store);
    let store = SqliteStore::open(dir.db()).unwrap();
    let again = store
        .enqueue(vec![job(Priority::Low, "c", Some("k"))], Bounds::default())
        .await
        .unwrap();
    assert_eq!(again[0], Enqueued::Existing(first));
    assert_eq!(store.stats().await.unwrap().queued_total(), 1);
}

#[tokio::test]
async fn each_bound_stops_new_jobs() {
    let store = SqliteStore::open_in_memory().unwrap();
    let by_jobs = Bounds {
        max_jobs: 2,
        ..Bounds::default()
    };
    let answers = store
        .enqueue(
            (0..3)
                .map(|i| job(Priority::Low, &i.to_string(), None))
                .collect(),
            by_jobs,
        )
        .await
        .unwrap();
    assert!(matches!(
        answers[..],
        [Enqueued::New(_), Enqueued::New(_), Enqueued::Full]
    ));

    let store = SqliteStore::open_in_memory().unwrap();
    let weight = job(Priority::Low, "0123456789", None).weight();
    let by_bytes = Bounds {
        max_bytes: 2 * weight,
        ..Bounds::default()
    };
    let answers = store
        .enqueue(
            (0..3)
                .map(|_| job(Priority::Low, "0123456789", None))
                .collect(),
            by_bytes,
        )
        .await
        .unwrap();
    assert!(matches!(
        answers[..],
        [Enqueued::New(_), Enqueued::New(_), Enqueued::Full]
    ));

    let store = SqliteStore::open_in_memory().unwrap();
    let by_age = Bounds {
        max_age: Duration::from_millis(20),
        ..Bounds::default()
    };
    store
        .enqueue(vec![job(Priority::Low, "old", None)], by_age)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let answers = store
        .enqueue(vec![job(Priority::Low, "new", None)], by_age)
        .await
        .unwrap();
    assert_eq!(answers, [Enqueued::Full]);
}

#[tokio::test]
async fn an_expired_lease_is_replayed_and_its_late_answer_changes_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = new_id(
        store
            .enqueue(vec![job(Priority::Low, "x", None)], Bounds::default())
            .await
            .unwrap()[0],
    );
    let first = store.lease(1, Duration::from_millis(10)).await.unwrap();
    assert_eq!(first[0].attempt, 1);
    tokio::time::sleep(Duration::from_millis(40)).await;
    let second = store.lease(1, LEASE).await.unwrap();
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
    let late = Finish::Done {
        status: StatusCode::OK,
        body: Bytes::new(),
    };
    assert!(!store.finish(id, 1, late.clone()).await.unwrap());
    assert!(store.finish(id, 2, late).await.unwrap());
    assert!(matches!(
        store.status(id).await.unwrap(),
        Some(JobStatus::Done { .. })
    ));
}

#[tokio::test]
async fn retries_wait_their_backoff_and_uncounted_ones_give_the_attempt_back() {
    let store = SqliteStore::open_in_memory().unwrap();
    let id = new_id(
        store
            .enqueue(vec![job(Priority::Low, "x", None)], Bounds::default())
            .await
            .unwrap()[0],
    );
    store.lease(1, LEASE).await.unwrap();
    let refused = Finish::Retry {
        after: Duration::ZERO,
        counted: false,
    };
    assert!(store.finish(id, 1, refused).await.unwrap());
    let again = store.lease(1, LEASE).await.unwrap();
    assert_eq!(
        again[0].attempt, 1,
        "an uncounted retry is the same attempt again"
    );
    let failed = Finish::Retry {
        after: Duration::from_millis(80),
        counted: true,
    };
    assert!(store.finish(id, 1, failed).await.unwrap());
    assert!(
        store.lease(1, LEASE).await.unwrap().is_empty(),
        "leased before its backoff"
    );
    assert_eq!(
        store.status(id).await.unwrap(),
        Some(JobStatus::Queued {
            ahead: 0,
            attempts: 1
        })
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.lease(1, LEASE).await.unwrap()[0].attempt, 2);
}

#[tokio::test]
async fn finished_jobs_drop_their_body_report_their_end_and_are_pruned() {
    let store = SqliteStore::open_in_memory().unwrap();
    let answers = store
        .enqueue(
            vec![
                job(Priority::Low, "done", None),
                job(Priority::Low, "fails", None),
            ],
            Bounds::default(),
        )
        .await
        .unwrap();
    let (done, failed) = (new_id(answers[0]), new_id(answers[1]));
    assert!(store.stats().await.unwrap().bytes > 0);
    store.lease(2, LEASE).await.unwrap();
    let body = Bytes::from_static(b"created");
    store
        .finish(
            done,
            1,
            Finish::Done {
                status: StatusCode::CREATED,
                body: body.clone(),
            },
        )
        .await
        .unwrap();
    store
        .finish(
            failed,
            1,
            Finish::Failed {
                reason: "answered 500".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.status(done).await.unwrap(),
        Some(JobStatus::Done {
            status: StatusCode::CREATED,
            body
        })
    );
    assert_eq!(
        store.status(failed).await.unwrap(),
        Some(JobStatus::Failed {
            attempts: 1,
            reason: "answered 500".into()
        })
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.bytes, stats.done, stats.failed, stats.running),
        (0, 1, 1, 0)
    );
    assert_eq!(store.prune(Duration::from_secs(60)).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.prune(Duration::from_millis(5)).await.unwrap(), 2);
    assert_eq!(store.status(done).await.unwrap(), None);
}

#[tokio::test]
async fn queued_jobs_and_the_tally_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let store = SqliteStore::open(dir.db()).unwrap();
    let jobs = (0..10)
        .map(|i| job(Priority::ALL[i % 4], &i.to_string(), None))
        .collect();
    store.enqueue(jobs, Bounds::default()).await.unwrap();
    store.lease(3, LEASE).await.unwrap();
    let before = store.stats().await.unwrap();
    drop(store);
    let store = SqliteStore::open(dir.db()).unwrap();
    let after = store.stats().await.unwrap();
    assert_eq!(
        (after.queued, after.running, after.bytes),
        (before.queued, before.running, before.bytes)
    );
    assert_eq!(after.queued_total(), 7);
}

#[tokio::test]
async fn status_counts_the_jobs_ahead_and_refuses_a_wrong_tag() {
    let store = SqliteStore::open_in_memory().unwrap();
    let answers = store
        .enqueue(
            vec![
                job(Priority::Low, "a", None),
                job(Priority::High, "b", None),
                job(Priority::Low, "c", None),
            ],
            Bounds::default(),
        )
        .await
        .unwrap();
    let last = new_id(answers[2]);
    assert_eq!(
        store.status(last).await.unwrap(),
        Some(JobStatus::Queued {
            ahead: 2,
            attempts: 0
        })
    );
    let forged = JobId {
        tag: last.tag ^ 1,
        ..last
    };
    assert_eq!(store.status(forged).await.unwrap(), None);
    assert!(
        !store
            .finish(
                forged,
                1,
                Finish::Failed {
                    reason: String::new()
                }
            )
            .await
            .unwrap()
    );
}
