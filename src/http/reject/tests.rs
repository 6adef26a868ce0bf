//! The refusal responses: statuses, headers, bodies, gRPC trailers-only answers.

use std::time::Duration;

use http_body_util::BodyExt;

use super::*;
use crate::{Priority, Reason, grpc::GRPC_RETRY_PUSHBACK_MS};

fn no_jitter() -> ProblemDetails {
    ProblemDetails::new().retry_after(RetryAfterPolicy::new().jitter(0.0).unwrap())
}

async fn body_json(res: Response<RejectBody>) -> serde_json::Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn capacity_refusal_is_503_with_problem_json() {
    let o = Overloaded::new(Reason::Shed)
        .with_priority(Priority::Low)
        .with_retry_after(Duration::from_millis(1200));
    let res = no_jitter().make_rejection(&o, &RequestInfo::new(false));
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let json = body_json(res).await;
    assert_eq!(json["status"], 503);
    assert_eq!(json["priority"], "low");
    assert_eq!(json["retry_after"], 2);
    assert_eq!(json["type"], "urn:tower-spillway:shed");
    assert_eq!(json["title"], "Service Unavailable");
}

#[tokio::test]
async fn quota_refusal_is_429_and_never_zero_seconds() {
    let o = Overloaded::new(Reason::RateLimited).with_retry_after(Duration::from_millis(5));
    let res = no_jitter().make_rejection(&o, &RequestInfo::new(false));
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    assert_eq!(body_json(res).await["priority"], serde_json::Value::Null);
}

#[test]
fn grpc_refusal_is_trailers_only() {
    let o = Overloaded::new(Reason::QueueFull).with_retry_after(Duration::from_millis(250));
    let res = no_jitter().make_rejection(&o, &RequestInfo::new(true));
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "250");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/grpc");
    assert!(res.headers().get(header::RETRY_AFTER).is_none());
    assert!(http_body::Body::is_end_stream(res.body()));

    let o = Overloaded::new(Reason::RateLimited);
    let res = no_jitter().make_rejection(&o, &RequestInfo::new(true));
    assert_eq!(res.headers()["grpc-status"], "8");
}

#[test]
fn grpc_pushback_keeps_its_milliseconds_and_fits_an_int32() {
    // 1.5 s is announced as 1,500 ms: whole seconds are for Retry-After.
    let o = Overloaded::new(Reason::Shed).with_retry_after(Duration::from_millis(1500));
    let res = no_jitter().make_rejection(&o, &RequestInfo::new(true));
    assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "1500");
    // With no cap, a huge hint is still a value peers read as a wait.
    let policy = RetryAfterPolicy::new()
        .jitter(0.0)
        .unwrap()
        .cap(Duration::MAX)
        .unwrap();
    let huge = Overloaded::new(Reason::Shed).with_retry_after(Duration::from_secs(1 << 40));
    let res = ProblemDetails::new()
        .retry_after(policy)
        .make_rejection(&huge, &RequestInfo::new(true));
    assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "2147483647");
}

#[test]
fn statuses_must_be_errors() {
    assert!(
        ProblemDetails::new()
            .capacity_status(StatusCode::OK)
            .is_err()
    );
    assert!(
        ProblemDetails::new()
            .quota_status(StatusCode::FOUND)
            .is_err()
    );
    let p = ProblemDetails::new()
        .quota_status(StatusCode::SERVICE_UNAVAILABLE)
        .unwrap();
    let res = p.make_rejection(
        &Overloaded::new(Reason::RateLimited),
        &RequestInfo::new(false),
    );
    assert_eq!(res.status(), 503);
}

#[test]
fn closure_rejection_and_extension() {
    let make = |o: &Overloaded, _: &RequestInfo| {
        let mut r = Response::new(RejectBody::new(o.reason().as_str()));
        *r.status_mut() = StatusCode::IM_A_TEAPOT;
        r
    };
    let o = Overloaded::new(Reason::Cooldown);
    let res: Response<ResponseBody<RejectBody>> =
        rejection_response(&make, &RequestInfo::new(false), o);
    assert_eq!(res.status(), 418);
    assert_eq!(res.extensions().get::<Overloaded>(), Some(&o));
}
