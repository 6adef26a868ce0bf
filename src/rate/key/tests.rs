//! Keys: forwarded hops, digests, header and API keys.

use http::HeaderValue;

use super::*;
use crate::key::key_fn;

fn req(peer: &str, xff: Option<&str>) -> http::Request<()> {
    let mut r = http::Request::new(());
    r.extensions_mut()
        .insert(SocketAddr::new(peer.parse().unwrap(), 1234));
    if let Some(x) = xff {
        r.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_str(x).unwrap());
    }
    r
}

#[test]
fn forwarded_hops_are_read_however_the_proxy_writes_them() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let proxied = PeerIp::new().trust_forwarded_for(["10.0.0.1".parse().unwrap()]);
    for (hop, client) in [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:4711", "203.0.113.7"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("[::ffff:203.0.113.7]:80", "203.0.113.7"),
    ] {
        assert_eq!(
            proxied.key(&req("10.0.0.1", Some(hop))),
            ip(client),
            "{hop}"
        );
    }
    // The proxy itself, seen through a dual-stack socket, is still trusted.
    let mapped = req("::ffff:10.0.0.1", Some("203.0.113.7"));
    assert_eq!(proxied.key(&mapped), ip("203.0.113.7"));
    // Garbage still stops the chain at the peer.
    assert_eq!(
        proxied.key(&req("10.0.0.1", Some("[nope]:1"))),
        ip("10.0.0.1")
    );
}

#[test]
fn peer_ip_ignores_forwarded_for_unless_trusted() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let plain = PeerIp::new();
    assert_eq!(plain.key(&req("10.0.0.9", Some("1.2.3.4"))), ip("10.0.0.9"));
    assert_eq!(plain.key(&http::Request::new(())), None);

    let proxied = PeerIp::new().trust_forwarded_for(["10.0.0.1".parse().unwrap()]);
    // From the trusted proxy: the rightmost untrusted hop.
    assert_eq!(
        proxied.key(&req("10.0.0.1", Some("6.6.6.6, 1.2.3.4"))),
        ip("1.2.3.4")
    );
    assert_eq!(
        proxied.key(&req("10.0.0.1", Some("1.2.3.4, 10.0.0.1"))),
        ip("1.2.3.4")
    );
    // From anyone else: the header is ignored.
    assert_eq!(proxied.key(&req("5.5.5.5", Some("1.2.3.4"))), ip("5.5.5.5"));
    // Garbage stops the walk at the proxy itself.
    assert_eq!(
        proxied.key(&req("10.0.0.1", Some("nonsense"))),
        ip("10.0.0.1")
    );
    assert_eq!(proxied.key(&req("10.0.0.1", None)), ip("10.0.0.1"));
}

#[test]
fn api_key_and_header() {
    let mut r = http::Request::new(());
    assert_eq!(ApiKey.key(&r), None);
    r.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer abc "),
    );
    assert_eq!(ApiKey.key(&r), Some(KeyDigest::of(b"abc")));
    r.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("k1"));
    assert_eq!(ApiKey.key(&r), Some(KeyDigest::of(b"k1")));
    assert_eq!(
        HeaderKey::new(HeaderName::from_static("x-api-key")).key(&r),
        Some(KeyDigest::of(b"k1"))
    );
    assert_ne!(KeyDigest::of(b"k1"), KeyDigest::of(b"k2"));
    assert_eq!(std::mem::size_of::<Option<KeyDigest>>(), 32);
    let closure = key_fn(|r: &http::Request<()>| r.uri().path().to_owned());
    assert_eq!(closure.key(&r), "/");
}
