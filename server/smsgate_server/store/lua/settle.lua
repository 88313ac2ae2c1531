-- Record what a provider said about messages in SENDING, and acknowledge their
-- queue entries in the same step (at-least-once: ack only once stored).
-- KEYS[2] queue stream, KEYS[3] due set, KEYS[4] receipt set, KEYS[5]
-- reconcile set. ARGV[5] consumer group, ARGV[6] receipt deadline (ms), ARGV[7]
-- receipt map TTL (s), ARGV[8] when to ask the vendor about a SENT message
-- without receipt (ms; 0: the provider answers no queries), then per message 9 fields: entry, app, id, outcome ('sent' |
-- 'unknown' | 'retry' | 'fail'), provider, provider message id, error code, error reason,
-- retry-at ms.
-- Returns the number of messages whose status changed.
local group, deadline, pmttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local ask = tonumber(ARGV[8])
local changed = 0
local function await_receipt(member)
  redis.call('ZADD', KEYS[4], deadline, member)
  if ask > 0 then redis.call('ZADD', KEYS[5], ask, member) end
end
for i = 9, #ARGV, 9 do
  local entry, app, id, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local provider, pid, ecode, ereason = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local st, batch = state(app, id)
  if st == SENDING then
    local m = mkey(app, id)
    if outcome ~= 'retry' and redis.call('HGET', m, 'sen') == '1' then
      -- A provider has the secret now (or never will): keep no copy.
      redis.call('HSET', m, 'tx', '', 'r', '', 'pa', '')
    end
    if outcome == 'sent' then
      redis.call('HSET', m, 'pv', provider, 'pid', pid)
      await_receipt(app .. ':' .. id)
      if pid ~= '' then
        redis.call('SET', P .. 'pm:' .. provider .. ':' .. pid, app .. ':' .. id, 'EX', pmttl)
      end
      enter(app, id, batch, st, SENT, provider .. ' ' .. pid)
    elseif outcome == 'unknown' then
      -- The provider may have it: never sent again; a receipt (or the
      -- receipt timeout) ends it.
      redis.call('HSET', m, 'pv', provider, 'pid', '', 'ec', ecode, 'er', ereason, 'ery', 0)
      await_receipt(app .. ':' .. id)
      enter(app, id, batch, st, SENT, provider .. ' outcome unknown', ecode, ereason)
    elseif outcome == 'retry' then
      local at = tonumber(ARGV[i + 8])
      redis.call('HSET', m, 'ec', ecode, 'er', ereason, 'ery', 1)
      redis.call('ZADD', KEYS[3], at, app .. ':' .. id)
      enter(app, id, batch, st, QUEUED, 'retry at ' .. at .. ' after ' .. ecode)
    else
      redis.call('HSET', m, 'pv', provider, 'ec', ecode, 'er', ereason, 'ery', 0)
      enter(app, id, batch, st, FAILED, ecode, ecode, ereason)
    end
    changed = changed + 1
  end
  redis.call('XACK', KEYS[2], group, entry)
  redis.call('XDEL', KEYS[2], entry)
end
return changed
