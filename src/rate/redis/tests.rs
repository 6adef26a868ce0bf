//! What can be tested without a Redis server: the script's reply read back,
//! the names, the quota's encoding, the fallback's state machine, and a
//! limit whose Redis refuses connections or never answers. The script
//! itself runs against a real server in `tests/rate_redis.rs`.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use http::{Request, Response, StatusCode};
use redis::Value;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{
    name::{bucket, quota_key},
    script::{Answer, Reply, decode_quota, encode_quota, quota_args},
    shared::{Cause, Shared},
    *,
};
use crate::rate::{Quota, RateLimitLayer};

fn reply(allowed: i64, capacity: i64, wait_us: i64) -> Value {
    Value::Array(vec![
        Value::Int(allowed),
        Value::Int(capacity),
        Value::Int(wait_us),
    ])
}

#[test]
fn a_batch_reply_answers_callers_in_arrival_order() {
    // Three of five conform: capacity 3 before the batch, next call in 40 ms.
    let r = Reply::parse(&reply(3, 3, 40_000), 1).unwrap()[0];
    assert_eq!(r.answer(0), Answer::Allow { remaining: 2 });
    assert_eq!(r.answer(1), Answer::Allow { remaining: 1 });
    assert_eq!(r.answer(2), Answer::Allow { remaining: 0 });
    let refused = Answer::Deny {
        wait: Duration::from_millis(40),
    };
    assert_eq!(r.answer(3), refused);
    assert_eq!(r.answer(4), refused);
    // A refusal always waits: a wait of 0 would mean "now".
    let r = Reply::parse(&reply(0, 0, 0), 1).unwrap()[0];
    assert_eq!(
        r.answer(0),
        Answer::Deny {
            wait: Duration::from_micros(1)
        }
    );
}

#[test]
fn one_call_answers_each_of_its_buckets() {
    let two = Value::Array(vec![
        Value::Int(1),
        Value::Int(5),
        Value::Int(0),
        Value::Int(0),
        Value::Int(0),
        Value::Int(7),
    ]);
    let r = Reply::parse(&two, 2).unwrap();
    assert_eq!(r[0].answer(0), Answer::Allow { remaining: 4 });
    assert_eq!(
        r[1].answer(0),
        Answer::Deny {
            wait: Duration::from_micros(7)
        }
    );
    // Three values per bucket, no more, no fewer.
    assert_eq!(Reply::parse(&two, 1), None);
    assert_eq!(Reply::parse(&two, 3), None);
}

#[test]
fn a_batch_is_grouped_by_bucket_and_split_into_calls_of_64() {
    use super::worker::{Check, calls, group};
    let check = |bucket: String| Check {
        bucket,
        reply: tokio::sync::oneshot::channel().0,
    };
    // 130 buckets, the first one checked twice more at the end.
    let mut batch: Vec<_> = (0..130).map(|i| check(format!("{{p:{i}}}"))).collect();
    batch.push(check("{p:0}".to_owned()));
    batch.push(check("{p:0}".to_owned()));
    let groups = group(batch);
    assert_eq!(groups.len(), 130);
    assert_eq!((groups[0].0.as_str(), groups[0].1.len()), ("{p:0}", 3));
    assert_eq!(groups[129].0, "{p:129}");
    let sizes: Vec<_> = calls(groups).iter().map(Vec::len).collect();
    assert_eq!(sizes, [64, 64, 2]);
}

#[test]
fn replies_of_another_shape_are_not_read() {
    for v in [
        Value::Nil,
        Value::Int(1),
        Value::Array(vec![Value::Int(1), Value::Int(2)]),
        reply(-1, 3, 0),
        Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"x".to_vec()),
            Value::Int(0),
        ]),
    ] {
        assert_eq!(Reply::parse(&v, 1), None, "{v:?}");
    }
}

#[test]
fn the_quota_round_trips_through_the_config_key() {
    for q in [
        Quota::per_second(500).unwrap(),
        Quota::per_second(3).unwrap().burst(1).unwrap(),
        Quota::per_minute(7).unwrap().burst(100).unwrap(),
    ] {
        let text = encode_quota(&q);
        assert_eq!(decode_quota(&Value::BulkString(text.into_bytes())), Some(q));
    }
    assert_eq!(
        encode_quota(&Quota::per_second(500).unwrap()),
        "2000000 500"
    );
    for bad in ["", "2000000", "x 5", "2000000 0", "0 5", "2000000 5 1"] {
        assert_eq!(
            decode_quota(&Value::BulkString(bad.as_bytes().to_vec())),
            None,
            "{bad:?}"
        );
    }
    assert_eq!(decode_quota(&Value::Nil), None);
}

