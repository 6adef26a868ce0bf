//! The Lua scripts the source runs: each is one round trip and atomic, so a
//! reclaim, a read, a dead-letter or a discard never half happens, and
//! every age is measured on the Redis server's clock, the one that stamped
//! the entry ids.

use redis::Script;

/// Reclaims, then reads, tier by tier from the highest, until `max` entries.
///
/// KEYS: the tiers' streams, highest priority first. ARGV: group, consumer,
/// max, min-idle ms (the lease), then one `XAUTOCLAIM` cursor per tier.
/// Answers `{now ms, {{tier, id, deliveries, fields}...}, {cursor...},
/// {trimmed...}}`, where trimmed counts the pending entries `XAUTOCLAIM`
/// found deleted from the stream (its retention removed them).
const LEASE: &str = r"
local group, consumer = ARGV[1], ARGV[2]
local left = tonumber(ARGV[3])
local idle = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobs, cursors, trimmed = {}, {}, {}
for i, stream in ipairs(KEYS) do
  local cursor, gone = ARGV[4 + i], 0
  if left > 0 then
    -- Entries idle past the lease: their consumer died, or a retry's
    -- backoff ran out (see FINISH). Oldest first, before anything new.
    local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, idle, cursor, 'COUNT', left)
    cursor = claimed[1]
    for _, entry in ipairs(claimed[2]) do
      if entry and entry[1] then
        local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)[1]
        jobs[#jobs + 1] = {i, entry[1], p and p[4] or 1, entry[2]}
        left = left - 1
      end
    end
    if claimed[3] then gone = #claimed[3] end
  end
  if left > 0 then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left, 'STREAMS', stream, '>')
    if read then
      for _, entry in ipairs(read[1][2]) do
        jobs[#jobs + 1] = {i, entry[1], 1, entry[2]}
        left = left - 1
      end
    end
  end
  cursors[i] = cursor
  trimmed[i] = gone
end
return {now, jobs, cursors, trimmed}
";

/// Ends attempts: acknowledge, back off, or dead-letter.
///
/// KEYS: the tiers' streams, then their dead-letter streams in the same
/// order. ARGV: group, consumer, lease ms, dead-letter MAXLEN, then six per
/// ending: tier, id, attempt, kind (`done`, `retry`, `dead`), backoff ms,
/// and `counted`/`uncounted` for a retry or the reason for a dead letter.
/// Answers one 1 or 0 per ending: whether the attempt still held its entry.
///
/// A retry stays pending with this consumer, its idle time set so that it
/// reaches the lease (and LEASE reclaims it) when the backoff ends, and its
/// delivery count set so that a refusal the stack made does not count.
const FINISH: &str = r"
local group, consumer = ARGV[1], ARGV[2]
local lease, dead_max = tonumber(ARGV[3]), ARGV[4]
local tiers = #KEYS / 2
local answers = {}
local function holds(stream, id, attempt)
  local p = redis.call('XPENDING', stream, group, id, id, 1)[1]
  return p ~= nil and p[2] == consumer and tonumber(p[4]) == attempt
end
for j = 5, #ARGV, 6 do
  local tier, id, attempt, kind = tonumber(ARGV[j]), ARGV[j + 1], tonumber(ARGV[j + 2]), ARGV[j + 3]
  local stream, dead = KEYS[tier], KEYS[tiers + tier]
  local held = 0
  if kind == 'done' then
    -- Done is done, even past the lease: acknowledging spares a replay.
    held = redis.call('XACK', stream, group, id)
  elseif holds(stream, id, attempt) then
    if kind == 'retry' then
      local count = attempt
      if ARGV[j + 5] == 'uncounted' then count = attempt - 1 end
      local idle = math.max(lease - tonumber(ARGV[j + 4]), 0)
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle, 'RETRYCOUNT', count, 'JUSTID')
    else
      local fields = {'dead:id', id, 'dead:attempts', attempt, 'dead:reason', ARGV[j + 5]}
      local entry = redis.call('XRANGE', stream, id, id)[1]
      if entry then
        for _, v in ipairs(entry[2]) do fields[#fields + 1] = v end
      end
      redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*', unpack(fields))
      redis.call('XACK', stream, group, id)
    end
    held = 1
  end
  answers[#answers + 1] = held
end
return answers
";

/// The figures of every tier.
///
/// KEYS: the tiers' streams, then their dead-letter streams. ARGV: group,
/// the most entries to count when the group's lag is unknown. Answers
/// `{now ms, {{unread, pending, oldest unread age ms or -1, dead}...}}`.
const STATS: &str = r"
local group, cap = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tiers = #KEYS / 2
local out = {}
for i = 1, tiers do
  local stream = KEYS[i]
  local unread, pending, oldest = 0, 0, -1
  if redis.call('EXISTS', stream) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local f = {}
      for k = 1, #g, 2 do f[g[k]] = g[k + 1] end
      if f['name'] == group then
        pending = f['pending']
        local from = '(' .. f['last-delivered-id']
        local first = redis.call('XRANGE', stream, from, '+', 'COUNT', 1)[1]
        if first then
          oldest = math.max(now - tonumber(string.match(first[1], '^%d+')), 0)
        end
        if f['lag'] then
          unread = f['lag']
        elseif first then
          -- Deletions make the lag unknown: count, up to the cap.
          unread = #redis.call('XRANGE', stream, from, '+', 'COUNT', cap)
        end
      end
    end
  end
  out[i] = {unread, pending, oldest, redis.call('XLEN', KEYS[tiers + i])}
end
return {now, out}
";

/// The emergency discard of one tier: moves the group's cursor past the
/// unread entries older than the bound (the seed's "discard = cursor
/// advance"). They stay in the stream, never delivered, until its
/// retention trims them, so an operator can still read them.
///
/// KEYS[1]: the tier's stream. ARGV: group, bound ms, the most entries per
/// call. Answers `{discarded, oldest discarded age ms}`.
const DISCARD: &str = r"
local group, bound, max = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - bound
if cutoff <= 0 then return {0, 0} end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for k = 1, #g, 2 do f[g[k]] = g[k + 1] end
  if f['name'] == group then
    local from = '(' .. f['last-delivered-id']
    local old = redis.call('XRANGE', KEYS[1], from, tostring(cutoff - 1), 'COUNT', max)
    if #old == 0 then return {0, 0} end
    local last = old[#old][1]
    if f['entries-read'] then
      -- Keep the group's lag exact: the cursor skipped #old entries.
      redis.call('XGROUP', 'SETID', KEYS[1], group, last, 'ENTRIESREAD', f['entries-read'] + #old)
    else
      redis.call('XGROUP', 'SETID', KEYS[1], group, last)
    end
    return {#old, math.max(now - tonumber(string.match(old[1][1], '^%d+')), 0)}
  end
end
return {0, 0}
";

/// The four scripts, hashed once.
pub(super) struct Scripts {
    pub(super) lease: Script,
    pub(super) finish: Script,
    pub(super) stats: Script,
    pub(super) discard: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            lease: Script::new(LEASE),
            finish: Script::new(FINISH),
            stats: Script::new(STATS),
            discard: Script::new(DISCARD),
        }
    }
}
