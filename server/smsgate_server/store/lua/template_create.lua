-- Create a template at version 1 unless its id is taken. With a request id, a
-- retry of the same request answers the template it first created.
-- KEYS[1] head, KEYS[2] version 1, KEYS[3] id index, KEYS[4] (with a request
-- id) the idempotency key.
-- ARGV[1] template id, ARGV[2] etag, ARGV[3] request fingerprint ('' = no
-- request id), ARGV[4] idempotency ttl in s, ARGV[5] creation ms, ARGV[6..]
-- field, value pairs of version 1.
-- Returns {'ok', id} | {'replay', id} | {'reused'} | {'exists'}.
local id, etag, fingerprint = ARGV[1], ARGV[2], ARGV[3]
if fingerprint ~= '' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local sep = string.find(seen, '|', 1, true)
    if string.sub(seen, 1, sep - 1) ~= fingerprint then return {'reused'} end
    return {'replay', string.sub(seen, sep + 1)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('HSET', KEYS[1], 'v', 1, 'etag', etag, 'ctime', ARGV[5])
redis.call('ZADD', KEYS[3], 0, id)
if fingerprint ~= '' then
  redis.call('SET', KEYS[4], fingerprint .. '|' .. id, 'EX', tonumber(ARGV[4]))
end
return {'ok', id}
