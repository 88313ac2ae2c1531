-- Add the next version of a template, if the template still is at the version
-- the change was made from and, when the caller gave one, has its etag.
-- KEYS[1] head, KEYS[2] the new version (base + 1).
-- ARGV[1] base version, ARGV[2] expected etag ('' = any), ARGV[3] new etag,
-- ARGV[4..] field, value pairs of the new version.
-- Returns 'ok' | 'gone' | 'etag' (not the caller's etag) | 'moved' (another
-- update came first; read again).
local head = redis.call('HMGET', KEYS[1], 'v', 'etag')
if not head[1] then return 'gone' end
if ARGV[2] ~= '' and ARGV[2] ~= head[2] then return 'etag' end
if tonumber(head[1]) ~= tonumber(ARGV[1]) then return 'moved' end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'etag', ARGV[3])
return 'ok'
