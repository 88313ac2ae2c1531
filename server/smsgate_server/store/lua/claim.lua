-- A worker took queue entries: move each live message to SENDING.
-- KEYS[2] queue stream. ARGV[5] consumer group, ARGV[6] 1 when the entries were
-- re-claimed from a dead worker (then SENDING -> SENDING is allowed), ARGV[7]
-- the most attempts, ARGV[8] the provider the messages go to ('' when not
-- known yet; else recorded as in flight here, as hand_over.lua would, saving
-- its round trip), then pairs: entry id, 'app:id'.
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
local handed = ARGV[8]
-- Every field this script needs, read once per message (enter() is given the
-- history, creation time and sensitivity from the same read).
local FIELDS = {'st', 'b', 'ip', 'at', 'ex', 'p', 'r', 'snd', 'ct', 'sa', 'sen', 'tp', 'pa',
  'sn', 'vt', 'rf', 'mk', 'hs'}
-- A batch's shared text, read once per script run.
local texts = {}
local out = {}
for i = 9, #ARGV, 2 do
  local entry, app, id = ARGV[i], split(ARGV[i + 1])
  local v = redis.call('HMGET', mkey(app, id), unpack(FIELDS))
  local st, batch = tonumber(v[1]), batch_of(id, v[2])
  local known = {hs = v[18], ct = v[9], sen = v[11]}
  local inflight = st == SENDING and reclaimed and (v[3] or '') or ''
  local at = tonumber(v[4] or 0) or 0
  local spent = inflight == '' and st == SENDING and reclaimed and at >= max_attempts
  local ex = tonumber(v[5] or 0) or 0
  if st == QUEUED and ex > 0 and NOW >= ex then
    -- Too late to be of use (an expired verification code): never sent.
    enter(app, id, batch, st, EXPIRED, 'expired before sending', nil, nil, nil, known)
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  elseif spent then
    local reason = 'no outcome after ' .. max_attempts .. ' attempts'
    known.set = {'ec', 'NO_OUTCOME', 'er', reason, 'ery', 0}
    enter(app, id, batch, st, FAILED, 'NO_OUTCOME', 'NO_OUTCOME', reason, nil, known)
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  elseif st == QUEUED or (reclaimed and st == SENDING) then
    local attempts = inflight ~= '' and at or at + 1
    -- accept.lua stores only fields that are set: a missing one is empty, and
    -- a batch recipient without a text of its own has the batch's.
    local rendered = v[7]
    if not rendered then
      rendered = ''
      if batch ~= '' then
        local ref = app .. ':' .. batch
        texts[ref] = texts[ref] or redis.call('GET', P .. 'bt:' .. ref) or ''
        rendered = texts[ref]
      end
    end
    if inflight == '' then
      known.set = {'at', digits(attempts)}
      if handed ~= '' then known.set[3], known.set[4] = 'ip', handed end
      enter(app, id, batch, st, SENDING, 'attempt ' .. digits(attempts), nil, nil, nil, known)
    end
    out[#out + 1] = {entry, app, id, v[6], rendered, v[8] or '', attempts,
      digits(created_of(id, v[9])), batch,
      v[10] or '0', v[11], v[12] or '', v[13] or '', v[14] or '', v[15] or '', v[16] or '',
      inflight, v[17] or ''}
  else
    redis.call('XACK', KEYS[2], group, entry)
    redis.call('XDEL', KEYS[2], entry)
  end
end
return out
