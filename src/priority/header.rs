use http::HeaderName;

use super::{Classify, Priority};

/// Reads a priority from a request header (`x-priority` by default), on top of
/// a base classifier.
///
/// A client must not be able to promote its own requests. Unless the operator
/// calls [`trusted`](Self::trusted), the header can only **lower** the
/// priority the base classifier gave (a client may volunteer that a prefetch is
/// `low`); a claim above it is ignored. Unknown or malformed values are ignored
/// too, leaving the base priority (by default [`Priority::Default`]).
///
/// Values are names in any case (`critical`, `high`, `default`, `low`) or the
/// digits `3` to `0`.
///
/// ```
/// use http::Request;
/// use tower_spillway::priority::{Classify, HeaderPriority, Priority};
///
/// let untrusted = HeaderPriority::new();
/// let req = Request::get("/").header("x-priority", "critical").body(()).unwrap();
/// assert_eq!(untrusted.classify(&req), Priority::Default);
///
/// let trusted = HeaderPriority::new().trusted(true);
/// assert_eq!(trusted.classify(&req), Priority::Critical);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderPriority<C = Priority> {
    name: HeaderName,
    base: C,
    trusted: bool,
}

/// The header [`HeaderPriority`] reads unless told otherwise.
pub const X_PRIORITY: HeaderName = HeaderName::from_static("x-priority");

impl HeaderPriority<Priority> {
    /// Reads `x-priority`, untrusted, over a base of [`Priority::Default`].
    pub fn new() -> Self {
        Self::with_base(Priority::Default)
    }
}

impl Default for HeaderPriority<Priority> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> HeaderPriority<C> {
    /// Reads `x-priority`, untrusted, over the priority `base` gives.
    pub fn with_base(base: C) -> Self {
        Self {
            name: X_PRIORITY,
            base,
            trusted: false,
        }
    }

    /// Reads this header instead of `x-priority`.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.name = name;
        self
    }

    /// When `true`, the header may also raise the priority. Turn it on only
    /// where every caller is trusted (an internal network behind an edge that
    /// strips the header from outside traffic).
    #[must_use]
    pub fn trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }
}

impl<B, C> Classify<http::Request<B>> for HeaderPriority<C>
where
    C: Classify<http::Request<B>>,
{
    fn classify(&self, req: &http::Request<B>) -> Priority {
        let base = self.base.classify(req);
        // Only the first value counts: a repeated header is a client trying its luck.
        let claimed = req
            .headers()
            .get(&self.name)
            .and_then(|v| Priority::from_bytes(v.as_bytes()));
        match claimed {
            Some(p) if self.trusted || p <= base => p,
            _ => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(value: &[u8]) -> http::Request<()> {
        http::Request::builder()
            .header("x-priority", http::HeaderValue::from_bytes(value).unwrap())
            .body(())
            .unwrap()
    }

    #[test]
    fn untrusted_header_only_lowers() {
        let c = HeaderPriority::with_base(Priority::High);
        assert_eq!(c.classify(&req(b"low")), Priority::Low);
        assert_eq!(c.classify(&req(b"critical")), Priority::High);
        assert_eq!(c.classify(&req(b"HIGH")), Priority::High);
    }

    #[test]
    fn trusted_header_may_raise() {
        let c = HeaderPriority::new().trusted(true);
        assert_eq!(c.classify(&req(b"Critical")), Priority::Critical);
        assert_eq!(c.classify(&req(b"0")), Priority::Low);
    }

    #[test]
    fn malformed_or_missing_means_base() {
        let c = HeaderPriority::new().trusted(true);
        for bad in [&b"urgent"[..], b"", b"9", b"\xff\xfe", b"high, low"] {
            assert_eq!(c.classify(&req(bad)), Priority::Default, "{bad:?}");
        }
        let none = http::Request::new(());
        assert_eq!(c.classify(&none), Priority::Default);
    }

    #[test]
    fn custom_header_name() {
        let c = HeaderPriority::new()
            .header(HeaderName::from_static("x-tier"))
            .trusted(true);
        let r = http::Request::builder()
            .header("x-tier", "high")
            .header("x-priority", "low")
            .body(())
            .unwrap();
        assert_eq!(c.classify(&r), Priority::High);
    }
}
