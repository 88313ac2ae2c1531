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
-- Adds the pairs to `kept`, for the one HSET that stores the message with its
-- first status (lib.lua's enter()).
local function present(kept, ...)
  local f, n = {...}, select('#', ...)
  for k = 1, n, 2 do
    local v = f[k + 1]
    if v ~= '' and v ~= '0' and v ~= 0 then
      kept[#kept + 1] = f[k]
      kept[#kept + 1] = v
    end
  end
  return kept
end

-- Per app index key, the ids this script run adds to it (index_add, below)
-- and the app's single sorted set written before the chunks
-- (ShardKeys.legacy_index), in the order the apps came.
local INDEXED, INDEX_ORDER, LEGACY = {}, {}, {}

-- One call: its keys, and its arguments from ARGV[a] on (the first message at
-- ARGV[a + 6], n of them). Returns its answer.
local function accept(idem, index, blist, a, n)
  local app, rhash, batch, remember = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  -- Its ids join the app's index after every call's messages are stored.
  local indexed = INDEXED[index]
  if not indexed then
    indexed = {}
    INDEXED[index] = indexed
    INDEX_ORDER[#INDEX_ORDER + 1] = index
    LEGACY[index] = P .. 'idx:' .. app
  end
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
  -- Per template id, how many of the call's messages use it; the ids, for the batch list.
  local uses, listed = {}, {}
  local created = string.format('%012x', NOW)
  for i = first, first + (n - 1) * F, F do
    local id, send_at = ARGV[i], tonumber(ARGV[i + 7])
    local m = mkey(app, id)
    local text, rendered = ARGV[i + 2], ARGV[i + 5]
    if shared and rendered == shared and ARGV[i + 10] ~= '1' then rendered = '' end
    -- Free text is its own rendering: stored once.
    if text == ARGV[i + 5] then text = '' end
    -- What the id says is not stored again (lib.lua's created_of, batch_of).
    local ct, b = ARGV[a + 4], batch
    if #id == 26 and string.sub(id, 1, 12) == created then ct = '' end
    if #id == 26 and #batch == 26 and string.sub(batch, 1, 14) == string.sub(id, 1, 14) then
      b = string.sub(batch, 15)
    end
    local kept = present({}, 'b', b, 'p', ARGV[i + 1], 'tx', text, 'tp', ARGV[i + 3],
      'pa', ARGV[i + 4], 'r', rendered, 'sg', ARGV[i + 6], 'ct', ct, 'sa', ARGV[i + 7],
      'snd', ARGV[i + 8], 'lb', ARGV[i + 9], 'sen', ARGV[i + 10], 'ex', ARGV[i + 11],
      'en', ARGV[i + 12], 'mk', ARGV[i + 16])
    local tp = ARGV[i + 3]
    if tp ~= '' then
      present(kept, 'tv', ARGV[i + 13], 'sn', ARGV[i + 14], 'vt', ARGV[i + 15])
      uses[tp] = (uses[tp] or 0) + 1
    end
    indexed[#indexed + 1] = id
    -- The batch list keeps what is not the batch id's: its random 12 digits
    -- when the id shares the batch id's ms and shard (store/messages.py).
    listed[#listed + 1] = b ~= batch and string.sub(id, 15) or id
    -- One HSET stores the fields with the first status (enter()); the call
    -- counts its messages as live at once, below.
    local known = {counted = true, set = kept}
    if send_at > NOW then
      redis.call('ZADD', KEYS[3], send_at, app .. ':' .. id)
      enter(app, id, batch, NEW, SCHEDULED, '', nil, nil, nil, known)
    else
      redis.call('XADD', KEYS[2], '*', 'm', app .. ':' .. id)
      enter(app, id, batch, NEW, QUEUED, '', nil, nil, nil, known)
    end
  end
  if n > 0 then redis.call('INCRBY', P .. 'live:' .. app, n) end
  for tp, count in pairs(uses) do redis.call('INCRBY', P .. 'tu:' .. app .. ':' .. tp, count) end
  if batch ~= '' and n > 0 then
    redis.call('RPUSH', blist, unpack(listed))
    redis.call('PEXPIRE', blist, horizon)
  end
  return 'new', ''
end

-- The app index of this shard (ShardKeys.index) is a directory of chunks: a
-- sorted set of chunk names, each the lowest id its chunk may hold, and per
-- chunk (<index>:<name>) a sorted set of up to CHUNK ids, all scored 0 so they
-- sort by id, which starts with the creation time. A chunk holds the ids from
-- its name up to the next chunk's name. So small, every chunk keeps Redis's
-- compact encoding (zset-max-ziplist-entries, 128 by default): about 30 bytes
-- an id instead of about 110 in one big sorted set (a skiplist node and a dict
-- entry each). store/lua/index_read.lua pages it newest first.
-- Each chunk written expires when the newest id written to it can no longer
-- be a message's (the horizon past that id's time), and the directory with
-- the newest id written to any: the index of an app that stops sending goes
-- by itself. Ids are made when they are written (the call's NOW), so each
-- write pushes the expiry to about the horizon from then, past every id
-- written before. Older chunks go before the directory, which may name them
-- a while: readers skip and drop such a name (index_read.lua), ids that come
-- for it start the chunk again.
local CHUNK = 120

-- Per chunk this run wrote to (its key), the highest id written to it.
local WRITTEN = {}
-- Whether this run started a chunk.
local STARTED = false

local function zadd_ids(key, ids, from, to)
  local args = {}
  for j = from, to do
    args[#args + 1] = '0'
    args[#args + 1] = ids[j]
  end
  if #args > 0 then
    redis.call('ZADD', key, unpack(args))
    if not WRITTEN[key] or WRITTEN[key] < ids[to] then WRITTEN[key] = ids[to] end
  end
end

-- How long (ms) after NOW the message of `id` can still exist.
local function life_of(id)
  return tonumber(string.sub(id, 1, 12), 16) + horizon - NOW
end

-- The app's single sorted set of ids written before the chunks
-- (ShardKeys.legacy_index) is never added to: its ids past the horizon go,
-- and the key expires with its newest (index_read.lua does the same). Done
-- when a chunk starts: the first time sets the expiry for good.
local function prune_legacy(key)
  local newest = redis.call('ZREVRANGE', key, 0, 0)[1]
  if not newest then return end
  local left = life_of(newest)
  if left <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('PEXPIRE', key, left)
  redis.call('ZREMRANGEBYLEX', key, '-', '(' .. string.format('%012x', math.max(NOW - horizon, 0)))
end

-- Write sorted `ids` (from `from` on) as new chunks of dir, after the id `after`
-- (the highest of the chunk before them). Each is named by its first id's
-- millisecond when that is above `after`, else by the id: ids of that
-- millisecond whose random part sorts lower, coming later, then still belong
-- to it rather than overfilling the chunk before.
local function new_chunks(dir, ids, from, after, size)
  for p = from, #ids, size do
    local ms = string.sub(ids[p], 1, 12)
    local name = ms > after and ms or ids[p]
    redis.call('ZADD', dir, 0, name)
    STARTED = true
    zadd_ids(dir .. ':' .. name, ids, p, math.min(p + size - 1, #ids))
    after = ids[math.min(p + size - 1, #ids)]
  end
end

-- Move sorted `ids` (from `from` on: above `after`, the highest id the chunk
-- before keeps, and below `name`) into the chunk `name` of dir, which holds
-- `card` ids and has room for them: the chunk is renamed down to the first of
-- them, by its millisecond when that is above `after` (as new_chunks names).
-- Replicas whose clocks differ by a few ms interleave ids at every chunk's
-- end; moving the chunk's lower bound down keeps the chunk before full
-- instead of splitting it into small chunks.
local function spill(dir, name, card, ids, from, after)
  local ms = string.sub(ids[from], 1, 12)
  local lower = ms > after and ms or ids[from]
  local chunk, moved = dir .. ':' .. name, dir .. ':' .. lower
  if card > 0 then redis.call('RENAME', chunk, moved) end
  WRITTEN[chunk] = nil
  redis.call('ZREM', dir, name)
  redis.call('ZADD', dir, 0, lower)
  zadd_ids(moved, ids, from, #ids)
end

-- Add `ids` (this group's, of one app) to the index `dir`: each to the chunk
-- that covers it (the one with the highest name not above it). A chunk that
-- would hold more than CHUNK ids passes its newest ids to the next chunk when
-- that has room, else is split, so none outgrows the compact encoding
-- whatever order ids come in (ids of concurrent calls interleave).
-- Chunks wholly older than the horizon (the next one starts before it) go.
local function index_add(dir, ids)
  local cut = '(' .. string.format('%012x', math.max(NOW - horizon, 0))
  local old = redis.call('ZRANGEBYLEX', dir, '-', cut, 'LIMIT', 0, 8)
  for j = 1, #old - 1 do
    redis.call('DEL', dir .. ':' .. old[j])
    redis.call('ZREM', dir, old[j])
  end
  table.sort(ids)
  local j = 1
  while j <= #ids do
    local name = redis.call('ZREVRANGEBYLEX', dir, '[' .. ids[j], '-', 'LIMIT', 0, 1)[1]
    if not name then
      -- Below every chunk (or the first one): chunks of their own, up to the lowest.
      local bound = redis.call('ZRANGEBYLEX', dir, '-', '+', 'LIMIT', 0, 1)[1]
      local group = {}
      while j <= #ids and (not bound or ids[j] < bound) do
        group[#group + 1] = ids[j]
        j = j + 1
      end
      new_chunks(dir, group, 1, '', CHUNK)
    else
      local bound = redis.call('ZRANGEBYLEX', dir, '(' .. name, '+', 'LIMIT', 0, 1)[1]
      local group = {}
      while j <= #ids and (not bound or ids[j] < bound) do
        group[#group + 1] = ids[j]
        j = j + 1
      end
      local chunk = dir .. ':' .. name
      local card = redis.call('ZCARD', chunk)
      if card + #group <= CHUNK then
        zadd_ids(chunk, group, 1, #group)
      else
        local highest = redis.call('ZREVRANGE', chunk, 0, 0)[1] or ''
        local next_card = bound and redis.call('ZCARD', dir .. ':' .. bound)
        -- Its ids from the millisecond of the first new one on, which go
        -- with the new ones to the next chunk (or a new one) if that leaves
        -- it three quarters full: the usual interleaving, a few ms of
        -- another replica's ids.
        local ms = string.sub(group[1], 1, 12)
        local tail = {}
        if group[1] < highest then tail = redis.call('ZRANGEBYLEX', chunk, '[' .. ms, '+') end
        if group[1] > highest then
          -- Newer than all it holds (the usual case): fill it, then the next
          -- chunk or new chunks.
          local room = math.max(CHUNK - card, 0)
          zadd_ids(chunk, group, 1, room)
          if room > 0 then highest = group[room] end
          if bound and next_card + #group - room <= CHUNK then
            spill(dir, bound, next_card, group, room + 1, highest)
          else
            new_chunks(dir, group, room + 1, highest, CHUNK)
          end
        elseif card - #tail >= CHUNK * 3 / 4
            and (not bound or next_card + #tail + #group <= CHUNK) then
          redis.call('ZREMRANGEBYLEX', chunk, '[' .. ms, '+')
          for _, id in ipairs(group) do tail[#tail + 1] = id end
          table.sort(tail)
          if bound then
            spill(dir, bound, next_card, tail, 1, '')
          else
            new_chunks(dir, tail, 1, '', CHUNK)
          end
        else
          -- Interleaved with what it holds: merge, and write it again as chunks.
          local stored = redis.call('ZRANGE', chunk, 0, -1)
          local merged, x, y = {}, 1, 1
          while x <= #stored or y <= #group do
            if y > #group or (x <= #stored and stored[x] < group[y]) then
              merged[#merged + 1] = stored[x]
              x = x + 1
            else
              merged[#merged + 1] = group[y]
              y = y + 1
            end
          end
          -- Equal parts three quarters full: room for more ids that interleave
          -- (a full part would be written again for each few that come).
          local size = math.ceil(#merged / math.ceil(#merged / (CHUNK * 3 / 4)))
          redis.call('DEL', chunk)
          zadd_ids(chunk, merged, 1, size)
          new_chunks(dir, merged, size + 1, merged[size], size)
        end
      end
    end
  end
  -- Each chunk written lives as long as the newest id written to it can be
  -- a message's, the directory as long as the newest of them. (Ids already
  -- past the horizon leave the expiry as it was: they are never read.)
  local longest = 0
  for key, top in pairs(WRITTEN) do
    local left = life_of(top)
    if left > 0 then redis.call('PEXPIRE', key, left) end
    longest = math.max(longest, left)
  end
  WRITTEN = {}
  if longest > 0 then redis.call('PEXPIRE', dir, longest) end
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
for _, dir in ipairs(INDEX_ORDER) do
  if #INDEXED[dir] > 0 then
    STARTED = false
    index_add(dir, INDEXED[dir])
    if STARTED then prune_legacy(LEGACY[dir]) end
  end
end
return out
