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

use http::Request;
use tokio::time::Instant;

/// The most origins remembered; past it, the cooldown ending soonest is
/// forgotten first (expired ones go whenever one is added).
const MAX_ORIGINS: usize = 1024;

/// Where a request goes, as a cooldown's key: `scheme://host:port`, or the
/// `Host` header for a request without an authority (a tonic `Channel`'s
/// requests carry only their path; they share one key, `""`, if neither is
/// there). `None` when the client has one cooldown for everything.
pub(crate) type Origin = Option<Box<str>>;

#[derive(Debug)]
pub(crate) struct Cooldown {
    per_origin: bool,
    epoch: Instant,
    /// The whole client's cooldown (nanoseconds since `epoch`; 0: closed).
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

    /// The cooldown key of `req`.
    pub(crate) fn origin_of<B>(&self, req: &Request<B>) -> Origin {
        if !self.per_origin {
            return None;
        }
        let uri = req.uri();
        let Some(host) = uri.host() else {
            let host = req.headers().get(http::header::HOST);
            let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
            return Some(host.to_ascii_lowercase().into());
        };
        let scheme = uri.scheme_str().unwrap_or("http");
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(format!("{scheme}://{}:{port}", host.to_ascii_lowercase()).into())
    }

    /// Opens (or extends, never shortens) the cooldown of `origin` for `wait`
    /// from now; returns when it ends.
    pub(crate) fn open(&self, origin: &Origin, wait: Duration) -> Instant {
        let now = Instant::now();
        let until = crate::time::after(now, wait);
        let (end, extended) = match origin {
            None => {
                let nanos = self.nanos(until);
                let prev = self.until.fetch_max(nanos, Ordering::AcqRel);
                (
                    self.epoch + Duration::from_nanos(nanos.max(prev)),
                    nanos > prev,
                )
            }
            Some(origin) => {
                let mut map = lock(&self.by_origin);
                let prev = map.get(origin).copied();
                let end = prev.map_or(until, |p| p.max(until));
                if prev.is_none() && map.len() >= MAX_ORIGINS {
                    forget_one(&mut map, now);
                }
                map.insert(origin.clone(), end);
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
                origin = origin.as_deref().unwrap_or("*"),
                "remote asked to back off: cooldown open"
            );
        }
        end
    }

    /// When the cooldown of `origin` ends, if it is still open.
    pub(crate) fn until(&self, origin: &Origin) -> Option<Instant> {
        let until = match origin {
            None => {
                let nanos = self.until.load(Ordering::Acquire);
                (nanos != 0).then(|| self.epoch + Duration::from_nanos(nanos))?
            }
            Some(origin) => *lock(&self.by_origin).get(origin)?,
        };
        (until > Instant::now()).then_some(until)
    }

    /// When the last open cooldown, of any origin, ends.
    pub(crate) fn latest(&self) -> Option<Instant> {
        if !self.per_origin {
            return self.until(&None);
        }
        let now = Instant::now();
        let map = lock(&self.by_origin);
        map.values().copied().filter(|u| *u > now).max()
    }

    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(crate) fn longest_ms(&self) -> u64 {
        self.longest_ms.load(Ordering::Relaxed)
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let o = |uri: &str| c.origin_of(&get(uri)).unwrap().to_string();
        assert_eq!(o("http://A.example/x"), "http://a.example:80");
        assert_eq!(o("https://a.example/y?z"), "https://a.example:443");
        assert_eq!(o("http://a.example:8080/"), "http://a.example:8080");
        assert_eq!(o("/only/a/path"), "");
        let mut with_host = get("/path");
        with_host
            .headers_mut()
            .insert(http::header::HOST, "B.example:81".parse().unwrap());
        assert_eq!(c.origin_of(&with_host).unwrap().as_ref(), "b.example:81");
        assert_eq!(Cooldown::new(false).origin_of(&get("http://a/")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_only_extends_in_either_scope() {
        for (per_origin, origin) in [(false, None), (true, Some("http://a:80".into()))] {
            let c = Cooldown::new(per_origin);
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
        for i in 0..MAX_ORIGINS + 10 {
            let origin = Some(format!("http://h{i}:80").into());
            c.open(&origin, Duration::from_secs(60 + i as u64));
        }
        assert_eq!(lock(&c.by_origin).len(), MAX_ORIGINS);
        // The soonest-ending went first; the latest are kept.
        let last = Some(format!("http://h{}:80", MAX_ORIGINS + 9).into());
        assert!(c.until(&last).is_some());
        assert!(c.until(&Some("http://h0:80".into())).is_none());
    }
}
