//! The instants until which remotes asked a client's callers to wait: one
//! per origin (scheme, host, port) by default, so one server's
//! `Retry-After: 120` does not stall calls to every other server through the
//! same client; or one for the whole client.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{
    HeaderValue, Request,
    uri::{Authority, Scheme},
};
use tokio::time::Instant;

use crate::sync::lock;

/// The most origins remembered; past it, the cooldown ending soonest is
/// forgotten first (expired ones go whenever one is added).
const MAX_ORIGINS: usize = 1024;

/// Where a request goes, as cheap handles onto its own URI and `Host` header
/// (reference-counted bytes, no copy): a call keeps it in case its answer
/// opens a cooldown. `None` when the client has one cooldown for everything.
pub(crate) type Origin = Option<RequestOrigin>;

#[derive(Debug, Clone)]
pub(crate) struct RequestOrigin {
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    host: Option<HeaderValue>,
}

impl RequestOrigin {
    /// The cooldown's key: `scheme://host:port`; for a request without an
    /// authority (a tonic `Channel`'s carry only their path), its `Host`
    /// header; `""` when it has neither. Built only while some cooldown is
    /// open, or when one opens.
    fn key(&self) -> Box<str> {
        let Some(authority) = &self.authority else {
            let host = self.host.as_ref().and_then(|h| h.to_str().ok());
            return host.unwrap_or("").to_ascii_lowercase().into();
        };
        let scheme = self.scheme.as_ref().map_or("http", Scheme::as_str);
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = authority.host().to_ascii_lowercase();
        format!("{scheme}://{host}:{port}").into()
    }
}

#[derive(Debug)]
pub(crate) struct Cooldown {
    per_origin: bool,
    epoch: Instant,
    /// The whole client's cooldown, or per origin the last one to end
    /// (nanoseconds since `epoch`; 0: none ever opened): while it has
    /// passed, a call looks no further.
    until: AtomicU64,
    by_origin: Mutex<HashMap<Box<str>, Instant>>,
    opened: AtomicU64,
    longest_ms: AtomicU64,
}

impl Cooldown {
    pub(crate) fn new(per_origin: bool) -> Self {
        Self {
            per_origin,
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            by_origin: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            longest_ms: AtomicU64::new(0),
        }
    }

    /// Whether calls wait in `poll_ready` (one cooldown for the client), or
    /// only in their futures (their origin is known only in `call`).
    pub(crate) fn per_origin(&self) -> bool {
        self.per_origin
    }

    /// Where `req` goes, if cooldowns are kept per origin.
    pub(crate) fn origin_of<B>(&self, req: &Request<B>) -> Origin {
        self.per_origin.then(|| RequestOrigin {
            scheme: req.uri().scheme().cloned(),
            authority: req.uri().authority().cloned(),
            host: req.headers().get(http::header::HOST).cloned(),
        })
    }

    /// Opens (or extends, never shortens) the cooldown of `origin` for `wait`
    /// from now; returns when it ends.
    pub(crate) fn open(&self, origin: &Origin, wait: Duration) -> Instant {
        let now = Instant::now();
        let until = crate::time::after(now, wait);
        let nanos = self.nanos(until);
        let prev = self.until.fetch_max(nanos, Ordering::AcqRel);
        let (end, extended) = match origin {
            None => (self.instant(nanos.max(prev)), nanos > prev),
            Some(origin) => {
                let mut map = lock(&self.by_origin);
                let key = origin.key();
                let prev = map.get(&key).copied();
                let end = prev.map_or(until, |p| p.max(until));
                if prev.is_none() && map.len() >= MAX_ORIGINS {
                    forget_one(&mut map, now);
                }
                map.insert(key, end);
                (end, prev.is_none_or(|p| until > p))
            }
        };
        if extended {
            self.opened.fetch_add(1, Ordering::Relaxed);
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            self.longest_ms.fetch_max(ms, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::debug!(
                retry_after_ms = ms,
                per_origin = self.per_origin,
                "remote asked to back off: cooldown open"
            );
        }
        end
    }

    /// When the cooldown of `origin` ends, if it is still open. Without one
    /// open anywhere, an atomic load and nothing else.
    pub(crate) fn until(&self, origin: &Origin) -> Option<Instant> {
        let latest = self.latest()?;
        let Some(origin) = origin else {
            return Some(latest);
        };
        let until = *lock(&self.by_origin).get(&origin.key())?;
        (until > Instant::now()).then_some(until)
    }

    /// When the last open cooldown, of any origin, ends.
    pub(crate) fn latest(&self) -> Option<Instant> {
        let nanos = self.until.load(Ordering::Acquire);
        if nanos == 0 {
            return None;
        }
        let until = self.instant(nanos);
        (until > Instant::now()).then_some(until)
    }

    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(crate) fn longest_ms(&self) -> u64 {
        self.longest_ms.load(Ordering::Relaxed)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Makes room for one origin: the expired ones go, or else the one whose
/// cooldown ends soonest.
fn forget_one(map: &mut HashMap<Box<str>, Instant>, now: Instant) {
    map.retain(|_, until| *until > now);
    if map.len() >= MAX_ORIGINS {
        let soonest = map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone());
        if let Some(k) = soonest {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let c = Cooldown::new(true);
        let o = |uri: &str| c.origin_of(&get(uri)).unwrap().key().to_string();
        assert_eq!(o("http://A.example/x"), "http://a.example:80");
        assert_eq!(o("https://a.example/y?z"), "https://a.example:443");
        assert_eq!(o("http://a.example:8080/"), "http://a.example:8080");
        assert_eq!(o("/only/a/path"), "");
        let mut with_host = get("/path");
        with_host
            .headers_mut()
            .insert(http::header::HOST, "B.example:81".parse().unwrap());
        assert_eq!(
            c.origin_of(&with_host).unwrap().key().as_ref(),
            "b.example:81"
        );
        assert!(Cooldown::new(false).origin_of(&get("http://a/")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_only_extends_in_either_scope() {
        for per_origin in [false, true] {
            let c = Cooldown::new(per_origin);
            let origin = c.origin_of(&get("http://a/"));
            assert_eq!(c.until(&origin), None);
            let start = Instant::now();
            c.open(&origin, Duration::from_secs(5));
            c.open(&origin, Duration::from_secs(1));
            assert_eq!(c.until(&origin), Some(start + Duration::from_secs(5)));
            assert_eq!(c.latest(), Some(start + Duration::from_secs(5)));
            assert_eq!(c.opened(), 1);
            assert_eq!(c.longest_ms(), 5000);
            tokio::time::advance(Duration::from_secs(5)).await;
            assert_eq!(c.until(&origin), None);
            assert_eq!(c.latest(), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn origins_are_bounded() {
        let c = Cooldown::new(true);
        let origin = |i: usize| c.origin_of(&get(&format!("http://h{i}/")));
        for i in 0..MAX_ORIGINS + 10 {
            c.open(&origin(i), Duration::from_secs(60 + i as u64));
        }
        assert_eq!(lock(&c.by_origin).len(), MAX_ORIGINS);
        // The soonest-ending went first; the latest are kept.
        assert!(c.until(&origin(MAX_ORIGINS + 9)).is_some());
        assert!(c.until(&origin(0)).is_none());
        // An origin that never asked is not held.
        assert!(c.until(&c.origin_of(&get("http://other/"))).is_none());
    }
}
