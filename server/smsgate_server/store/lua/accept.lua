-- Accept the messages of one or more calls (group commit: concurrent calls for
-- this shard share one script run, store/messages.py), each call atomically
-- and with its own idempotency and answer.
-- KEYS[2] queue stream, KEYS[3] due set, then per call 3 keys: idempotency
-- key, app index, batch list (the last two may be unused).
-- ARGV[5] fields per message, ARGV[6] how long (ms) after creation a message
-- can still exist, so its index and batch entries matter
-- (MessageStore.horizon_ms), ARGV[7] idempotency TTL (s), then per call: app,
-- request hash ('' = no request id), batch id, result to remember for the
-- request id, its time (ms: NOW for its messages), number of messages, then
-- per message: id, phone, text, template
-- id, params json, rendered, segments, send_at ms, sender, labels json,
-- sensitive ('1' or ''), expire-at ms (0: never), encoding, template version,
-- sign name, vendor ids json (those three only with a template id, which
-- the message counts toward its template's uses until it is handed to a
-- provider: lib.lua), marketing ('1' or '').
-- Returns per call two values: 'new', '' | 'dup', remembered result |
-- 'conflict', ''. A call whose messages exist already is a 'dup' of itself,
-- with its own result to remember.
local F, horizon, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

-- Only what is not empty (or 0) is stored: readers take a missing field as
-- its empty value, and every field written costs bytes for the message's life.
local function hset_present(key, ...)
  local f, n = {...}, select('#', ...)
  local kept = {}
  for k = 1, n, 2 do
    local v = f[k + 1]
    if v ~= '' and v ~= '0' and v ~= 0 then
      kept[#kept + 1] = f[k]
      kept[#kept + 1] = v
    end
  end
  redis.call('HSET', key, unpack(kept))
end

-- One call: its keys, and its arguments from ARGV[a] on (the first message at
-- ARGV[a + 6], n of them). Returns its answer.
local function accept(idem, index, blist, a, n)
  local app, rhash, batch, remember = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  -- Each call keeps its own time (its messages' ids and creation times carry
  -- it); lib.lua's enter() reads NOW.
  NOW = tonumber(ARGV[a + 4])
  local first = a + 6
  -- Ids are random, so only a repeated call (a retry whose first run was
  -- stored after all, say before a failover) names a message that exists;
  -- a call's messages are stored all or none, so its first id tells. Storing
  -- them again would send them twice: answer as the first run is remembered.
  if n > 0 and redis.call('EXISTS', mkey(app, ARGV[first])) == 1 then
    return 'dup', remember
  end
  if rhash ~= '' then
    local seen = redis.call('GET', idem)
    if seen then
      local sep = string.find(seen, '|', 1, true)
      if string.sub(seen, 1, sep - 1) == rhash then
        return 'dup', string.sub(seen, sep + 1)
      end
      return 'conflict', ''
    end
    redis.call('SET', idem, rhash .. '|' .. remember, 'EX', ttl)
  end
  -- Ids start with their creation time in hex: index entries older than the
  -- horizon belong to messages long gone.
  redis.call('ZREMRANGEBYLEX', index, '-', '(' .. string.format('%012x', math.max(NOW - horizon, 0)))
  -- A batch's text is stored once per shard (bt:<app>:<batch>, read by
  -- claim.lua and store/messages.py), not in each recipient's hash: messages
  -- whose text is the batch's have no 'r' (nor 'tx'). The first text accepted
  -- for the batch in this shard is the batch's; recipients with a text of
  -- their own (their own template params) keep it in their hash.
  local shared = false
  if batch ~= '' then
    local bt = P .. 'bt:' .. app .. ':' .. batch
    shared = redis.call('GET', bt)
    -- Worth a key only when the batch has two or more recipients here; a
    -- verification code's text is sealed per message and never shared.
    if not shared and n >= 2 and ARGV[first + 10] ~= '1' then
      shared = ARGV[first + 5]
      redis.call('SET', bt, shared, 'PX', horizon)
    end
  end
  for i = first, first + (n - 1) * F, F do
    local id, send_at = ARGV[i], tonumber(ARGV[i + 7])
    local m = mkey(app, id)
    local text, rendered = ARGV[i + 2], ARGV[i + 5]
    if shared and rendered == shared and ARGV[i + 10] ~= '1' then rendered = '' end
    -- Free text is its own rendering: stored once.
    if text == ARGV[i + 5] then text = '' end
    hset_present(m, 'b', batch, 'p', ARGV[i + 1], 'tx', text, 'tp', ARGV[i + 3],
      'pa', ARGV[i + 4], 'r', rendered, 'sg', ARGV[i + 6], 'ct', NOW, 'sa', send_at,
      'snd', ARGV[i + 8], 'lb', ARGV[i + 9], 'sen', ARGV[i + 10], 'ex', ARGV[i + 11],
      'en', ARGV[i + 12], 'mk', ARGV[i + 16])
    if ARGV[i + 3] ~= '' then
      hset_present(m, 'tv', ARGV[i + 13], 'sn', ARGV[i + 14], 'vt', ARGV[i + 15])
      redis.call('INCR', P .. 'tu:' .. app .. ':' .. ARGV[i + 3])
    end
    redis.call('ZADD', index, 0, id)
    if batch ~= '' then redis.call('RPUSH', blist, id) end
    if send_at > NOW then
      redis.call('ZADD', KEYS[3], send_at, app .. ':' .. id)
      enter(app, id, batch, NEW, SCHEDULED, '')
    else
      redis.call('XADD', KEYS[2], '*', 'm', app .. ':' .. id)
      enter(app, id, batch, NEW, QUEUED, '')
    end
  end
  if batch ~= '' then redis.call('PEXPIRE', blist, horizon) end
  return 'new', ''
end

local out = {}
local a, k = 8, 4
while a <= #ARGV do
  local n = tonumber(ARGV[a + 5])
  local kind, remembered = accept(KEYS[k], KEYS[k + 1], KEYS[k + 2], a, n)
  out[#out + 1] = kind
  out[#out + 1] = remembered
  a, k = a + 6 + n * F, k + 3
end
return out
