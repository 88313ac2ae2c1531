-- Up to ARGV[3] of an app's ids in one shard, newest first, with
-- ARGV[2] <= id < ARGV[1]: the chunked index (KEYS[1], accept.lua) merged with
-- the single sorted set of ids written before it (KEYS[2], usually absent).
-- ARGV[4] is the horizon (12 hex digits of ms): ids older belong to messages
-- that can no longer exist.
-- A chunk holds the ids from its name up to the next chunk's name, so the
-- chunks named below ARGV[1], newest first, give the ids in order; the first
-- chunk older than ARGV[2] is the last that may hold any. A chunk that
-- expired before the directory (accept.lua) is skipped and its name dropped.
local dir, below, least, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local offset = 0
while #out < limit do
  local names = redis.call('ZREVRANGEBYLEX', dir, '(' .. below, '-', 'LIMIT', offset, 4)
  if #names == 0 then break end
  local last, dropped = false, 0
  for _, name in ipairs(names) do
    local chunk = dir .. ':' .. name
    local ids = redis.call('ZREVRANGEBYLEX', chunk, '(' .. below, '[' .. least,
      'LIMIT', 0, limit - #out)
    if #ids == 0 and redis.call('EXISTS', chunk) == 0 then
      redis.call('ZREM', dir, name)
      dropped = dropped + 1
    end
    for _, id in ipairs(ids) do out[#out + 1] = id end
    if #out >= limit or name <= least then
      last = true
      break
    end
  end
  if last then break end
  offset = offset + #names - dropped
end
-- The sorted set written before the chunks is never added to: its ids past
-- the horizon go, and the key with its newest (as accept.lua does).
local legacy = KEYS[2]
local newest = redis.call('ZREVRANGE', legacy, 0, 0)[1]
if not newest then return out end
local left = tonumber(string.sub(newest, 1, 12), 16) - tonumber(ARGV[4], 16)
if left <= 0 then
  redis.call('DEL', legacy)
  return out
end
redis.call('PEXPIRE', legacy, left)
redis.call('ZREMRANGEBYLEX', legacy, '-', '(' .. ARGV[4])
local older = redis.call('ZREVRANGEBYLEX', legacy, '(' .. below, '[' .. least, 'LIMIT', 0, limit)
if #older == 0 then return out end
for _, id in ipairs(older) do out[#out + 1] = id end
table.sort(out, function(x, y) return x > y end)
local page = {}
for j = 1, math.min(limit, #out) do page[j] = out[j] end
return page
