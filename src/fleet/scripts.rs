//! The Lua scripts the fleet runs in its Redis. Each runs atomically; times are Redis's own
//! clock (`TIME`, milliseconds), so the replicas' clocks never decide membership, and a
//! sample's slot is checked against it.

/// Renews this member's lease and reads the fleet's state. KEYS: members, watches,
/// timelag, version, epoch. ARGV: member, lease (ms), epoch to set if there is none, watch
/// TTL (ms). Also drops expired members and watches (bumping the version when a watch goes).
/// Returns {now, epoch, version, members...}.
pub const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local oldest = string.format('%d', now - tonumber(ARGV[4]))
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. oldest)
if removed > 0 then redis.call('INCR', KEYS[4]) end
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  redis.call('SET', KEYS[5], ARGV[3])
  epoch = ARGV[3]
end
local version = redis.call('GET', KEYS[4]) or '0'
local reply = {string.format('%d', now), epoch, version}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(reply, member)
end
return reply
";

/// Marks watches as asked about now. KEYS: watches, timelag, version. ARGV: pairs of a
/// watch key and '1' when a trigger on it reads the time lag, else '0'. Bumps the version
/// when a watch is new. Returns the number of new watches.
pub const ASKED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i = 1, #ARGV, 2 do
  added = added + redis.call('ZADD', KEYS[1], 'GT', now, ARGV[i])
  if ARGV[i + 1] == '1' then
    added = added + redis.call('ZADD', KEYS[2], 'GT', now, ARGV[i])
  end
end
if added > 0 then redis.call('INCR', KEYS[3]) end
return added
";

/// The watches some replica was asked about within the watch TTL. KEYS: watches, timelag.
/// ARGV: watch TTL (ms). Returns {watches, the ones that read the time lag}.
pub const LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = string.format('%d', now - tonumber(ARGV[1]))
return {redis.call('ZRANGEBYSCORE', KEYS[1], oldest, '+inf'),
        redis.call('ZRANGEBYSCORE', KEYS[2], oldest, '+inf')}
";

/// Appends a poll's sample to its watch's stream, fenced: the entry id is the poll's slot
/// (its tick by Redis's clock, ms since the epoch), so a second writer of a slot, or a late
/// writer of an earlier one, is refused by the stream itself; a slot later than Redis's now
/// by more than the allowance is refused too (its writer's clock runs ahead, and would take
/// slots no replica on time could write after it); and the writer must hold a live lease.
/// Accepted samples are also appended to the feed every replica reads.
/// KEYS: the watch's stream, the feed, members. ARGV: member, slot, sample, the stream's
/// oldest id to keep, feed retention (ms), the stream's expiry (ms), the watch key, how far
/// after now a slot may be (ms).
/// Returns 'ok', 'refused' (the slot or a later one is written), 'ahead' or 'not-member'.
pub const WRITE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not lease or tonumber(lease) <= now then return 'not-member' end
if tonumber(ARGV[2]) > now + tonumber(ARGV[8]) then return 'ahead' end
local added = redis.pcall('XADD', KEYS[1], 'MINID', '~', ARGV[4], ARGV[2] .. '-0', 's', ARGV[3])
if type(added) == 'table' and added.err then return 'refused' end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local oldest = string.format('%d', now - tonumber(ARGV[5]))
redis.call('XADD', KEYS[2], 'MINID', '~', oldest, '*', 'w', ARGV[7], 'slot', ARGV[2], 's', ARGV[3])
return 'ok'
";
