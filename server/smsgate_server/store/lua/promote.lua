-- Move due messages (scheduled sends, retries) to the queue; also expire sent
-- messages whose receipt never came. One script per shard and tick, so with
-- many replicas each due message is promoted exactly once.
-- KEYS[2] due set, KEYS[3] queue stream, KEYS[4] receipt set.
-- ARGV[5] at most this many of each. Returns {promoted, expired}.
local limit = tonumber(ARGV[5])
local due = redis.call('ZRANGE', KEYS[2], '-inf', NOW, 'BYSCORE', 'LIMIT', 0, limit)
local promoted = 0
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[2], member)
  local app, id = split(member)
  local st, batch = state(app, id)
  if st == SCHEDULED or st == QUEUED then
    if st == SCHEDULED then enter(app, id, batch, st, QUEUED, 'due') end
    redis.call('XADD', KEYS[3], '*', 'm', member)
    promoted = promoted + 1
  end
end
local late = redis.call('ZRANGE', KEYS[4], '-inf', NOW, 'BYSCORE', 'LIMIT', 0, limit)
for _, member in ipairs(late) do
  redis.call('ZREM', KEYS[4], member)
  local app, id = split(member)
  local st, batch = state(app, id)
  if st == SENT then
    local m = mkey(app, id)
    local f = redis.call('HMGET', m, 'pid', 'ec', 'pv', 'ery')
    -- settle.lua's 'unknown' leaves no vendor id and an error not retried.
    if (f[1] or '') == '' and (f[2] or '') ~= '' and f[4] ~= '1' then
      -- Its send got no answer (settle's 'unknown') and nothing was heard
      -- since: it may or may not have reached the phone. It was never sent
      -- again; say so rather than a bare expiry.
      local reason = (f[3] or '') .. ' gave no answer (' .. f[2] .. ') and no receipt or'
        .. ' status query settled it: it may or may not have reached the phone'
      redis.call('HSET', m, 'ec', 'OUTCOME_UNKNOWN', 'er', reason, 'ery', 0)
      enter(app, id, batch, st, EXPIRED, 'OUTCOME_UNKNOWN', 'OUTCOME_UNKNOWN', reason)
    else
      enter(app, id, batch, st, EXPIRED, 'no delivery receipt')
    end
  end
end
return {promoted, #late}
