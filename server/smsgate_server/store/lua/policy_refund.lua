-- Gives back what policy_take.lua counted for recipients whose messages were
-- not stored after all (the accept failed or found the request stored already).
-- KEYS[1] the app's opt-out set (only for the slot). ARGV[1] the policy slot's
-- key prefix, ARGV[2] request id ('' none: no verdicts to forget), ARGV[3]
-- '1' when same-content marks were set, ARGV[4] '1' when the number's day was
-- counted, ARGV[5] '1' when the app's day was counted, ARGV[6] the day number,
-- ARGV[7] the token of the call that counted; then per recipient its number's
-- tag and its content's digest. Counters that expired meanwhile stay gone.
local P, RID = ARGV[1], ARGV[2]
local SAME, PER_DAY, APP = ARGV[3] == '1', ARGV[4] == '1', ARGV[5] == '1'
local DAY, TOKEN = ARGV[6], ARGV[7]
local FIRST = 8
local n = (#ARGV - FIRST + 1) / 2
for i = 0, n - 1 do
  local tag, digest = ARGV[FIRST + 2 * i], ARGV[FIRST + 2 * i + 1]
  if SAME then
    local mark = P .. 'sc:' .. tag .. ':' .. digest
    if redis.call('GET', mark) == TOKEN then redis.call('DEL', mark) end
  end
  if PER_DAY then
    local per_day = P .. 'nd:' .. DAY .. ':' .. tag
    if tonumber(redis.call('GET', per_day) or '0') > 0 then redis.call('DECR', per_day) end
  end
end
if APP and n > 0 then
  local app_day = P .. 'ad:' .. DAY
  local left = tonumber(redis.call('GET', app_day) or '0')
  if left > 0 then redis.call('DECRBY', app_day, math.min(n, left)) end
end
if RID ~= '' then redis.call('DEL', P .. 'rq:' .. RID) end
return n
