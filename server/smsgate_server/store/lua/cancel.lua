-- Cancel messages that no provider has yet: SCHEDULED or QUEUED (also while
-- waiting to retry). KEYS[2] due set. ARGV[5] app, then message ids.
-- Returns per id: 1 canceled, 0 too late (its status follows), -1 not found.
local app = ARGV[5]
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local st, batch = state(app, id)
  if not st then
    out[#out + 1] = -1
  elseif st == SCHEDULED or st == QUEUED then
    redis.call('ZREM', KEYS[2], app .. ':' .. id)
    enter(app, id, batch, st, CANCELED, 'canceled by app')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