#[test]
fn script_intervals_are_whole_microseconds_rounded_up() {
    assert_eq!(quota_args(&Quota::per_second(500).unwrap()), (2_000, 500));
    // 3 per second: 333,333.33… µs, rounded up so the rate never exceeds the quota.
    assert_eq!(quota_args(&Quota::per_second(3).unwrap()).0, 333_334);
    // Finer than the script's clock: one call per microsecond at most.
    let fast = Quota::new(2_000_000, Duration::from_secs(1)).unwrap();
    assert_eq!(quota_args(&fast).0, 1);
}

#[test]
fn bucket_names_are_one_hash_tag_and_never_collide() {
    assert_eq!(bucket("api", &()), "{api:}");
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(bucket("api", &Some(ip)), "{api:=203.0.113.7}");
    assert_eq!(bucket("api", &None::<std::net::IpAddr>), "{api:-}");
    // IPv4-mapped IPv6 is the IPv4 caller.
    let mapped: std::net::IpAddr = "::ffff:203.0.113.7".parse().unwrap();
    assert_eq!(bucket("api", &mapped), bucket("api", &ip));
    // One limit has one key type: within it, no two keys share a name.
    // `Some("-")` is not `None`, `Some(None)` not `None` nor `Some(Some(""))`.
    assert_ne!(
        bucket("api", &None::<String>),
        bucket("api", &Some("-".to_owned()))
    );
    let nested = [
        bucket("api", &None::<Option<String>>),
        bucket("api", &Some(None::<String>)),
        bucket("api", &Some(Some(String::new()))),
        bucket("api", &Some(Some("-".to_owned()))),
    ];
    for (i, a) in nested.iter().enumerate() {
        for b in &nested[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(bucket("api", &42u64), "{api:42}");
    assert_eq!(quota_key("api"), "{api}:quota");
}

#[test]
fn an_instance_share_divides_rate_and_burst() {
    let q = Quota::per_second(500).unwrap();
    let share = q.share(4);
    assert_eq!(share.replenish_interval(), Duration::from_millis(8));
    assert_eq!(share.burst_size(), 125);
    // A burst smaller than the fleet keeps one call.
    let small = Quota::per_second(10).unwrap().burst(2).unwrap().share(4);
    assert_eq!(small.burst_size(), 1);
    assert_eq!(small.replenish_interval(), Duration::from_millis(400));
    assert_eq!(q.share(1), q);
}

#[test]
fn options_are_validated() {
    assert!(RedisOptions::new("p").timeout(Duration::ZERO).is_err());
    assert!(RedisOptions::new("p").instances(0).is_err());
    assert!(
        RedisOptions::new("p")
            .probe_interval(Duration::ZERO)
            .is_err()
    );
    let o = RedisOptions::default();
    assert_eq!(o.timeout, Duration::from_millis(5));
    assert_eq!(o.fallback, Fallback::LocalShare);
}

fn shared() -> Shared {
    Shared::new(Quota::per_second(100).unwrap(), &RedisOptions::new("t"))
}

#[test]
fn three_timeouts_in_a_row_enter_fallback_and_an_answer_resets_the_count() {
    let s = shared();
    s.timed_out();
    s.timed_out();
    s.answered();
    s.timed_out();
    s.timed_out();
    assert!(!s.in_fallback());
    s.timed_out();
    assert!(s.in_fallback());
    let snap = s.snapshot();
    assert_eq!((snap.timeouts, snap.fallback_entries), (5, 1));
    s.leave_fallback();
    assert!(!s.in_fallback());
}

#[test]
fn a_quota_set_here_is_not_undone_by_a_stale_read() {
    let s = shared();
    let new = Quota::per_second(50).unwrap();
    let old = Quota::per_second(100).unwrap();
    s.publish(new);
    // A batch sent before the change reads the old quota back: ignored
    // while the new one is on its way.
    assert!(!s.adopt(old));
    assert_eq!(s.fleet().quota, new);
    s.confirm(new);
    assert_eq!(s.pending(), None);
    // Then another instance's change is taken.
    let other = Quota::per_second(20).unwrap();
    assert!(s.adopt(other));
    assert_eq!(s.fleet().quota, other);
    assert!(!s.adopt(other), "no change, nothing to apply");
}

#[cfg(feature = "tracing")]
#[test]
fn fallback_is_logged_on_entry_and_exit_only() {
    use crate::log_recorder::Recorder;
    use tracing::Level;

    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let s = shared();
    s.enter_fallback(Cause::Error);
    s.enter_fallback(Cause::Timeout);
    s.timed_out();
    s.leave_fallback();
    s.leave_fallback();
    let events = std::mem::take(&mut *recorder.0.lock().unwrap());
    let levels: Vec<_> = events.iter().map(|e| e.0).collect();
    assert_eq!(levels, [Level::WARN, Level::INFO], "{events:?}");
    assert_eq!(
        events[0].1,
        "shared rate limit: Redis out of reach, deciding locally"
    );
}

// ---- a limit whose Redis is out of reach ------------------------------------

type Req = Request<http_body_util::Empty<bytes::Bytes>>;

#[test]
fn on_a_cluster_a_batch_is_split_by_hash_slot_first() {
    use super::worker::{Check, by_slot, calls, group};
    use redis::cluster_routing::Slot;
    let check = |bucket: String| Check {
        bucket,
        reply: tokio::sync::oneshot::channel().0,
    };
    // Redis's own examples: `{user1000}.following` and
    // `{user1000}.followers` share the slot of `user1000`.
    assert_eq!(
        Slot::for_key("{user1000}.following"),
        Slot::for_key("{user1000}.followers")
    );
    // 300 buckets: spread over the slots, a handful sharing one. Every
    // script call holds buckets of one slot, at most 64 of them, and every
    // bucket is in exactly one call.
    let batch: Vec<_> = (0..300).map(|i| check(format!("{{p:{i}}}"))).collect();
    let slots = by_slot(group(batch));
    assert!(slots.len() > 250, "{} slots", slots.len());
    let mut seen = 0;
    for slot in slots {
        for call in calls(slot) {
            assert!(call.len() <= 64);
            let first = Slot::for_key(&call[0].0);
            assert!(
                call.iter()
                    .all(|(bucket, _)| Slot::for_key(bucket) == first)
            );
            seen += call.len();
        }
    }
    assert_eq!(seen, 300);
    // Buckets sharing a hash tag share a call, in arrival order.
    let batch: Vec<_> = ["{t}:a", "{u}", "{t}:b", "{t}:c"]
        .map(|b| check(b.to_owned()))
        .into_iter()
        .collect();
    let slots = by_slot(group(batch));
    let names: Vec<Vec<&str>> = slots
        .iter()
        .map(|slot| slot.iter().map(|(b, _)| b.as_str()).collect())
        .collect();
    assert_eq!(names, [vec!["{t}:a", "{t}:b", "{t}:c"], vec!["{u}"]]);
}

fn ok_service()
-> impl Service<Req, Response = Response<&'static str>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_req: Req| async { Ok::<_, Infallible>(Response::new("ok")) })
}

/// A loopback port nothing listens on: connections are refused at once.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn client(addr: SocketAddr) -> redis::Client {
    redis::Client::open(format!("redis://{addr}/")).unwrap()
}

