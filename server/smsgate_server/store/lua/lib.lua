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

-- Record that message app/id moved from `from` (NEW when being accepted) to
-- `status`: hash, history and event stream, at `at` (ms; NOW when nil: a
-- vendor's receipt names its own time). A move domain/status.py does not
-- allow is a bug: the script stops with an error.
local function enter(app, id, batch, from, status, detail, ecode, ereason, at)
  if not ALLOWED[status][from] then
    error('illegal transition ' .. from .. ' -> ' .. status .. ' of ' .. id)
  end
  local m, h = mkey(app, id), hkey(app, id)
  local t = at or NOW
  if from == NEW then redis.call('INCR', P .. 'live:' .. app) end
  redis.call('HSET', m, 'st', status, 'ut', t)
  if USES_TEMPLATE[from] and not USES_TEMPLATE[status] then template_released(app, m) end
  redis.call('RPUSH', h, status .. '|' .. t .. '|' .. detail)
  if trimmed then
    redis.call('XADD', EVENTS, '*', 'a', app, 'm', id, 'b', batch,
      's', status, 't', t, 'd', detail, 'ec', ecode or '', 'er', ereason or '')
  else
    -- Trimming once per script is enough: it only drops what aged out.
    redis.call('XADD', EVENTS, 'MINID', '~', MINID, '*', 'a', app, 'm', id, 'b', batch,
      's', status, 't', t, 'd', detail, 'ec', ecode or '', 'er', ereason or '')
    trimmed = true
  end
  if TERMINAL[status] then
    if redis.call('HGET', m, 'sen') == '1' then
      -- A verification code: no copy outlives the message's active life.
      redis.call('HSET', m, 'tx', '', 'r', '', 'pa', '')
    end
    redis.call('EXPIRE', m, RETAIN)
    redis.call('EXPIRE', h, RETAIN)
    held_ended(app)
  end
end

-- Current status and batch of a message, or nil when it does not exist.
local function state(app, id)
  local v = redis.call('HMGET', mkey(app, id), 'st', 'b')
  if not v[1] then return nil end
  return tonumber(v[1]), v[2] or ''
end

-- 'app:id' -> app, id (app keys never contain ':').
local function split(member)
  local i = string.find(member, ':', 1, true)
  return string.sub(member, 1, i - 1), string.sub(member, i + 1)
end
