-- Shard leases: which dispatcher process reads which shard. One slot
-- ({leases}) holds the live processes and every lease, so one call both
-- renews a process's heartbeat and settles its share atomically.
-- KEYS[1] members (sorted set: process -> heartbeat expiry, ms)
-- KEYS[2] owners (hash: shard -> "process expiry_ms")
-- ARGV[1] process, ARGV[2] lease time ms, ARGV[3] shard count,
-- ARGV[4] 'renew' or 'release'.
-- renew returns {live processes, shard, shard, ...} (the caller's leases).
-- Time is the Redis server's, so processes on hosts whose clocks differ agree.
local members, owners = KEYS[1], KEYS[2]
local me, ttl, shards, mode = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local held = {}
local flat = redis.call('HGETALL', owners)
for i = 1, #flat, 2 do
  local owner, expiry = string.match(flat[i + 1], '^(.*) (%d+)$')
  held[tonumber(flat[i])] = {owner, tonumber(expiry)}
end

if mode == 'release' then
  redis.call('ZREM', members, me)
  for shard, lease in pairs(held) do
    if lease[1] == me then redis.call('HDEL', owners, shard) end
  end
  return {0}
end

redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
redis.call('ZADD', members, now + ttl, me)
local live = redis.call('ZCARD', members)
-- Rounded up: the shares cover every shard, and a newcomer's share comes
-- free as the others give up what they hold above it.
local share = math.ceil(shards / live)

local mine, free = {}, {}
for shard = 0, shards - 1 do
  local lease = held[shard]
  if lease == nil or lease[2] <= now then
    free[#free + 1] = shard
  elseif lease[1] == me then
    mine[#mine + 1] = shard
  end
end
while #mine > share do
  redis.call('HDEL', owners, table.remove(mine))
end
for _, shard in ipairs(free) do
  if #mine >= share then break end
  mine[#mine + 1] = shard
end

local reply, fields = {live}, {}
for _, shard in ipairs(mine) do
  reply[#reply + 1] = shard
  fields[#fields + 1] = shard
  fields[#fields + 1] = me .. ' ' .. (now + ttl)
end
if #fields > 0 then redis.call('HSET', owners, unpack(fields)) end
-- Both keys outlive every lease in them, and no longer.
redis.call('PEXPIRE', members, ttl * 2)
redis.call('PEXPIRE', owners, ttl * 2)
return reply
