-- Shared by every message script; store/scripts.py puts it in front of each,
-- after the statuses, TERMINAL and ALLOWED it generates from domain/status.py.
--
-- Common arguments: KEYS[1] is the shard's event stream; ARGV[1] the shard's
-- key prefix, ARGV[2] now (ms), ARGV[3] the oldest event id to keep (MINID),
-- ARGV[4] how long terminal messages are kept (s). Script arguments start at
-- ARGV[5]. Message keys are built here from the prefix; they share the
-- prefix's hash tag, so every key a script touches is in one slot.
local P, NOW, MINID, RETAIN = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local EVENTS = KEYS[1]

local trimmed = false

local function mkey(app, id) return P .. 'm:' .. app .. ':' .. id end
local function hkey(app, id) return P .. 'h:' .. app .. ':' .. id end

-- A message id made by domain/ids.py starts with its creation ms (12 hex
-- digits) and its shard (2), so accept.lua leaves out of the hash what the id
-- already says: the creation time ('ct') when it is the id's, and all but the
-- last 12 digits of a batch id ('b') made in the same ms and shard. These give
-- them back (store/messages.py does the same).
local function created_of(id, ct)
  return tonumber(ct) or tonumber(string.sub(id, 1, 12), 16) or 0
end
local function batch_of(id, b)
  if b and #b == 12 and #id == 26 then return string.sub(id, 1, 14) .. b end
  return b or ''
end

-- The app's held-message count of this shard (store/quota.py reads it): 'live'
-- counts messages not yet terminal, exactly (accepted here, ended here, and a
-- live message never expires); 'done:<bucket>' counts those that ended in one
-- bucket of time and lasts until every one of them has expired. Both change in
-- the script that moves the message, so no crash can split the two.
local function held_ended(app)
  local live = P .. 'live:' .. app
  -- Messages accepted before the counter existed were never counted.
  if tonumber(redis.call('GET', live) or '0') > 0 then redis.call('DECR', live) end
  local width = math.ceil(RETAIN * 1000 / HELD_BUCKETS)
  local bucket = math.floor(NOW / width)
  local done = P .. 'done:' .. app .. ':' .. bucket
  if redis.call('INCR', done) == 1 then
    redis.call('PEXPIREAT', done, (bucket + 1) * width + RETAIN * 1000)
  end
end

-- Statuses in which a message still needs its template (not yet with a
-- provider; SENDING may go back to QUEUED): ShardKeys.template_uses counts them.
local USES_TEMPLATE = {[SCHEDULED] = true, [QUEUED] = true, [SENDING] = true}

-- The message left the statuses that need its template: one use fewer.
local function template_released(app, m)
  local tp = redis.call('HGET', m, 'tp')
  if not tp or tp == '' then return end
  local uses = P .. 'tu:' .. app .. ':' .. tp
  if redis.call('DECR', uses) <= 0 then redis.call('DEL', uses) end
end

