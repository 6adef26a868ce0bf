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
async fn a_hint_over_the_cap_is_handed_back_not_waited() {
    let (svc, seen) = server(|_| refuse(503, Some("301")));
    let layer = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build();
    let client = layer.layer(svc);
    let start = Instant::now();
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(layer.handle().cooldown_until(), None);
    assert_eq!(layer.handle().snapshot().over_cap, 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_after_the_hint_replaying_the_body() {
    let (svc, seen) = server(|n| {
        if n < 2 {
            refuse(503, Some("1"))
        } else {
            Response::new("ok".into())
        }
    });
    let layer = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build();
    let start = Instant::now();
    let res = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (i, (at, attempt, body)) in seen.iter().enumerate() {
        assert_eq!(
            *at,
            start + Duration::from_secs(i as u64),
            "attempt {i} early or late"
        );
        let expected = (i > 0).then(|| i.to_string());
        assert_eq!(*attempt, expected);
        assert_eq!(body, "payload");
    }
    assert_eq!(layer.handle().snapshot().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    let (svc, seen) = server(|_| refuse(429, Some("0")));
    let layer = HonorRetryAfterLayer::builder()
        .retries(Retries::new().attempts(5).unwrap())
        .build();
    let res = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(seen.lock().unwrap().len(), 5);
    assert!(Retries::new().attempts(6).is_err());
    assert!(Retries::new().attempts(0).is_err());
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_methods_are_retried_only_when_allowed() {
    let post = || {
        let mut r = get();
        *r.method_mut() = Method::POST;
        r
    };
    let (svc, seen) = server(|_| refuse(503, Some("1")));
    HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build()
        .layer(svc)
        .oneshot(post())
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (svc, seen) = server(|_| refuse(503, Some("1")));
    HonorRetryAfterLayer::builder()
        .retries(Retries::new().allow_non_idempotent(true))
        .build()
        .layer(svc)
        .oneshot(post())
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_is_honoured_and_negative_means_no_retry() {
    let grpc_req = || {
        let mut r = get();
        *r.method_mut() = Method::POST;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        r
    };
    let retries = || Retries::new().allow_non_idempotent(true);

    let (svc, seen) = server(|n| {
        if n == 0 {
            grpc_refusal("8", Some("250"))
        } else {
            Response::new("ok".into())
        }
    });
    let start = Instant::now();
    HonorRetryAfterLayer::builder()
        .retries(retries())
        .build()
        .layer(svc)
        .oneshot(grpc_req())
        .await
        .unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, start + Duration::from_millis(250));
        assert_eq!(seen[1].1.as_deref(), Some("1"));
    }

    for bad in ["-1", "soon", "1.5"] {
        let (svc, seen) = server(move |_| grpc_refusal("14", Some(bad)));
        let layer = HonorRetryAfterLayer::builder().retries(retries()).build();
        let res = layer.layer(svc).oneshot(grpc_req()).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(seen.lock().unwrap().len(), 1, "{bad}");
        assert_eq!(layer.handle().cooldown_until(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_hint_backoff_is_full_jitter_and_bounded() {
    let (svc, seen) = server(|_| refuse(503, None));
    let retries = Retries::new()
        .attempts(5)
        .unwrap()
        .backoff(Duration::from_millis(100), Duration::from_millis(300))
        .unwrap();
    let layer = HonorRetryAfterLayer::builder().retries(retries).build();
    let start = Instant::now();
    layer.layer(svc).oneshot(get()).await.unwrap();
    // Waits of at most 100, 200, 300, 300 ms.
    assert!(start.elapsed() <= Duration::from_millis(900));
    assert_eq!(seen.lock().unwrap().len(), 5);
    assert_eq!(layer.handle().cooldown_until(), None);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    let (svc, seen) = server(|_| refuse(503, None));
    let retries = Retries::new().attempts(5).unwrap();
    let layer = HonorRetryAfterLayer::builder().retries(retries).build();
    let client = layer.layer(svc);
    let calls = 2_000usize;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls / 32 {
                client.clone().oneshot(get()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let original = calls / 32 * 32;
    let sent = seen.lock().unwrap().len();
    // 20 % of the calls plus the floor of 10/s over 10 s; without the budget,
    // five attempts each would send 5x.
    let bound = original + original / 5 + 100;
    assert!(
        sent <= bound,
        "server saw {sent} calls for {original} (bound {bound})"
    );
    assert!(sent > original, "no retry at all");
    assert!(layer.handle().snapshot().budget_exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn hostile_hints_are_capped_or_ignored() {
    // Huge: reported as a day by the parser, over the cap, handed back.
    let (svc, seen) = server(|_| refuse(429, Some("99999999999999999999")));
    let layer = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build();
    let res = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(layer.handle().cooldown_until(), None);

    // A date in the past: retry now, no waiting.
    let (svc, seen) = server(|n| {
        if n == 0 {
            refuse(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"))
        } else {
            Response::new("ok".into())
        }
    });
    let start = Instant::now();
    let res = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build()
        .layer(svc)
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Garbage and negatives: no hint, so the client's own bounded backoff.
    for bad in ["-5", "soon", "1.5", "1e9"] {
        let (svc, seen) = server(move |_| refuse(503, Some(bad)));
        let layer = HonorRetryAfterLayer::builder()
            .retries(
                Retries::new()
                    .backoff(Duration::from_millis(10), Duration::from_millis(10))
                    .unwrap(),
            )
            .build();
        let start = Instant::now();
        layer.layer(svc).oneshot(get()).await.unwrap();
        assert!(start.elapsed() <= Duration::from_millis(20), "{bad}");
        assert_eq!(seen.lock().unwrap().len(), 3, "{bad}");
        assert_eq!(layer.handle().cooldown_until(), None, "{bad}");
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

#[test]
fn verdicts() {
    use super::future::{Verdict, verdict};
    assert_eq!(verdict(&Response::new(())), Verdict::Pass);
    assert_eq!(verdict(&refuse(500, Some("3"))), Verdict::Pass);
    assert_eq!(
        verdict(&refuse(429, Some("3"))),
        Verdict::Hint(Duration::from_secs(3))
    );
    assert_eq!(verdict(&refuse(503, Some("garbage"))), Verdict::NoHint);
    assert_eq!(verdict(&refuse(503, None)), Verdict::NoHint);
    assert_eq!(verdict(&grpc_refusal("14", None)), Verdict::NoHint);
    assert_eq!(verdict(&grpc_refusal("8", Some("-5"))), Verdict::NoRetry);
    assert_eq!(verdict(&grpc_refusal("0", Some("5"))), Verdict::Pass);
    assert_eq!(
        verdict(&grpc_refusal("14", Some("5"))),
        Verdict::Hint(Duration::from_millis(5))
    );
}

mod properties {
    use std::time::SystemTime;

    use proptest::prelude::*;

    use crate::{
        Overloaded, Reason, RetryAfterPolicy,
        http::{MakeRejection, ProblemDetails, RequestInfo},
        retry_after::{MAX_HINT, parse_pushback_ms, parse_retry_after},
    };

    use super::*;

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic_and_within_the_cap(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let now = SystemTime::now();
            if let Some(d) = parse_retry_after(&bytes, now) {
                prop_assert!(d <= MAX_HINT);
            }
            if let Some(d) = parse_pushback_ms(&bytes) {
                prop_assert!(d <= MAX_HINT);
            }
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                res.headers_mut().insert(header::RETRY_AFTER, v.clone());
                let _ = super::super::future::verdict(&res);
            }
        }

        #[test]
        fn what_we_emit_parses_back_never_shorter(ms in 0u64..100_000_000, grpc in any::<bool>()) {
            let hint = Duration::from_micros(ms * 7);
            let make = ProblemDetails::new()
                .retry_after(RetryAfterPolicy::new().jitter(0.0).unwrap().cap(MAX_HINT).unwrap());
            let o = Overloaded::new(Reason::RateLimited).with_retry_after(hint);
            let res = make.make_rejection(&o, &RequestInfo::new(grpc));
            let parsed = match super::super::future::verdict(&res) {
                super::super::future::Verdict::Hint(d) => d,
                other => panic!("{other:?}"),
            };
            prop_assert!(parsed >= hint.min(MAX_HINT));
            if !grpc {
                prop_assert!(parsed >= Duration::from_secs(1));
                prop_assert!(parsed < hint + Duration::from_secs(1) || parsed == Duration::from_secs(1));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn our_backoff_restarts_from_its_base_after_a_pushback() {
    // Two refusals without a hint, one naming its wait (zero), then one
    // without again: the last wait is the first step of the backoff (at
    // most 100 ms), not the third (at most 400 ms). Twenty runs, so a
    // backoff that did not restart would show.
    for _ in 0..20 {
        let (svc, seen) = server(|n| match n {
            2 => refuse(503, Some("0")),
            0 | 1 | 3 => refuse(503, None),
            _ => Response::new("ok".into()),
        });
        let retries = Retries::new()
            .attempts(5)
            .unwrap()
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .unwrap();
        let layer = HonorRetryAfterLayer::builder().retries(retries).build();
        let res = layer.layer(svc).oneshot(get()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 5);
        let last_wait = seen[4].0 - seen[3].0;
        assert!(last_wait <= Duration::from_millis(100), "{last_wait:?}");
    }
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

impl Service<Request<ReplayBody<Full<Bytes>>>> for FailsAfterFirst {
    type Response = Response<String>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Response<String>, &'static str>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(if self.0.load(Ordering::SeqCst) == 0 {
            Ok(())
        } else {
            Err("connection pool closed")
        })
    }

    fn call(&mut self, _: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(refuse(503, None)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_the_service_cannot_take_gives_back_the_servers_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build();
    let mut client = layer.layer(FailsAfterFirst(Arc::clone(&calls)));
    client.ready().await.unwrap();
    let res = client.call(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
