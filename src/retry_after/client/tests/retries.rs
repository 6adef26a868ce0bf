//! Retries: when a refused call is sent again, and when it is not.

use super::*;

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
