-- A worker took queue entries: move each live message to SENDING.
-- KEYS[2] queue stream. ARGV[5] consumer group, ARGV[6] 1 when the entries were
-- re-claimed from a dead worker (then SENDING -> SENDING is allowed), ARGV[7]
-- the most attempts, then pairs: entry id, 'app:id'.
-- Returns, per message to send: {entry, app, id, phone, rendered, sender,
-- attempts, created ms, batch, send_at ms, sensitive ('1': rendered and
-- params are sealed), template id, template params json, sign name, vendor
-- template ids json (the last four '' for free text), providers that refused
-- it ("name code" joined by ','), the in-flight provider, marketing ('1' or
-- '')}. Entries of gone, canceled or finished messages are acknowledged and
-- dropped here; a re-claimed message out of attempts fails.
-- A re-claimed SENDING message with an in-flight provider ('ip', hand_over.lua)
-- was handed to that provider by a worker that never stored the outcome: it
-- is returned as it is (no attempt counted, no history) with that provider,
-- for the dispatcher to settle as an unknown outcome, never to send again.
local group, reclaimed, max_attempts = ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local out = {}
for i = 8, #ARGV, 2 do
  local entry, app, id = ARGV[i], split(ARGV[i + 1])
  local st, batch = state(app, id)
  local inflight = st == SENDING and reclaimed and redis.call('HGET', mkey(app, id), 'ip') or ''
  local spent = inflight == '' and st == SENDING and reclaimed
    and tonumber(redis.call('HGET', mkey(app, id), 'at') or 0) >= max_attempts
  local ex = tonumber(redis.call('HGET', mkey(app, id), 'ex') or 0) or 0
  if st == QUEUED and ex > 0 and NOW >= ex then
    -- Too late to be of use (an expired verification code): never sent.
    enter(app, id, batch, st, EXPIRED, 'expired before sending')
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  elseif spent then
    local reason = 'no outcome after ' .. max_attempts .. ' attempts'
    redis.call('HSET', mkey(app, id), 'ec', 'NO_OUTCOME', 'er', reason, 'ery', 0)
    enter(app, id, batch, st, FAILED, 'NO_OUTCOME', 'NO_OUTCOME', reason)
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  elseif st == QUEUED or (reclaimed and st == SENDING) then
    local attempts = inflight ~= '' and tonumber(redis.call('HGET', mkey(app, id), 'at') or 0)
      or redis.call('HINCRBY', mkey(app, id), 'at', 1)
    local v = redis.call('HMGET', mkey(app, id), 'p', 'r', 'snd', 'ct', 'b', 'sa', 'sen',
      'tp', 'pa', 'sn', 'vt', 'rf', 'mk')
    -- accept.lua stores only fields that are set: a missing one is empty, and
    -- a batch recipient without a text of its own has the batch's.
    v[3], v[5], v[6] = v[3] or '', v[5] or '', v[6] or '0'
    if not v[2] then
      v[2] = v[5] ~= '' and redis.call('GET', P .. 'bt:' .. app .. ':' .. v[5]) or ''
    end
    if inflight == '' then enter(app, id, v[5], st, SENDING, 'attempt ' .. attempts) end
    out[#out + 1] = {entry, app, id, v[1], v[2], v[3], attempts, v[4], v[5], v[6], v[7],
      v[8] or '', v[9] or '', v[10] or '', v[11] or '', v[12] or '', inflight, v[13] or ''}
  else
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
return out
