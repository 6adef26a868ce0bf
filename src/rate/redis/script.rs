//! The check as Redis runs it: one Lua script per batch, its arguments, and
//! its reply read back into one answer per caller.
//!
//! The script is GCRA over one value per bucket, the key's theoretical
//! arrival time (TAT) in microseconds on Redis's own clock (`TIME`), so
//! instances whose clocks disagree still agree on every bucket. One call
//! decides the checks an instance gathered while its last round trip was
//! under way: `n` checks for each of up to [`KEYS_PER_CALL`] buckets, each
//! bucket's checks in arrival order, as that many calls one after another
//! would be.

use std::time::Duration;

use redis::Value;

use super::super::Quota;

/// The most buckets one script call decides. Redis runs a script alone, so
/// a call is kept short (64 buckets: tens of microseconds) for the other
/// clients' sake; a batch with more buckets is several calls in one
/// pipeline.
pub(super) const KEYS_PER_CALL: usize = 64;

/// GCRA for the buckets `KEYS`, under a quota of one call per `ARGV[1]`
/// microseconds in bursts of `ARGV[2]`, with `ARGV[2 + i]` checks of
/// `KEYS[i]`.
///
/// Returns three integers per bucket, `allowed, capacity, wait`: how many of
/// its checks conform (the first ones), how many calls conformed before
/// them, and the microseconds until the next call conforms after them (0
/// when one still does). A key expires when its TAT passes: a bucket past
/// its TAT is indistinguishable from one never used, so its TTL is at most
/// the burst period and an idle key costs Redis nothing.
///
/// TATs are written with `%.0f`: Lua 5.1's `tostring` keeps 14 digits, and
/// a TAT has 16.
pub(super) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i + 2])
  local tat = tonumber(redis.call('GET', key) or now) or now
  if tat < now then tat = now end
  local capacity = 0
  if tat - now <= tolerance then
    capacity = math.floor((tolerance - (tat - now)) / interval) + 1
  end
  local allowed = math.min(n, capacity)
  if allowed > 0 then
    tat = tat + allowed * interval
    local ttl = math.ceil((tat - now) / 1000)
    redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
  end
  local wait = tat - now - tolerance
  if wait < 0 then wait = 0 end
  out[#out + 1] = allowed
  out[#out + 1] = capacity
  out[#out + 1] = wait
end
return out
";

/// How long an instance counts after it was last heard from.
pub(super) const INSTANCE_TTL: Duration = Duration::from_secs(5);

/// An instance's announcement: `ARGV[1]` (its id) heard from now, on
/// Redis's clock, in the set `KEYS[1]`; instances not heard from within
/// `ARGV[2]` milliseconds forgotten. Returns how many are left, this one
/// among them. The set expires with the last instance.
pub(super) const ANNOUNCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
";

/// The script's quota arguments: the interval in whole microseconds (at
/// least 1; the script's clock has no finer grain) and the burst.
pub(super) fn quota_args(quota: &Quota) -> (u64, u32) {
    let micros = quota.replenish_interval().as_nanos().div_ceil(1_000);
    (
        u64::try_from(micros).unwrap_or(u64::MAX).max(1),
        quota.burst_size(),
    )
}

/// What the script decided for the checks of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reply {
    allowed: u32,
    capacity: u32,
    wait: Duration,
}

/// One caller's answer from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Admitted; this many more calls would conform now.
    Allow { remaining: u32 },
    /// Refused; the next call conforms after this wait.
    Deny { wait: Duration },
}

impl Reply {
    /// Reads a script call's replies for `buckets` buckets, three integers
    /// each; `None` for anything else (a server error, a script of another
    /// version).
    pub(super) fn parse(value: &Value, buckets: usize) -> Option<Vec<Self>> {
        let Value::Array(items) = value else {
            return None;
        };
        if items.len() != 3 * buckets {
            return None;
        }
        let int = |v: &Value| match v {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        };
        items
            .chunks_exact(3)
            .map(|r| {
                Some(Self {
                    allowed: u32::try_from(int(&r[0])?).ok()?,
                    capacity: u32::try_from(int(&r[1])?).ok()?,
                    wait: Duration::from_micros(int(&r[2])?),
                })
            })
            .collect()
    }

    /// The answer of the `i`-th check of the batch (from 0, in arrival
    /// order).
    pub(super) fn answer(&self, i: usize) -> Answer {
        match u32::try_from(i) {
            Ok(i) if i < self.allowed => Answer::Allow {
                remaining: self.capacity.saturating_sub(i + 1),
            },
            // The wait is until the next call conforms, at least a
            // microsecond for a refusal (a wait of 0 would mean "now").
            _ => Answer::Deny {
                wait: self.wait.max(Duration::from_micros(1)),
            },
        }
    }
}

/// The quota as the fleet's config key holds it: `"<interval ns> <burst>"`.
pub(super) fn encode_quota(quota: &Quota) -> String {
    format!(
        "{} {}",
        quota.replenish_interval().as_nanos(),
        quota.burst_size()
    )
}

/// The config key's quota, `None` if it is missing or not one this crate
/// wrote.
pub(super) fn decode_quota(value: &Value) -> Option<Quota> {
    let text = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?,
        Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    let (interval, burst) = text.split_once(' ')?;
    let interval = Duration::from_nanos(interval.parse().ok()?);
    let burst: u32 = burst.parse().ok()?;
    // The burst's whole period is one call per interval times the burst:
    // `Quota::new` takes that period and the burst.
    let period = interval.checked_mul(burst)?;
    let quota = Quota::new(burst, period).ok()?;
    (quota.replenish_interval() == interval).then_some(quota)
}
