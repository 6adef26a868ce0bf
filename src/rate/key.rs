//! Which bucket a request draws from.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use http::{HeaderName, header};

use crate::key::{KeyExtractor, KeyType};

/// The peer's IP address, from the connection info in the request's
/// extensions.
///
/// By default it reads a [`SocketAddr`] extension (what a hyper server loop
/// inserts with a one-line `map_request`). Servers that store the peer
/// elsewhere name the extension with [`from_extension`](Self::from_extension),
/// e.g. axum's `ConnectInfo<SocketAddr>` from
/// `into_make_service_with_connect_info`:
///
/// ```
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use tower_spillway::rate::PeerIp;
///
/// let peer = PeerIp::from_extension(|ext| {
///     ext.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
/// });
/// # let _ = peer;
/// ```
///
/// For tonic servers the lookup is
/// `ext.get::<tonic::transport::server::TcpConnectInfo>().and_then(|i| i.remote_addr()).map(|a| a.ip())`.
///
/// `X-Forwarded-For` is read only when the direct peer is one of the proxies
/// named with [`trust_forwarded_for`](Self::trust_forwarded_for): a client
/// cannot pick its own key by sending the header.
#[derive(Debug, Clone)]
pub struct PeerIp<F = fn(&http::Extensions) -> Option<IpAddr>> {
    lookup: F,
    trusted: Vec<IpAddr>,
}

fn socket_addr(ext: &http::Extensions) -> Option<IpAddr> {
    ext.get::<SocketAddr>().map(SocketAddr::ip)
}

impl PeerIp {
    /// Reads the peer from a [`SocketAddr`] extension.
    pub fn new() -> Self {
        Self {
            lookup: socket_addr,
            trusted: Vec::new(),
        }
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> PeerIp<F>
where
    F: Fn(&http::Extensions) -> Option<IpAddr>,
{
    /// Reads the peer with `lookup`.
    pub fn from_extension(lookup: F) -> Self {
        Self {
            lookup,
            trusted: Vec::new(),
        }
    }

    /// Trusts `X-Forwarded-For` when the direct peer is one of `proxies`: the
    /// key is then the rightmost address in the header that is not itself a
    /// trusted proxy.
    #[must_use]
    pub fn trust_forwarded_for(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        self.trusted
            .extend(proxies.into_iter().map(|ip| ip.to_canonical()));
        self
    }

    fn resolve(&self, ext: &http::Extensions, headers: &http::HeaderMap) -> Option<IpAddr> {
        let peer = (self.lookup)(ext)?.to_canonical();
        if !self.trusted.contains(&peer) {
            return Some(peer);
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        hops.reverse();
        for hop in hops {
            match parse_hop(hop) {
                Some(ip) if self.trusted.contains(&ip) => continue,
                Some(ip) => return Some(ip),
                // A garbled hop: stop trusting the rest of the chain.
                None => return Some(peer),
            }
        }
        Some(peer)
    }
}

/// One hop of `X-Forwarded-For`, as proxies write it: an address
/// (`203.0.113.7`, `2001:db8::1`), with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`) or in brackets (`[2001:db8::1]`). An IPv4-mapped
/// IPv6 address is its IPv4 address, so a client has one key however its
/// proxy spells it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = hop.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

impl<F> KeyType for PeerIp<F> {
    type Key = Option<IpAddr>;
}

impl<B, F> KeyExtractor<http::Request<B>> for PeerIp<F>
where
    F: Fn(&http::Extensions) -> Option<IpAddr>,
{
    fn key(&self, req: &http::Request<B>) -> Option<IpAddr> {
        self.resolve(req.extensions(), req.headers())
    }
}

/// A fixed-size stand-in for a caller-chosen key (a header's value, an API
/// key): a 128-bit digest under a key drawn at random per process, so a
/// caller can neither make two keys collide nor make a remembered key cost
/// more than these 16 bytes. (Remembering the header itself would keep its
/// bytes, and the read buffer they share, alive for as long as the key.)
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(u128);

impl KeyDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use std::{
            hash::{BuildHasher, RandomState},
            sync::OnceLock,
        };
        static STATES: OnceLock<(RandomState, RandomState)> = OnceLock::new();
        let (a, b) = STATES.get_or_init(|| (RandomState::new(), RandomState::new()));
        let high = u128::from(a.hash_one(bytes));
        let low = u128::from(b.hash_one(bytes));
        Self(high << 64 | low)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({:032x})", self.0)
    }
}

/// The value of a request header (`None` when absent), remembered as its
/// [`KeyDigest`].
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyType for HeaderKey {
    type Key = Option<KeyDigest>;
}

impl<B> KeyExtractor<http::Request<B>> for HeaderKey {
    fn key(&self, req: &http::Request<B>) -> Option<KeyDigest> {
        let value = req.headers().get(&self.name)?;
        Some(KeyDigest::of(value.as_bytes()))
    }
}

/// The caller's API key: `x-api-key`, or else the token of
/// `Authorization: Bearer <token>` (`None` when neither is sent), remembered
/// as its [`KeyDigest`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKey;

impl KeyType for ApiKey {
    type Key = Option<KeyDigest>;
}

impl<B> KeyExtractor<http::Request<B>> for ApiKey {
    fn key(&self, req: &http::Request<B>) -> Option<KeyDigest> {
        let headers = req.headers();
        if let Some(v) = headers.get("x-api-key") {
            return Some(KeyDigest::of(v.as_bytes()));
        }
        let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
        let token = auth
            .strip_prefix(b"Bearer ")
            .or_else(|| auth.strip_prefix(b"bearer "))?
            .trim_ascii();
        Some(KeyDigest::of(token))
    }
}

#[cfg(test)]
mod tests;
