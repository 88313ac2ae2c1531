-- Unregister a sign name, clearing the app's default when it was the default.
-- KEYS[1] the app's sign names, KEYS[2] its default sign name.
-- ARGV[1] name.
-- Returns 'ok' | 'gone' (not registered).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 'gone' end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 'ok'
