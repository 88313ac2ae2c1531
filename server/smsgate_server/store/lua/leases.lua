-- Shard leases: which dispatcher process reads which shard. One slot
-- ({leases}) holds the live processes and every lease, so one call both
-- renews a process's heartbeat and settles its share atomically.
-- KEYS[1] members (sorted set: process -> heartbeat expiry, ms)
-- KEYS[2] owners (hash: shard -> "process expiry_ms")
-- KEYS[3] counts (hash: process -> the shard count it knows)
-- KEYS[4] free (hash: shard -> since when it has had no owner, ms)
-- ARGV[1] process, ARGV[2] lease time ms, ARGV[3] shard count,
-- ARGV[4] 'renew' or 'release'.
-- renew returns {live processes, shard, shard, ...} (the caller's leases).
-- Time is the Redis server's, so processes on hosts whose clocks differ agree.
--
-- Processes may know different shard counts (started before and after the
-- count grew): shares are taken over the largest count a live process knows,
-- a process leases only shards below its own count, and a shard free for a
-- whole lease (no one within its share took it) goes to any process that
-- knows it, above its share; one above its share gives up only shards that
-- a process short of its share could take, so none is left without a reader
-- while some live process can read it.
local members, owners, counts, frees = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
  redis.call('HDEL', counts, me)
  for shard, lease in pairs(held) do
    if lease[1] == me then
      redis.call('HDEL', owners, shard)
      redis.call('HSET', frees, shard, now)
    end
  end
  return {0}
end

for _, gone in ipairs(redis.call('ZRANGEBYSCORE', members, '-inf', now)) do
  redis.call('HDEL', counts, gone)
end
redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
redis.call('ZADD', members, now + ttl, me)
redis.call('HSET', counts, me, shards)
local live = redis.call('ZRANGE', members, 0, -1)
local known, count_of = shards, {}
flat = redis.call('HGETALL', counts)
for i = 1, #flat, 2 do
  count_of[flat[i]] = tonumber(flat[i + 1])
  if count_of[flat[i]] > known then known = count_of[flat[i]] end
end
-- Rounded up: the shares cover every shard, and a newcomer's share comes
-- free as the others give up what they hold above it.
local share = math.ceil(known / #live)

-- Shards held now, per process; and when each free shard came free.
local load = {}
local since = {}
flat = redis.call('HGETALL', frees)
for i = 1, #flat, 2 do since[tonumber(flat[i])] = tonumber(flat[i + 1]) end
for shard = 0, known - 1 do
  local lease = held[shard]
  if lease ~= nil and lease[2] > now then
    load[lease[1]] = (load[lease[1]] or 0) + 1
  elseif lease ~= nil then
    since[shard] = lease[2]
  elseif since[shard] == nil then
    since[shard] = now
    redis.call('HSET', frees, shard, now)
  end
end
-- What a process short of its share could take: the shards below its count.
local wanted_below = 0
for _, process in ipairs(live) do
  local count = math.min(count_of[process] or 0, known)
  if process ~= me and (load[process] or 0) < share and count > wanted_below then
    wanted_below = count
  end
end

-- Free shards from the highest down: those fewer processes know first.
local mine, free = {}, {}
for shard = shards - 1, 0, -1 do
  local lease = held[shard]
  if lease == nil or lease[2] <= now then
    free[#free + 1] = shard
  elseif lease[1] == me then
    mine[#mine + 1] = shard
  end
end
local i = #mine
while #mine > share and i >= 1 do
  if mine[i] < wanted_below then
    redis.call('HDEL', owners, mine[i])
    redis.call('HSET', frees, mine[i], now)
    table.remove(mine, i)
  end
  i = i - 1
end
for _, shard in ipairs(free) do
  if #mine < share or since[shard] + ttl <= now then
    mine[#mine + 1] = shard
    redis.call('HDEL', frees, shard)
  end
end

local reply, fields = {#live}, {}
for _, shard in ipairs(mine) do
  reply[#reply + 1] = shard
  fields[#fields + 1] = shard
  fields[#fields + 1] = me .. ' ' .. (now + ttl)
end
if #fields > 0 then redis.call('HSET', owners, unpack(fields)) end
-- Every key outlives every lease in it, and no longer.
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl * 2) end
return reply
