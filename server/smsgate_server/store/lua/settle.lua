-- Record what a provider said about messages in SENDING, and acknowledge their
-- queue entries in the same step (at-least-once: ack only once stored).
-- KEYS[2] queue stream, KEYS[3] due set, KEYS[4] receipt set, KEYS[5]
-- reconcile set. ARGV[5] consumer group, ARGV[6] receipt deadline (ms), ARGV[7]
-- receipt map TTL (s), ARGV[8] when to ask the vendor about a SENT message
-- without receipt (ms; 0: the provider answers no queries), then per message
-- 10 fields: entry, app, id, outcome ('sent' | 'unknown' | 'retry' | 'fail' |
-- 'failover' | 'defer'), provider, provider message id, error code, error
-- reason, retry-at ms, the route taken ('' without routes; added to the
-- history's detail).
-- 'failover': the provider refused it for good (or throttled it) and its
-- route has another: it is queued again at once, the provider recorded in
-- 'rf' so the next claim routes past it. 'defer': the provider's pace had no
-- room (or, provider '', something before the call, error code given, could
-- not be checked); it waits in the due set until retry-at, and the attempt is
-- given back.
-- Every outcome clears the in-flight provider ('ip', hand_over.lua).
-- Returns the number of messages whose status changed.
local group, deadline, pmttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local ask = tonumber(ARGV[8])
local changed = 0
local function await_receipt(member)
  redis.call('ZADD', KEYS[4], deadline, member)
  if ask > 0 then redis.call('ZADD', KEYS[5], ask, member) end
end
for i = 9, #ARGV, 10 do
  local entry, app, id, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local provider, pid, ecode, ereason = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local route = ARGV[i + 9]
  local via = route ~= '' and (' (' .. route .. ')') or ''
  local st, batch = state(app, id)
  if st == SENDING then
    local m = mkey(app, id)
    redis.call('HDEL', m, 'ip')
    local again = outcome == 'retry' or outcome == 'failover' or outcome == 'defer'
    if not again and redis.call('HGET', m, 'sen') == '1' then
      -- A provider has the secret now (or never will): keep no copy.
      redis.call('HSET', m, 'tx', '', 'r', '', 'pa', '')
    end
    if outcome == 'sent' then
      redis.call('HSET', m, 'pv', provider, 'pid', pid)
      await_receipt(app .. ':' .. id)
      if pid ~= '' then
        redis.call('SET', P .. 'pm:' .. provider .. ':' .. pid, app .. ':' .. id, 'EX', pmttl)
      end
      enter(app, id, batch, st, SENT, provider .. ' ' .. pid .. via)
    elseif outcome == 'unknown' then
      -- The provider may have it: never sent again; a receipt (or the
      -- receipt timeout) ends it.
      redis.call('HSET', m, 'pv', provider, 'pid', '', 'ec', ecode, 'er', ereason, 'ery', 0)
      await_receipt(app .. ':' .. id)
      enter(app, id, batch, st, SENT, provider .. ' outcome unknown' .. via, ecode, ereason)
    elseif outcome == 'retry' then
      local at = tonumber(ARGV[i + 8])
      redis.call('HSET', m, 'ec', ecode, 'er', ereason, 'ery', 1)
      redis.call('ZADD', KEYS[3], at, app .. ':' .. id)
      local by = provider ~= '' and (provider .. ' ') or ''
      enter(app, id, batch, st, QUEUED, 'retry at ' .. at .. ' after ' .. by .. ecode .. via)
    elseif outcome == 'failover' then
      local refused = redis.call('HGET', m, 'rf') or ''
      refused = refused .. (refused ~= '' and ',' or '') .. provider .. ' ' .. ecode
      redis.call('HSET', m, 'rf', refused, 'ec', ecode, 'er', ereason, 'ery', 1)
      redis.call('XADD', KEYS[2], '*', 'm', app .. ':' .. id)
      enter(app, id, batch, st, QUEUED,
        provider .. ' refused ' .. ecode .. ': failover to the next provider' .. via)
    elseif outcome == 'defer' then
      local at = tonumber(ARGV[i + 8])
      redis.call('HINCRBY', m, 'at', -1)
      redis.call('ZADD', KEYS[3], at, app .. ':' .. id)
      local why = 'for ' .. provider
      if provider == '' then
        redis.call('HSET', m, 'ec', ecode, 'er', ereason, 'ery', 1)
        why = 'after ' .. ecode
      end
      enter(app, id, batch, st, QUEUED, 'waits ' .. why .. ' until ' .. at .. via)
    else
      redis.call('HSET', m, 'pv', provider, 'ec', ecode, 'er', ereason, 'ery', 0)
      local by = provider ~= '' and (provider .. ' ') or ''
      enter(app, id, batch, st, FAILED, by .. ecode .. via, ecode, ereason)
    end
    changed = changed + 1
  end
  redis.call('XACK', KEYS[2], group, entry)
  redis.call('XDEL', KEYS[2], entry)
end
return changed
