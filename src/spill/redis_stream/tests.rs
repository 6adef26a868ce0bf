use bytes::Bytes;
use http::{Method, Request};

use super::*;

fn fields(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => panic!("XADD takes no cursor"),
        })
        .collect()
}

#[test]
fn a_produced_entry_parses_back_to_the_same_request() {
    let producer = StreamProducer::new("orders").max_len(1000);
    let request = Request::builder()
        .method(Method::PUT)
        .uri("http://example.com/orders/7?x=1")
        .header("content-type", "application/json")
        .header("x-many", "one")
        .header("x-many", "two")
        .header("idempotency-key", "k-7")
        .body(Bytes::from_static(b"{\"sku\":7}\x00\xff"))
        .unwrap();
    let cmd = producer.xadd(Priority::High, &request);
    let args = fields(&cmd);
    assert_eq!(args[0], b"XADD");
    assert_eq!(args[1], b"orders:high");
    assert_eq!(args[2..5], [&b"MAXLEN"[..], b"~", b"1000"]);
    assert_eq!(args[5], b"*");
    let pairs: Vec<_> = args[6..]
        .chunks_exact(2)
        .map(|kv| (kv[0].as_slice(), kv[1].as_slice()))
        .collect();
    let job = entry::parse(pairs, Priority::High).unwrap();
    assert_eq!(job.method, Method::PUT);
    assert_eq!(job.uri, "/orders/7?x=1");
    assert_eq!(job.body, request.body());
    assert_eq!(job.headers, *request.headers());
    assert_eq!(job.idempotency_key.as_deref(), Some("k-7"));
    assert_eq!(job.priority, Priority::High);
}

#[test]
fn an_entry_needs_only_a_uri_and_ignores_fields_it_does_not_name() {
    let job = entry::parse(
        [(&b"uri"[..], &b"/likes"[..]), (b"dead:reason", b"x")],
        Priority::Low,
    )
    .unwrap();
    assert_eq!(job.method, Method::POST);
    assert!(job.body.is_empty() && job.headers.is_empty());
}

#[test]
fn entries_that_are_not_requests_say_why() {
    for (fields, why) in [
        (vec![(&b"body"[..], &b"x"[..])], "no uri"),
        (vec![(b"uri", b"/a"), (b"method", b"GE T")], "method"),
        (vec![(b"uri", b"/a b")], "uri"),
        (
            vec![(b"uri", b"/a"), (b"header:bad name", b"v")],
            "header name",
        ),
        (vec![(b"uri", b"/a"), (b"header:x", b"\n")], "value"),
    ] {
        let err = entry::parse(fields, Priority::Default).unwrap_err();
        assert!(err.contains(why), "{err:?} should mention {why:?}");
    }
}

#[test]
fn entry_ids_map_to_job_ids_and_back() {
    let id = entry_id("1733220000000-17").unwrap();
    assert_eq!((id.seq, id.tag), (1_733_220_000_000, 17));
    assert_eq!(entry_text(id), "1733220000000-17");
    for bad in ["", "17", "a-1", "1-b", "1-2-3"] {
        assert!(entry_id(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn tiers_are_read_highest_first_and_map_back() {
    for p in Priority::ALL {
        assert_eq!(TIERS[tier_of(p)], p);
    }
    assert!(TIERS.windows(2).all(|w| w[0] > w[1]));
}

#[test]
fn bad_settings_are_refused_at_build() {
    let client = || redis::Client::open("redis://127.0.0.1:1/").unwrap();
    assert!(RedisStreamSource::builder(client(), "").build().is_err());
    assert!(
        RedisStreamSource::builder(client(), "s")
            .group("")
            .build()
            .is_err()
    );
    assert!(
        RedisStreamSource::builder(client(), "s")
            .discard_older_than(Priority::Low, Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        RedisStreamSource::builder(client(), "s")
            .dead_letters(0)
            .build()
            .is_err()
    );
    let built = RedisStreamSource::builder(client(), "s").build().unwrap();
    assert_eq!(built.keys[0], "s:critical");
    assert_eq!(built.keys[7], "s:low:dead");
}
