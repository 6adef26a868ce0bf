use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

type Seen = Arc<Mutex<Vec<(Instant, Option<String>, Bytes)>>>;

/// A server answering the `n`-th call (from 0) with `answer(n)`; records each
/// call's arrival, attempt header and body.
fn server(
    answer: impl Fn(usize) -> Response<String> + Clone + Send + 'static,
) -> (
    impl Service<
        Request<ReplayBody<Full<Bytes>>>,
        Response = Response<String>,
        Error = Infallible,
        Future: Send,
    > + Clone,
    Seen,
) {
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let log = Arc::clone(&seen);
    let svc = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let log = Arc::clone(&log);
        let n = count.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            let attempt = req
                .headers()
                .get(RETRY_ATTEMPT)
                .or_else(|| req.headers().get("grpc-previous-rpc-attempts"))
                .map(|v| v.to_str().unwrap().to_owned());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            log.lock().unwrap().push((Instant::now(), attempt, body));
            Ok::<_, Infallible>(answer(n))
        }
    });
    (svc, seen)
}

fn refuse(status: u16, retry_after: Option<&'static str>) -> Response<String> {
    let mut res = Response::new(String::new());
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(v) = retry_after {
        res.headers_mut()
            .insert(header::RETRY_AFTER, v.parse().unwrap());
    }
    res
}

fn grpc_refusal(code: &'static str, pushback: Option<&'static str>) -> Response<String> {
    let mut res = Response::new(String::new());
    res.headers_mut()
        .insert("grpc-status", code.parse().unwrap());
    if let Some(p) = pushback {
        res.headers_mut()
            .insert("grpc-retry-pushback-ms", p.parse().unwrap());
    }
    res
}

fn get() -> Request<Full<Bytes>> {
    Request::new(Full::new(Bytes::from_static(b"payload")))
}

#[tokio::test(start_paused = true)]
async fn cooldown_is_shared_across_clones_and_never_ends_early() {
    let (svc, seen) = server(|n| {
        if n == 0 {
            refuse(429, Some("2"))
        } else {
            Response::new("ok".into())
        }
    });
    let layer = HonorRetryAfterLayer::new();
    let client = layer.layer(svc);
    let start = Instant::now();
    // No retries: the refusal goes back to the caller, and the cooldown opens.
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        layer.handle().cooldown_until(),
        Some(start + Duration::from_secs(2))
    );

    // Every clone, made before or after, waits for the same instant.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.oneshot(get()).await.unwrap();
            Instant::now()
        }));
    }
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a call went out during the cooldown"
    );
    for t in tasks {
        assert!(t.await.unwrap() >= start + Duration::from_secs(2));
    }
    assert_eq!(seen.lock().unwrap().len(), 9);
    let snap = layer.handle().snapshot();
    assert_eq!(
        (snap.cooldowns, snap.max_cooldown_ms, snap.calls),
        (1, 2000, 9)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_readied_before_the_cooldown_opened_waits_in_call() {
    for retries in [false, true] {
        let (svc, seen) = server(|n| {
            if n == 0 {
                refuse(503, Some("3"))
            } else {
                Response::new("ok".into())
            }
        });
        let layer = if retries {
            HonorRetryAfterLayer::builder()
                .retries(Retries::new())
                .build()
        } else {
            HonorRetryAfterLayer::new()
        };
        let client = layer.layer(svc);
        let mut readied = client.clone();
        readied.ready().await.unwrap();
        let start = Instant::now();
        if !retries {
            // The refusal that opens the cooldown.
            let res = client.clone().oneshot(get()).await.unwrap();
            assert_eq!(res.status(), 503);
        } else {
            // Another call's refusal (with retries, it waits and retries).
            tokio::spawn(client.clone().oneshot(get()));
            tokio::task::yield_now().await;
        }
        let until = layer.handle().cooldown_until().expect("cooldown open");
        assert!(until >= start + Duration::from_secs(3));
        let res = readied.call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        let at = seen.lock().unwrap().last().unwrap().0;
        assert!(
            at >= until,
            "went out at {:?} before {:?}",
            at - start,
            until - start
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_shorter_cap_is_respected() {
    let (svc, seen) = server(|_| refuse(503, Some("10")));
    let layer = HonorRetryAfterLayer::builder()
        .cap(Duration::from_secs(5))
        .retries(Retries::new())
        .build();
    let handle = layer.handle();
    let res = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(handle.snapshot().over_cap, 1);
}

/// Answers the first call `503` with `retry_after`, the others `200`.
fn refused_first(retry_after: Option<&'static str>) -> impl Fn(usize) -> Response<String> + Clone {
    move |n| {
        if n == 0 {
            refuse(503, retry_after)
        } else {
            Response::new("ok".into())
        }
    }
}

fn to(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_origins_cooldown_does_not_hold_calls_to_another() {
    // `a.example` asks for two minutes; `b.example` answers.
    let (svc, seen) = server(refused_first(Some("120")));
    let layer = HonorRetryAfterLayer::new();
    let client = layer.layer(svc.clone());
    let start = Instant::now();
    let res = client
        .clone()
        .oneshot(to("http://a.example/x"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    // Another origin, Critical or not, goes out at once ...
    let res = client
        .clone()
        .oneshot(to("http://b.example/x"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(Instant::now(), start);
    // ... and the same host on another port is another origin.
    client
        .clone()
        .oneshot(to("http://a.example:8080/"))
        .await
        .unwrap();
    assert_eq!(Instant::now(), start);
    // The refusing origin waits its two minutes.
    client
        .clone()
        .oneshot(to("http://A.example/y"))
        .await
        .unwrap();
    assert!(Instant::now() >= start + Duration::from_secs(120));
    assert_eq!(seen.lock().unwrap().len(), 4);

    // With one cooldown for the client, the other origin waits too.
    let (svc, _) = server(refused_first(Some("120")));
    let client = HonorRetryAfterLayer::builder()
        .global_cooldown()
        .build()
        .layer(svc);
    let start = Instant::now();
    client
        .clone()
        .oneshot(to("http://a.example/x"))
        .await
        .unwrap();
    client
        .clone()
        .oneshot(to("http://b.example/x"))
        .await
        .unwrap();
    assert!(Instant::now() >= start + Duration::from_secs(120));
}

/// A service that answers `503` and whose `poll_ready` fails after its
/// first call.
#[derive(Clone)]
struct FailsAfterFirst(Arc<AtomicUsize>);

mod retries;
mod verdicts;
