//! `PeerIp` keying a request that carries `x-forwarded-for` headers: the key
//! is `None` only without a peer; it is the peer whenever the peer is not a
//! trusted proxy; otherwise it is the peer or an address written in one of
//! the hops (with a port, in brackets, IPv4-mapped), never another trusted
//! proxy. When every hop is a well-formed address, it is exactly the
//! rightmost hop that is not a trusted proxy, or the peer if there is none.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_spillway::{key::KeyExtractor, rate::PeerIp};

const MAX_HEADERS: usize = 4;
const MAX_HOPS: usize = 8;

#[derive(Debug, Arbitrary)]
struct Input {
    peer: Option<IpAddr>,
    trust_peer: bool,
    trusted: Vec<IpAddr>,
    /// One `x-forwarded-for` header per entry, its hops joined by `", "`
    /// (only the first few of each: longer chains add time, not cases).
    headers: Vec<Vec<Hop>>,
}

#[derive(Debug, Arbitrary)]
enum Hop {
    /// Whatever a client or a broken proxy writes.
    Raw(Vec<u8>),
    /// An address, spelled as some proxy would.
    Addr {
        ip: Which,
        port: Option<u16>,
        brackets: bool,
        mapped: bool,
    },
}

#[derive(Debug, Arbitrary)]
enum Which {
    Own(IpAddr),
    /// One of the trusted proxies or the peer, so that chains through
    /// trusted proxies are common.
    Known(u8),
}

fuzz_target!(|input: Input| {
    let mut trusted = input.trusted;
    if input.trust_peer {
        trusted.extend(input.peer);
    }
    let known: Vec<IpAddr> = trusted.iter().copied().chain(input.peer).collect();

    let mut req = http::Request::new(());
    if let Some(peer) = input.peer {
        req.extensions_mut().insert(SocketAddr::new(peer, 443));
    }
    // The hops as written, when every header is a list of well-formed addresses.
    let mut exact: Option<Vec<IpAddr>> = Some(Vec::new());
    for hops in input.headers.iter().take(MAX_HEADERS) {
        let mut value = Vec::new();
        let mut written = Vec::new();
        for (i, hop) in hops.iter().take(MAX_HOPS).enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            let ip = spell(hop, &known, &mut value);
            written.push(ip);
        }
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        req.headers_mut().append("x-forwarded-for", value);
        match (
            &mut exact,
            written.iter().all(Option::is_some) && !written.is_empty(),
        ) {
            (Some(all), true) => all.extend(written.into_iter().flatten()),
            _ => exact = None,
        }
    }

    let canonical: Vec<IpAddr> = trusted.iter().map(|ip| ip.to_canonical()).collect();
    let got = PeerIp::new().trust_forwarded_for(trusted).key(&req);
    let Some(peer) = input.peer.map(|p| p.to_canonical()) else {
        assert_eq!(got, None);
        return;
    };
    let got = got.expect("a peer always gives a key");
    if !canonical.contains(&peer) {
        assert_eq!(got, peer, "an untrusted peer chose its key");
        return;
    }
    if got != peer {
        assert!(!canonical.contains(&got), "{got} is a trusted proxy");
        let present = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|hop| std::str::from_utf8(hop).ok())
            .any(|hop| written_as(hop.trim()) == Some(got));
        assert!(present, "{got} is in no hop");
    }
    if let Some(all) = exact {
        let want = all
            .iter()
            .rev()
            .map(|ip| ip.to_canonical())
            .find(|ip| !canonical.contains(ip))
            .unwrap_or(peer);
        assert_eq!(got, want);
    }
});

/// Writes `hop` into `out`; the address it spells, if it is one.
fn spell(hop: &Hop, known: &[IpAddr], out: &mut Vec<u8>) -> Option<IpAddr> {
    let (ip, port, brackets, mapped) = match hop {
        Hop::Raw(bytes) => {
            out.extend_from_slice(bytes);
            return None;
        }
        Hop::Addr {
            ip,
            port,
            brackets,
            mapped,
        } => (ip, port, brackets, mapped),
    };
    let mut ip = match *ip {
        Which::Own(ip) => ip,
        Which::Known(i) if !known.is_empty() => known[usize::from(i) % known.len()],
        Which::Known(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    if let (IpAddr::V4(v4), true) = (ip, mapped) {
        ip = IpAddr::V6(v4.to_ipv6_mapped());
    }
    let text = match (ip, port) {
        (ip, Some(port)) => SocketAddr::new(ip, *port).to_string(),
        (IpAddr::V6(v6), None) if *brackets => format!("[{v6}]"),
        (ip, None) => ip.to_string(),
    };
    out.extend_from_slice(text.as_bytes());
    Some(ip)
}

/// The address a hop is written as, in each spelling proxies use (plain,
/// with a port, IPv6 in brackets), the way a caller would expect to see it.
fn written_as(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}
