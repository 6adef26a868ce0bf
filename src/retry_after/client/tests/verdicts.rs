//! What a response tells the client: pass, a hint, or no retry.

use super::*;

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
