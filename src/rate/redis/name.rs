//! How buckets are named in Redis: the same name on every instance.

use std::{fmt::Write, net::IpAddr};

/// A key whose name is the same on every instance of a fleet, so that all
/// of them draw from one bucket in Redis.
///
/// Implemented for the global key `()`, for [`IpAddr`] (what
/// [`PeerIp`](crate::rate::PeerIp) yields), strings, integers, `bool` and `Option`s
/// of these; implement it for a key type of your own to key a shared limit
/// by it (through [`key_fn`](crate::key::key_fn)).
///
/// [`KeyDigest`](crate::rate::KeyDigest), the key of
/// [`HeaderKey`](crate::rate::HeaderKey) and [`ApiKey`](crate::rate::ApiKey),
/// does not implement it: its digest is keyed by a secret drawn per process,
/// so two instances digest one API key differently. To share a per-caller
/// quota, key by a name the fleet agrees on (a tenant or account id looked
/// up from the credential, or a digest under a secret the fleet shares);
/// the name is written into Redis as it is, so do not key by the raw
/// credential.
///
/// ```
/// use tower_spillway::rate::RedisKey;
///
/// struct Tenant(u32);
///
/// impl RedisKey for Tenant {
///     fn write_name(&self, name: &mut String) {
///         self.0.write_name(name);
///     }
/// }
/// ```
pub trait RedisKey {
    /// Appends the key's name to `name`. Distinct keys of one type must
    /// write distinct names, and every instance must write the same name
    /// for one key. (Keys of different types never meet: a limit has one
    /// key type, and each limit its own prefix.)
    fn write_name(&self, name: &mut String);
}

impl RedisKey for () {
    /// The global bucket's name is empty.
    fn write_name(&self, _name: &mut String) {}
}

/// `-` for `None`, `=` and the value's name for `Some`: no `Some` collides
/// with `None`, whatever its name.
impl<T: RedisKey> RedisKey for Option<T> {
    fn write_name(&self, name: &mut String) {
        match self {
            None => name.push('-'),
            Some(key) => {
                name.push('=');
                key.write_name(name);
            }
        }
    }
}

impl RedisKey for bool {
    fn write_name(&self, name: &mut String) {
        name.push_str(if *self { "true" } else { "false" });
    }
}

impl RedisKey for IpAddr {
    /// The canonical text form: IPv4-mapped IPv6 addresses as IPv4 ones.
    fn write_name(&self, name: &mut String) {
        let _ = write!(name, "{}", self.to_canonical());
    }
}

impl RedisKey for String {
    fn write_name(&self, name: &mut String) {
        name.push_str(self);
    }
}

impl RedisKey for &'static str {
    fn write_name(&self, name: &mut String) {
        name.push_str(self);
    }
}

macro_rules! integer_names {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_name(&self, name: &mut String) {
                let _ = write!(name, "{self}");
            }
        }
    )*};
}

integer_names!(u16, u32, u64, u128, i32, i64);

/// The Redis key of `key`'s bucket: `{<prefix>:<name>}`. The braces make the
/// whole name the hash tag, so in a Redis Cluster each bucket would live on
/// the node its own name picks: buckets spread over the shards, and a hot
/// key is one slot's load, not its neighbours'.
pub(super) fn bucket<K: RedisKey>(prefix: &str, key: &K) -> String {
    let mut name = String::with_capacity(prefix.len() + 24);
    name.push('{');
    name.push_str(prefix);
    name.push(':');
    key.write_name(&mut name);
    name.push('}');
    name
}

/// The Redis key holding the fleet's quota, `{<prefix>}:quota`, which a
/// quota change writes and every instance reads.
pub(super) fn quota_key(prefix: &str) -> String {
    format!("{{{prefix}}}:quota")
}

/// The Redis key where the instances of a limit announce themselves,
/// `{<prefix>}:instances`: a sorted set of instance ids scored by when each
/// was last heard from. It shares the quota key's slot.
pub(super) fn instances_key(prefix: &str) -> String {
    format!("{{{prefix}}}:instances")
}
