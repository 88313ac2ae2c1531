-- The sending policy of one app for the recipients of one request
-- (services/policy.py): opt-outs, the same-content and per-number day caps and
-- the app's daily cap, checked and counted for every recipient in one call.
-- KEYS[1] the app's opt-out set; every other key is built from ARGV[1], the
-- prefix of the same slot (store/keys.py policy_prefix).
-- ARGV[2] request id ('' none) and ARGV[3] how long its verdicts are kept (ms):
-- a retry of a request whose recipients were counted gets the same verdicts
-- and counts nothing again. ARGV[4] '1' to refuse opted-out numbers, ARGV[5]
-- the same-content window (ms), ARGV[6] the per-number day cap, ARGV[7] the
-- app's daily cap (each 0: none), ARGV[8] the day number, ARGV[9] ms until
-- the day ends, ARGV[10] a token of this call (the same-content marks it sets
-- hold it, so its refund removes its own marks only), ARGV[11] '1' to remember
-- the verdicts even when every recipient is refused (a batch: its accept
-- remembers even an empty batch); then per recipient its number, its
-- number's tag and its content's digest.
-- Returns {the app's messages today, 1 when replayed, then per recipient a
-- verdict and a wait (ms)}: 0 admitted, 1 opted out, 2 the same content too
-- soon, 3 the number's day cap, 4 the app's daily cap.
local P, RID, RID_TTL = ARGV[1], ARGV[2], tonumber(ARGV[3])
local OPTOUT = ARGV[4] == '1'
local SAME_MS, PER_DAY, APP_CAP = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local DAY, DAY_LEFT, TOKEN = ARGV[8], tonumber(ARGV[9]), ARGV[10]
local REMEMBER_ALL = ARGV[11] == '1'
local FIRST = 12
local n = (#ARGV - FIRST + 1) / 3
-- Day counters outlive their day by an hour: clocks of replicas differ a little.
local DAY_TTL = DAY_LEFT + 3600000
local app_day = P .. 'ad:' .. DAY
local out = {0, 0}

if RID ~= '' then
  local seen = redis.call('GET', P .. 'rq:' .. RID)
  if seen then
    for i = 1, 2 * n do out[2 + i] = 0 end
    for i, v, w in string.gmatch(seen, '(%d+):(%d+):(%d+)') do
      out[3 + 2 * tonumber(i)] = tonumber(v)
      out[4 + 2 * tonumber(i)] = tonumber(w)
    end
    out[1] = tonumber(redis.call('GET', app_day) or '0')
    out[2] = 1
    return out
  end
end

local count = tonumber(redis.call('GET', app_day) or '0')
local admitted, refused = 0, {}
for i = 0, n - 1 do
  local phone, tag, digest = ARGV[FIRST + 3 * i], ARGV[FIRST + 3 * i + 1], ARGV[FIRST + 3 * i + 2]
  local mark = P .. 'sc:' .. tag .. ':' .. digest
  local per_day = P .. 'nd:' .. DAY .. ':' .. tag
  local v, w = 0, 0
  if OPTOUT and redis.call('ZSCORE', KEYS[1], phone) then
    v = 1
  elseif SAME_MS > 0 and redis.call('EXISTS', mark) == 1 then
    v, w = 2, math.max(redis.call('PTTL', mark), 1)
  elseif PER_DAY > 0 and tonumber(redis.call('GET', per_day) or '0') >= PER_DAY then
    v, w = 3, DAY_LEFT
  elseif APP_CAP > 0 and count >= APP_CAP then
    v, w = 4, DAY_LEFT
  else
    if SAME_MS > 0 then redis.call('SET', mark, TOKEN, 'PX', SAME_MS) end
    if PER_DAY > 0 and redis.call('INCR', per_day) == 1 then
      redis.call('PEXPIRE', per_day, DAY_TTL)
    end
    count = count + 1
    admitted = admitted + 1
  end
  out[3 + 2 * i] = v
  out[4 + 2 * i] = w
  if v ~= 0 then refused[#refused + 1] = i .. ':' .. v .. ':' .. w end
end
if APP_CAP > 0 and admitted > 0 then
  if redis.call('INCRBY', app_day, admitted) == admitted then
    redis.call('PEXPIRE', app_day, DAY_TTL)
  end
end
-- A send refused whole is not remembered: nothing of it was stored, and its
-- retry is asked again (it may fit by then).
if RID ~= '' and (admitted > 0 or REMEMBER_ALL) then
  redis.call('SET', P .. 'rq:' .. RID, table.concat(refused, ','), 'PX', RID_TTL)
end
out[1] = count
return out
