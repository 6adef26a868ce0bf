//! A client's limit over a server that refuses for a quota: the refusals
//! are the pacer's business, and leave the limit where it was.

use std::{convert::Infallible, time::Duration};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

use crate::{
    limit::{AdaptiveLimitLayer, Aimd, HttpOutcomes, Outcome},
    rate::{Quota, RateLimitLayer},
};

/// Sixteen callers call back to back for a second through an AIMD limit of
/// 16 over a server limited to 50 calls a second; each answer's body is
/// read to its end, where the limit learns the outcome. The limit after,
/// and the calls refused.
async fn limit_after_refusals(outcomes: HttpOutcomes) -> (usize, u64) {
    let server = RateLimitLayer::builder(Quota::per_second(50).unwrap())
        .http()
        .build()
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(16)
        .max_limit(16)
        .build()
        .unwrap();
    let limit = AdaptiveLimitLayer::builder(aimd).outcomes(outcomes).build();
    let handle = limit.handle();
    let client = limit.layer(server);
    let end = tokio::time::Instant::now() + Duration::from_secs(1);
    let callers = (0..16).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut refused = 0;
            while tokio::time::Instant::now() < end {
                let res = client.clone().oneshot(Request::new(String::new())).await;
                let Ok(res) = res else { continue };
                refused += u64::from(res.status() == StatusCode::TOO_MANY_REQUESTS);
                let _ = res.into_body().collect().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            refused
        })
    });
    let mut refused = 0;
    for caller in callers.collect::<Vec<_>>() {
        refused += caller.await.unwrap();
    }
    (handle.limit(), refused)
}

#[tokio::test(start_paused = true)]
async fn a_quotas_refusals_leave_a_clients_limit_where_it_was() {
    let (limit, refused) = limit_after_refusals(HttpOutcomes::new()).await;
    assert!(refused > 1_000, "{refused} refused");
    assert_eq!(limit, 16);
    // Counted as drops when asked: each cuts the limit.
    let strict = HttpOutcomes::new().quota_refusals(Outcome::Dropped);
    let (limit, refused) = limit_after_refusals(strict).await;
    assert!(refused > 1_000, "{refused} refused");
    assert!(limit < 4, "limit {limit}");
}
