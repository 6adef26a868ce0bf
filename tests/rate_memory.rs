//! A keyed rate limit's memory follows its key count, not the size of the
//! keys callers send: 2,000 distinct 60 KiB API keys, each in its own
//! request, leave behind a few hundred kilobytes, not the 120 MB of their
//! headers. Measured with a counting allocator (this test binary's own).

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Request};
use support::live_heap;
use tower::{Layer, ServiceExt, service_fn};
use tower_spillway::rate::{ApiKey, Quota, RateLimitLayer};

#[global_allocator]
static ALLOCATOR: support::Counting = support::Counting;

#[tokio::test(flavor = "current_thread")]
async fn remembered_keys_cost_their_digest_not_their_bytes() {
    let layer = RateLimitLayer::builder(Quota::per_second(10).unwrap())
        .keyed(ApiKey)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_r: Request<()>| async {
        Ok::<_, Infallible>(())
    }));
    // Warm up whatever the first call allocates once.
    let warm = Request::builder()
        .header("x-api-key", "warm")
        .body(())
        .unwrap();
    svc.clone().oneshot(warm).await.unwrap();

    let before = live_heap();
    for i in 0..2_000u32 {
        // One shared allocation per request, as hyper's header values are
        // slices of its read buffer.
        let mut key = vec![b'k'; 60 * 1024];
        key[..8].copy_from_slice(format!("{i:08}").as_bytes());
        let value = HeaderValue::from_maybe_shared(Bytes::from(key)).unwrap();
        let req = Request::builder()
            .header("x-api-key", value)
            .body(())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    let grown = live_heap() - before;
    assert_eq!(handle.snapshot().keys, 2_001);
    assert!(grown < 4 << 20, "{grown} bytes kept for 2,000 keys");
}