#[tokio::test]
async fn redis_down_falls_back_to_the_instance_share() {
    let quota = Quota::per_second(100).unwrap();
    let options = RedisOptions::new("down").instances(4).unwrap();
    let layer = RateLimitLayer::builder(quota)
        .http()
        .redis(client(closed_port()), options)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(ok_service());
    let mut allowed = 0;
    for _ in 0..40 {
        let start = Instant::now();
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        // One answer each, within the timeout (and a loaded machine's margin).
        assert!(start.elapsed() < Duration::from_millis(5 + 200));
        match res.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    // A quarter of the burst of 100: 25 back to back.
    assert_eq!(allowed, 25);
    let snap = handle.snapshot();
    let redis = snap.redis.unwrap();
    assert!(redis.fallback);
    assert_eq!(redis.fallback_checks, 40);
    assert_eq!(redis.redis_checks, 0);
    assert!(redis.redis_errors >= 1);
    assert_eq!((snap.allowed, snap.limited), (25, 15));
    // The handle reports the fleet's quota, not the share.
    assert_eq!(handle.quota(), quota);
}

#[tokio::test]
async fn a_cluster_out_of_reach_falls_back_like_a_server() {
    let nodes = [closed_port(), closed_port()].map(|addr| format!("redis://{addr}/"));
    let cluster = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let options = RedisOptions::new("down").instances(4).unwrap();
    let layer = RateLimitLayer::builder(Quota::per_second(100).unwrap())
        .http()
        .redis(cluster, options)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(ok_service());
    let mut allowed = 0;
    for _ in 0..40 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        allowed += usize::from(res.status() == StatusCode::OK);
    }
    assert_eq!(allowed, 25);
    let redis = handle.snapshot().redis.unwrap();
    assert!(redis.fallback && !redis.connected);
    assert_eq!(redis.fallback_checks, 40);
}

