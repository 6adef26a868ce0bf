//! Clients with nothing but a `LearnPaceLayer` (inside the usual honouring
//! layer) against the crate's own rate limit, in virtual time: one client
//! alone, and four sharing one quota.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

use crate::{
    grpc::grpc_status,
    rate::{LearnPaceLayer, Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries},
};

/// What one client got; `settled` is `ok` as it stood after
/// [`SETTLE`].
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    settled: AtomicU64,
}

/// How long clients that start together take to find their shares: the
/// first to call takes the server's whole burst, and the cuts that follow
/// even the shares out within a few cycles.
const SETTLE: Duration = Duration::from_secs(10);

/// `clients` clients of `tasks` callers each, the `i`-th starting `i ×
/// stagger` after the first, calling back to back for `secs` against a
/// server limited to `quota` a second; gRPC requests, so the refusals carry
/// `grpc-retry-pushback-ms` to the millisecond. Each tally's `settled` is
/// its `ok` as it stood `settle` into the run.
async fn run(
    clients: u32,
    tasks: usize,
    quota: u32,
    secs: u64,
    stagger: Duration,
    settle: Duration,
) -> Vec<Arc<Tally>> {
    let server = RateLimitLayer::builder(Quota::per_second(quota).unwrap())
        .http()
        .build()
        .layer(service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut callers = Vec::new();
    let mut tallies = Vec::new();
    for c in 0..clients {
        let client = ServiceBuilder::new()
            // As a client would: refused calls wait for the pushback and
            // are tried again within the retry budget.
            .layer(
                HonorRetryAfterLayer::builder()
                    .retries(Retries::new().allow_non_idempotent(true))
                    .build(),
            )
            .layer(LearnPaceLayer::new())
            .service(server.clone());
        let tally = Arc::new(Tally::default());
        let start = t0 + stagger * c;
        for _ in 0..tasks {
            let (client, tally) = (client.clone(), Arc::clone(&tally));
            callers.push(tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                while Instant::now() < end {
                    let req = Request::post("/shop.v1.Shop/Buy")
                        .header(header::CONTENT_TYPE, "application/grpc")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let res = client.clone().oneshot(req).await.unwrap();
                    let refused = res.status() == StatusCode::TOO_MANY_REQUESTS
                        || grpc_status(res.headers()) == Some(8);
                    let counter = if refused { &tally.refused } else { &tally.ok };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tallies.push(tally);
    }
    tokio::time::sleep(settle).await;
    for t in &tallies {
        t.settled
            .store(t.ok.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    for caller in callers {
        caller.await.unwrap();
    }
    tallies
}

fn sums(tallies: &[Arc<Tally>]) -> (f64, f64) {
    let ok: u64 = tallies.iter().map(|t| t.ok.load(Ordering::Relaxed)).sum();
    let refused: u64 = tallies
        .iter()
        .map(|t| t.refused.load(Ordering::Relaxed))
        .sum();
    (ok as f64, refused as f64)
}

#[tokio::test(start_paused = true)]
async fn one_client_told_nothing_gets_most_of_the_quota_with_few_refusals() {
    let tallies = run(1, 32, 200, 20, Duration::ZERO, SETTLE).await;
    let (ok, refused) = sums(&tallies);
    let share = ok / (200.0 * 20.0);
    let refused_share = refused / (ok + refused);
    assert!(share >= 0.9, "{share} of the quota");
    assert!(refused_share <= 0.05, "{refused_share} refused");
}

#[tokio::test(start_paused = true)]
async fn four_clients_sharing_one_quota_converge_on_fair_shares() {
    let tallies = run(4, 16, 200, 30, Duration::ZERO, SETTLE).await;
    let (ok, refused) = sums(&tallies);
    let share = ok / (200.0 * 30.0);
    let refused_share = refused / (ok + refused);
    assert!(share >= 0.9, "{share} of the quota");
    assert!(refused_share <= 0.05, "{refused_share} refused");
    // Once settled, each gets its fair share, give or take a fifth.
    let since =
        |t: &Tally| (t.ok.load(Ordering::Relaxed) - t.settled.load(Ordering::Relaxed)) as f64;
    let fair = tallies.iter().map(|t| since(t)).sum::<f64>() / 4.0;
    for (i, t) in tallies.iter().enumerate() {
        let got = since(t);
        assert!(
            (got / fair - 1.0).abs() <= 0.2,
            "client {i}: {got} against a fair {fair}"
        );
    }
}

/// Four clients of `tasks` callers, the `i`-th starting `i × stagger` after
/// the first, calling for `secs` against one quota of 200 a second: the
/// quota's share they got in all, the share of calls refused, and the least
/// and the most of a fair share any got after `settle`.
async fn staggered(
    tasks: usize,
    stagger: Duration,
    secs: u64,
    settle: u64,
) -> (f64, f64, f64, f64) {
    let quota = 200;
    let settle = Duration::from_secs(settle);
    let tallies = run(4, tasks, quota, secs, stagger, settle).await;
    let (ok, refused) = sums(&tallies);
    let since =
        |t: &Tally| (t.ok.load(Ordering::Relaxed) - t.settled.load(Ordering::Relaxed)) as f64;
    let fair = tallies.iter().map(|t| since(t)).sum::<f64>() / 4.0;
    let shares = tallies.iter().map(|t| since(t) / fair);
    let (lo, hi) = shares.fold((f64::INFINITY, 0.0_f64), |(lo, hi), s| {
        (lo.min(s), hi.max(s))
    });
    (
        ok / (f64::from(quota) * secs as f64),
        refused / (ok + refused),
        lo,
        hi,
    )
}

/// Four processes started together reach the server up to a few hundred
/// milliseconds apart: over that family of starts and of callers per
/// client, each gets its fair share within a fifth 5 s into a 20 s run. A
/// client that knows the quota is paced at it from the first answer; when
/// unpaced until its first refusal, the one that came last retried every
/// refused call the moment a token came back and took the others' tokens
/// (0.74–1.53 of a fair share here).
#[tokio::test(start_paused = true)]
async fn clients_starting_apart_find_fair_shares_within_seconds() {
    for tasks in [8, 32] {
        for stagger_ms in [0, 100, 300] {
            let stagger = Duration::from_millis(stagger_ms);
            let (share, refused, lo, hi) = staggered(tasks, stagger, 20, 5).await;
            let case = format!("{tasks} tasks, {stagger_ms} ms apart");
            assert!(share >= 0.9, "{case}: {share} of the quota");
            assert!(refused <= 0.05, "{case}: {refused} refused");
            assert!(
                lo >= 0.8 && hi <= 1.2,
                "{case}: shares {lo:.2}..{hi:.2} of a fair one"
            );
        }
    }
}
