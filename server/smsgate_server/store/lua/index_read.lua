-- Up to ARGV[3] of an app's ids in one shard, newest first, with
-- ARGV[2] <= id < ARGV[1]: the chunked index (KEYS[1], accept.lua) merged with
-- the single sorted set of ids written before it (KEYS[2], usually absent).
-- A chunk holds the ids from its name up to the next chunk's name, so the
-- chunks named below ARGV[1], newest first, give the ids in order; the first
-- chunk older than ARGV[2] is the last that may hold any.
local dir, below, least, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local offset = 0
while #out < limit do
  local names = redis.call('ZREVRANGEBYLEX', dir, '(' .. below, '-', 'LIMIT', offset, 4)
  if #names == 0 then break end
  local last = false
  for _, name in ipairs(names) do
    local ids = redis.call('ZREVRANGEBYLEX', dir .. ':' .. name, '(' .. below, '[' .. least,
      'LIMIT', 0, limit - #out)
    for _, id in ipairs(ids) do out[#out + 1] = id end
    if #out >= limit or name <= least then
      last = true
      break
    end
  end
  if last then break end
  offset = offset + #names
end
local legacy = redis.call('ZREVRANGEBYLEX', KEYS[2], '(' .. below, '[' .. least, 'LIMIT', 0, limit)
if #legacy == 0 then return out end
for _, id in ipairs(legacy) do out[#out + 1] = id end
table.sort(out, function(x, y) return x > y end)
local page = {}
for j = 1, math.min(limit, #out) do page[j] = out[j] end
return page