#[tokio::test]
async fn fallback_policies_allow_or_refuse_everything() {
    for (fallback, status) in [
        (Fallback::Allow, StatusCode::OK),
        (Fallback::Refuse, StatusCode::TOO_MANY_REQUESTS),
    ] {
        let options = RedisOptions::new("policy").fallback(fallback);
        let layer = RateLimitLayer::builder(Quota::per_second(1).unwrap())
            .http()
            .redis(client(closed_port()), options)
            .build();
        let svc = layer.layer(ok_service());
        for _ in 0..5 {
            let res = svc.clone().oneshot(Request::default()).await.unwrap();
            assert_eq!(res.status(), status, "{fallback:?}");
            if status == StatusCode::TOO_MANY_REQUESTS {
                // Rounded up from the 100 ms probe interval.
                assert_eq!(res.headers()["retry-after"], "1");
                assert!(res.headers().contains_key("ratelimit-policy"));
            }
        }
    }
}

/// A server that accepts connections and never answers: a Redis that hangs.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_a_request_at_most_the_timeout() {
    let timeout = Duration::from_millis(20);
    let options = RedisOptions::new("silent").timeout(timeout).unwrap();
    let layer = RateLimitLayer::builder(Quota::per_second(1_000).unwrap())
        .http()
        .redis(client(silent_server().await), options)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(ok_service());
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        slowest = slowest.max(start.elapsed());
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The connection attempt lasts a second: only the check's own timeout
    // answers sooner (a loaded machine's margin of 200 ms on top).
    assert!(slowest >= timeout, "the first check waited for Redis");
    assert!(
        slowest < timeout + Duration::from_millis(200),
        "{slowest:?}"
    );
    let redis = handle.snapshot().redis.unwrap();
    assert!(redis.fallback);
    assert_eq!(redis.fallback_checks, 20);
}

#[test]
fn without_a_runtime_a_check_is_decided_by_the_fallback() {
    let layer = RateLimitLayer::builder(Quota::per_second(2).unwrap())
        .redis(client(closed_port()), RedisOptions::new("nort"))
        .build();
    let mut svc = layer.layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        assert!(svc.poll_ready(cx).is_ready());
        let mut fut = std::pin::pin!(svc.call(()));
        match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => outcomes.push(r.is_ok()),
            std::task::Poll::Pending => panic!("a fallback decision is ready at once"),
        }
    }
    assert_eq!(outcomes, [true, true, false]);
}

#[tokio::test]
async fn checks_past_a_full_queue_are_decided_locally_at_once() {
    use super::store::QUEUE;
    // The worker hangs in the handshake with a server that never answers
    // (for the second a connection attempt may take), so the queue fills.
    let options = RedisOptions::new("full")
        .timeout(Duration::from_secs(5))
        .unwrap();
    let layer = RateLimitLayer::builder(Quota::per_second(1_000_000).unwrap())
        .http()
        .redis(client(silent_server().await), options)
        .build();
    let svc = layer.layer(ok_service());
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..QUEUE + 50 {
        let svc = svc.clone();
        calls.spawn(async move {
            let res = svc.oneshot(Request::default()).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            start.elapsed()
        });
    }
    let times = calls.join_all().await;
    let at_once = times
        .iter()
        .filter(|t| **t < Duration::from_millis(500))
        .count();
    // The 50 that found the queue full; the queued ones waited for the
    // connection attempt to fail, well within their timeout.
    assert_eq!(at_once, 50);
    assert!(times.iter().all(|t| *t < Duration::from_secs(3)));
}
