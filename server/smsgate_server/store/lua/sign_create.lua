-- Register a sign name of an app, and make it the default when asked.
-- KEYS[1] the app's sign names (hash name -> registration ms), KEYS[2] its
-- default sign name (string).
-- ARGV[1] name, ARGV[2] now ms, ARGV[3] '1' to make it the default, ARGV[4]
-- the most sign names an app may have.
-- Returns 'ok' | 'exists' | 'full'.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1]) end
return 'ok'
