-- Delete a template with every version, if it has the caller's etag.
-- KEYS[1] head, KEYS[2] id index.
-- ARGV[1] template id, ARGV[2] expected etag ('' = any), ARGV[3] the prefix of
-- its version keys (same slot: the app's hash tag).
-- Returns 'ok' | 'gone' | 'etag'.
local head = redis.call('HMGET', KEYS[1], 'v', 'etag')
if not head[1] then return 'gone' end
if ARGV[2] ~= '' and ARGV[2] ~= head[2] then return 'etag' end
for n = 1, tonumber(head[1]) do
  redis.call('UNLINK', ARGV[3] .. n)
end
redis.call('UNLINK', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'ok'
