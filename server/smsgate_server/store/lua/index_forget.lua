-- Drop ids (ARGV) of messages whose retention ran out from an app's index in
-- one shard: from the chunk that covers each (KEYS[1], accept.lua), a chunk
-- left empty from the directory too, and from the sorted set written before
-- the chunks (KEYS[2]).
local dir = KEYS[1]
for _, id in ipairs(ARGV) do
  local name = redis.call('ZREVRANGEBYLEX', dir, '[' .. id, '-', 'LIMIT', 0, 1)[1]
  if name then
    local chunk = dir .. ':' .. name
    redis.call('ZREM', chunk, id)
    if redis.call('EXISTS', chunk) == 0 then redis.call('ZREM', dir, name) end
  end
  redis.call('ZREM', KEYS[2], id)
end
return 0
