//! How coalescing keys HTTP requests; any [`KeyExtractor`](crate::key::KeyExtractor)
//! with an `Option` key keys other requests.

#[cfg(feature = "http")]
pub(crate) use self::http_key::keys_header;
#[cfg(feature = "http")]
pub use self::http_key::{HttpKey, HttpRequestKey};

#[cfg(feature = "http")]
mod http_key {
    use std::sync::Arc;

    use http::{HeaderName, HeaderValue, Method, Request, Uri, header};

    use crate::key::{KeyExtractor, KeyType};

    /// Request headers that tell callers apart or choose the response: part
    /// of every key.
    static KEYED: [HeaderName; 7] = [
        header::HOST,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        header::ACCEPT,
        header::ACCEPT_ENCODING,
        header::ACCEPT_LANGUAGE,
    ];

    /// Conditional and range requests: their answer (a `304`, a `206`)
    /// depends on what the caller already holds, so they are never shared.
    static NEVER: [HeaderName; 6] = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ];

    /// The default key of the HTTP face: shares `GET` and `HEAD` requests with
    /// the same method, URI, `Host`, credentials (`Authorization`,
    /// `Proxy-Authorization`, `x-api-key`, `Cookie`), `Accept`,
    /// `Accept-Encoding` and `Accept-Language`, and any header added with
    /// [`header`](Self::header).
    ///
    /// The credentials are part of the key so that one user never receives a
    /// response made for another; `Host` is, because a server sees only the
    /// path in the URI and may serve several hosts. Other methods are never
    /// shared: they may change state; nor are conditional or range requests.
    /// Callers told apart by anything else (another header, their address)
    /// need it in the key: add the header, or key with a closure.
    #[derive(Debug, Clone, Default)]
    pub struct HttpKey {
        extra: Arc<[HeaderName]>,
    }

    impl HttpKey {
        /// The default key.
        pub fn new() -> Self {
            Self::default()
        }

        /// Also keys by `name`: for a header that tells callers apart (a
        /// tenant, a session of the application's own) or that the
        /// response depends on.
        #[must_use]
        pub fn header(self, name: HeaderName) -> Self {
            let mut extra = self.extra.to_vec();
            extra.push(name);
            Self {
                extra: extra.into(),
            }
        }
    }

    /// The key [`HttpKey`] builds.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct HttpRequestKey {
        method: Method,
        uri: Uri,
        keyed: [Option<HeaderValue>; KEYED.len()],
        // Empty (no allocation) unless headers were added.
        extra: Vec<Option<HeaderValue>>,
        cookie: Option<HeaderValue>,
    }

    /// Whether a response varying on `name` can be shared under the default
    /// key: the key holds that request header.
    pub(crate) fn keys_header(name: &str) -> bool {
        name.eq_ignore_ascii_case(header::COOKIE.as_str())
            || KEYED.iter().any(|k| name.eq_ignore_ascii_case(k.as_str()))
    }

    impl KeyType for HttpKey {
        type Key = Option<HttpRequestKey>;
    }

    impl<B> KeyExtractor<Request<B>> for HttpKey {
        fn key(&self, req: &Request<B>) -> Option<HttpRequestKey> {
            let method = req.method();
            if method != Method::GET && method != Method::HEAD {
                return None;
            }
            let headers = req.headers();
            if NEVER.iter().any(|name| headers.contains_key(name)) {
                return None;
            }
            // A header sent twice cannot be keyed by its first value alone.
            let single = |name: &HeaderName| -> Option<Option<HeaderValue>> {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (v, None) => Some(v.cloned()),
                    (Some(_), Some(_)) | (None, Some(_)) => None,
                }
            };
            let mut keyed: [Option<HeaderValue>; KEYED.len()] = Default::default();
            for (slot, name) in keyed.iter_mut().zip(&KEYED) {
                *slot = single(name)?;
            }
            Some(HttpRequestKey {
                method: method.clone(),
                uri: req.uri().clone(),
                keyed,
                extra: self.extra.iter().map(single).collect::<Option<_>>()?,
                cookie: cookies(headers)?,
            })
        }
    }

    /// All `Cookie` fields as one value: HTTP/2 clients may send each cookie
    /// in its own field, to be read joined with `"; "` (RFC 9113, 8.2.3).
    fn cookies(headers: &http::HeaderMap) -> Option<Option<HeaderValue>> {
        let mut values = headers.get_all(header::COOKIE).iter();
        let Some(first) = values.next() else {
            return Some(None);
        };
        let Some(second) = values.next() else {
            return Some(Some(first.clone()));
        };
        let mut joined = first.as_bytes().to_vec();
        for v in std::iter::once(second).chain(values) {
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(v.as_bytes());
        }
        HeaderValue::from_bytes(&joined).ok().map(Some)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn key(req: Request<()>) -> Option<HttpRequestKey> {
            HttpKey::new().key(&req)
        }

        #[test]
        fn keys_get_and_head_by_target_and_credentials() {
            let get = |auth: Option<&str>| {
                let mut b = Request::get("/items?page=1");
                if let Some(a) = auth {
                    b = b.header(header::AUTHORIZATION, a);
                }
                b.body(()).unwrap()
            };
            assert_eq!(key(get(Some("Bearer a"))), key(get(Some("Bearer a"))));
            assert_ne!(key(get(Some("Bearer a"))), key(get(Some("Bearer b"))));
            assert_ne!(key(get(Some("Bearer a"))), key(get(None)));
            let head = Request::head("/items?page=1").body(()).unwrap();
            assert!(key(head).is_some());
            assert_ne!(
                key(Request::get("/a").body(()).unwrap()),
                key(Request::get("/b").body(()).unwrap())
            );
            assert_ne!(
                key(Request::get("/a").header("host", "x").body(()).unwrap()),
                key(Request::get("/a").header("host", "y").body(()).unwrap())
            );
            let cookie = |c| Request::get("/a").header("cookie", c).body(()).unwrap();
            assert_ne!(key(cookie("s=1")), key(cookie("s=2")));
        }

        #[test]
        fn never_keys_other_methods_or_repeated_authorization() {
            assert!(key(Request::post("/a").body(()).unwrap()).is_none());
            assert!(key(Request::delete("/a").body(()).unwrap()).is_none());
            let twice = Request::get("/a")
                .header("authorization", "Bearer a")
                .header("authorization", "Bearer b")
                .body(())
                .unwrap();
            assert!(key(twice).is_none());
        }

        #[test]
        fn every_credential_and_choice_of_representation_is_keyed() {
            let with =
                |name: &str, value: &str| Request::get("/a").header(name, value).body(()).unwrap();
            for name in [
                "proxy-authorization",
                "x-api-key",
                "accept",
                "accept-encoding",
                "accept-language",
            ] {
                assert_ne!(key(with(name, "1")), key(with(name, "2")), "{name}");
                assert_ne!(
                    key(with(name, "1")),
                    key(Request::get("/a").body(()).unwrap())
                );
            }
            // A header the application tells callers apart by, once added.
            let tenant = |t| with("x-tenant", t);
            assert_eq!(key(tenant("a")), key(tenant("b")));
            let by_tenant = HttpKey::new().header(HeaderName::from_static("x-tenant"));
            assert_ne!(by_tenant.key(&tenant("a")), by_tenant.key(&tenant("b")));
        }

        #[test]
        fn conditional_and_range_requests_are_never_keyed() {
            for (name, value) in [
                ("range", "bytes=0-99"),
                ("if-range", "\"v1\""),
                ("if-match", "\"v1\""),
                ("if-none-match", "\"v1\""),
                ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("if-unmodified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ] {
                let req = Request::get("/a").header(name, value).body(()).unwrap();
                assert!(key(req).is_none(), "{name}");
            }
        }

        #[test]
        fn split_cookie_fields_key_like_one() {
            let split = Request::get("/a")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(())
                .unwrap();
            let joined = Request::get("/a")
                .header("cookie", "a=1; b=2")
                .body(())
                .unwrap();
            let other = Request::get("/a").header("cookie", "a=1").body(()).unwrap();
            assert_eq!(key(split.clone()), key(joined));
            assert_ne!(key(split), key(other));
        }
    }
}
