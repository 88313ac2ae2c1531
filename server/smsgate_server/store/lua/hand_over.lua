-- A worker is about to call a provider for messages it claimed: record that
-- provider on each ('ip', the in-flight provider) first, so a re-claim of a
-- message whose outcome was never stored knows the provider may have it
-- (claim.lua then settles it nowhere else). settle.lua clears it.
-- ARGV[5] the provider, then pairs: 'app:id', its attempts when claimed.
-- Returns per message 1 when recorded, 0 when it is not this worker's to send
-- any more (no longer SENDING, or re-claimed since: its attempts moved on).
local provider = ARGV[5]
local out = {}
for i = 6, #ARGV, 2 do
  local app, id = split(ARGV[i])
  local m = mkey(app, id)
  local v = redis.call('HMGET', m, 'st', 'at')
  if tonumber(v[1]) == SENDING and v[2] == ARGV[i + 1] then
    redis.call('HSET', m, 'ip', provider)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
