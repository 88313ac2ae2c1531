-- Take SENT messages whose vendor is due to be asked about them (pull
-- reconciliation of lost receipts). Each one taken is put back, to be asked
-- again ARGV[6] ms later, in the same step: with many replicas, a message is
-- asked about by one of them per interval. Members that ended, or whose
-- receipt deadline has passed (the promote script expires them), leave the set.
-- KEYS[2] reconcile set, KEYS[3] receipt set. ARGV[5] at most this many,
-- ARGV[6] interval (ms). Returns per message 6 fields: app, id, provider,
-- provider message id, phone, time it entered SENT (ms).
local limit, interval = tonumber(ARGV[5]), tonumber(ARGV[6])
local due = redis.call('ZRANGE', KEYS[2], '-inf', NOW, 'BYSCORE', 'LIMIT', 0, limit)
local out = {}
for _, member in ipairs(due) do
  local app, id = split(member)
  local st = state(app, id)
  local deadline = tonumber(redis.call('ZSCORE', KEYS[3], member) or '0')
  if st == SENT and deadline > NOW then
    redis.call('ZADD', KEYS[2], NOW + interval, member)
    local f = redis.call('HMGET', mkey(app, id), 'pv', 'pid', 'p', 'ut')
    out[#out + 1] = app
    out[#out + 1] = id
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or ''
    out[#out + 1] = f[4] or '0'
  else
    redis.call('ZREM', KEYS[2], member)
  end
end
return out
