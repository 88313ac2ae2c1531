-- A worker took queue entries: move each live message to SENDING.
-- KEYS[2] queue stream. ARGV[5] consumer group, ARGV[6] 1 when the entries were
-- re-claimed from a dead worker (then SENDING -> SENDING is allowed), then
-- pairs: entry id, 'app:id'.
-- Returns, per message to send: {entry, app, id, phone, rendered, sender,
-- attempts, created ms, batch}. Entries of gone, canceled or finished
-- messages are acknowledged and dropped here.
local group, reclaimed = ARGV[5], ARGV[6] == '1'
local out = {}
for i = 7, #ARGV, 2 do
  local entry, app, id = ARGV[i], split(ARGV[i + 1])
  local st = state(app, id)
  if st == QUEUED or (reclaimed and st == SENDING) then
    local attempts = redis.call('HINCRBY', mkey(app, id), 'at', 1)
    local v = redis.call('HMGET', mkey(app, id), 'p', 'r', 'snd', 'ct', 'b')
    enter(app, id, v[5], SENDING, 'attempt ' .. attempts)
    out[#out + 1] = {entry, app, id, v[1], v[2], v[3], attempts, v[4], v[5]}
  else
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
return out