-- Usage and cost (store/usage.py reads them). Each time a message enters SENT
-- or a terminal status, the row (status, provider, country, currency) of its
-- app's day in this shard counts it: field <row>|n messages, <row>|s segments,
-- <row>|c cost in micro-units; P..'ut' counts the same without app or day (the
-- Prometheus totals). On entering SENT the cost (segments x the provider's
-- price for the country) is stored on the message ('co', its currency 'cu'),
-- and later rows carry both; a message no provider took costs 0, in no
-- currency. Prices, currencies and the retention are in P..'uc', written at
-- start from the providers file.
-- The provider is the one settle.lua stored ('pv') before the move.
local USAGE_DAY_MS, USAGE_RETAIN = 86400000, 400 * 86400
-- The region of the longest known prefix of a number, longest first
-- (scripts.py, country_prelude: records of n digits and a 2-letter region).
local function country_of(phone)
  local first = (string.byte(phone, 2) or 48) - 48
  for n = math.min(#phone - 1, COUNTRY_PREFIX_DIGITS), 1, -1 do
    local known = COUNTRY_PREFIXES[first * 10 + n]
    local at = known and string.find(known, string.sub(phone, 2, n + 1), 1, true)
    if at then return string.sub(known, at + n, at + n + 1) end
  end
  return 'ZZ'
end
local function count_usage(app, m, status, t)
  local f = redis.call('HMGET', m, 'p', 'pv', 'sg', 'co', 'cu')
  local provider, segments = f[2] or '', tonumber(f[3] or '') or 1
  local country = country_of(f[1] or '')
  local cost, currency = tonumber(f[4] or '') or 0, f[5] or ''
  local cfg = P .. 'uc'
  if status == SENT then
    local c = redis.call('HMGET', cfg, provider .. '|' .. country, provider .. '|*',
      provider .. '|$')
    cost, currency = segments * tonumber(c[1] or c[2] or '0'), c[3] or ''
    if currency ~= '' then
      redis.call('HSET', m, 'co', cost, 'cu', currency)
    else
      redis.call('HSET', m, 'co', cost)
    end
  end
  local row = status .. '|' .. provider .. '|' .. country .. '|' .. currency
  local day = math.floor(t / USAGE_DAY_MS)
  local key = P .. 'u:' .. app .. ':' .. day
  if redis.call('HINCRBY', key, row .. '|n', 1) == 1 then
    -- A new row (rare): its day's hash goes a retention after the day.
    local retain = tonumber(redis.call('HGET', cfg, 'r') or '') or USAGE_RETAIN
    redis.call('EXPIREAT', key, (day + 1) * 86400 + retain)
  end
  redis.call('HINCRBY', key, row .. '|s', segments)
  redis.call('HINCRBY', P .. 'ut', row .. '|n', 1)
  redis.call('HINCRBY', P .. 'ut', row .. '|s', segments)
  if cost > 0 then
    redis.call('HINCRBY', key, row .. '|c', cost)
    redis.call('HINCRBY', P .. 'ut', row .. '|c', cost)
  end
end

-- The app's number in this shard, which its status events carry instead of
-- its key (23 bytes): the shard's hash P..'an' maps app -> number and
-- '#'..number -> app (store/events.py reads that way), '#' is the last number
-- given. Numbers are never reused or removed (one pair per app that ever sent
-- in the shard), so an event always names the app that wrote it. An app key is
-- never all digits, so readers tell a number from a key of the layout before.
-- Redis can still lose the hash, or its last numbers (a restart without
-- persistence, the last second of an everysec AOF, a failover to a replica
-- that missed them, FLUSHALL), and then give a lost number to another app: so
-- every number given also writes the map's generation '@', the server's time
-- in us and the number, which no numbering that lost this write can show.
-- Readers keep what they learned only while '@' stays the one they read it
-- under, and read '@' around every read of events.
local APP_NUMBERS = {}
local function app_number(app)
  local n = APP_NUMBERS[app]
  if not n then
    local map = P .. 'an'
    n = redis.call('HGET', map, app)
    if not n then
      n = string.format('%d', redis.call('HINCRBY', map, '#', 1))
      local t = redis.call('TIME')
      redis.call('HSET', map, app, n, '#' .. n, app, '@', t[1] .. '.' .. t[2] .. '/' .. n)
    end
    APP_NUMBERS[app] = n
  end
  return n
end

-- A status event as the one value of its stream entry (field 'e'; store/events.py
-- reads it, and the eight fields a, m, b, s, t, d, ec, er of events written
-- before): "status|time|app|id|batch|#ecode|#ereason|" .. ecode .. ereason ..
-- detail, the free texts last and measured in bytes, so they may hold '|'.
-- Smaller than a field per value (each costs a header, and an empty one still
-- costs two bytes): for an id made by domain/ids.py (26 hex digits, starting
-- with its creation ms) the time is ms since that creation, and a batch id
-- made in the same ms and shard keeps only its last 12 digits, and the app is
-- its number in the shard (app_number()). Measured with MEMORY USAGE: 64-77
-- bytes per event instead of 102-129.
local function packed_event(app, id, batch, status, t, detail, ecode, ereason)
  app = app_number(app)
  if #id == 26 and not string.find(id, '[^0-9a-f]') then
    t = t - tonumber(string.sub(id, 1, 12), 16)
    if #batch == 26 and string.sub(batch, 1, 14) == string.sub(id, 1, 14) then
      batch = string.sub(batch, 15)
    end
  end
  -- Numbers by '%d' (see digits()): 0.6 instead of 0.9 us per event of Redis CPU.
  return string.format('%d|%d|', status, t) .. app .. '|' .. id .. '|' .. batch
    .. string.format('|%d|%d|', #ecode, #ereason) .. ecode .. ereason .. detail
end

-- A whole number as a string, formatted once per script run: Lua turns a
-- number into a string with sprintf('%.14g'), and Redis one passed to
-- redis.call with '%.17g', both slow floating-point formatting that took 7% of
-- Redis's CPU (perf) when statuses and times went as numbers.
local DIGITS = {}
local function digits(x)
  local s = DIGITS[x]
  if not s then
    s = string.format('%d', x)
    DIGITS[x] = s
  end
  return s
end

-- Record that message app/id moved from `from` (NEW when being accepted) to
-- `status`: hash, history and event stream, at `at` (ms; NOW when nil: a
-- vendor's receipt names its own time). A move domain/status.py does not
-- allow is a bug: the script stops with an error.
--
-- The history lives in the message hash (field 'hs'), one line per status
-- change, "status|ms since creation|detail" (store/messages.py reads it): one
-- key per message instead of two, and short enough for the hash to stay in
-- Redis's compact encoding. Messages accepted before 'hs' existed keep their
-- history list (h:<app>:<id>) to the end.
--
-- `known` (optional) saves reads and writes of the hash: the caller's read of
-- its 'hs', 'ct' and 'sen' (nil where absent, as HMGET gives them), and `set`,
-- more field/value pairs for the one HSET that stores the move. Being
-- accepted, `known.counted` says the caller counted the message as live.
local function enter(app, id, batch, from, status, detail, ecode, ereason, at, known)
  if not ALLOWED[status][from] then
    error('illegal transition ' .. from .. ' -> ' .. status .. ' of ' .. id)
  end
  local m = mkey(app, id)
  local t = at or NOW
  local hs, ct = '', NOW
  if from == NEW then
    if not (known and known.counted) then redis.call('INCR', P .. 'live:' .. app) end
  elseif known then
    hs, ct = known.hs, created_of(id, known.ct)
  else
    local f = redis.call('HMGET', m, 'hs', 'ct')
    hs, ct = f[1], created_of(id, f[2])
  end
  local set = known and known.set or {}
  local n = #set
  set[n + 1], set[n + 2], set[n + 3], set[n + 4] = 'st', digits(status), 'ut', digits(t)
  if hs then
    -- A line per change: a detail never breaks one (vendors' words may hold anything).
    local said = detail
    if string.find(said, '\n', 1, true) then said = string.gsub(said, '\n', ' ') end
    local line = digits(status) .. '|' .. digits(t - ct) .. '|' .. said
    set[n + 5], set[n + 6] = 'hs', hs == '' and line or hs .. '\n' .. line
    redis.call('HSET', m, unpack(set))
  else
    redis.call('HSET', m, unpack(set))
    redis.call('RPUSH', hkey(app, id), status .. '|' .. t .. '|' .. detail)
  end
  if USES_TEMPLATE[from] and not USES_TEMPLATE[status] then template_released(app, m) end
  local event = packed_event(app, id, batch, status, t, detail, ecode or '', ereason or '')
  if trimmed then
    redis.call('XADD', EVENTS, '*', 'e', event)
  else
    -- Trimming once per script is enough: it only drops what aged out.
    redis.call('XADD', EVENTS, 'MINID', '~', MINID, '*', 'e', event)
    trimmed = true
  end
  if TERMINAL[status] then
    local sen
    if known then sen = known.sen else sen = redis.call('HGET', m, 'sen') end
    if sen == '1' then
      -- A verification code: no copy outlives the message's active life.
      redis.call('HSET', m, 'tx', '', 'r', '', 'pa', '')
    end
    redis.call('EXPIRE', m, RETAIN)
    if not hs then redis.call('EXPIRE', hkey(app, id), RETAIN) end
    held_ended(app)
  end
  if status == SENT or TERMINAL[status] then count_usage(app, m, status, t) end
end

-- Current status and batch of a message, or nil when it does not exist.
local function state(app, id)
  local v = redis.call('HMGET', mkey(app, id), 'st', 'b')
  if not v[1] then return nil end
  return tonumber(v[1]), batch_of(id, v[2])
end

-- 'app:id' -> app, id (app keys never contain ':').
local function split(member)
  local i = string.find(member, ':', 1, true)
  return string.sub(member, 1, i - 1), string.sub(member, i + 1)
end
