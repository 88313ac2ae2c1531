-- Make a registered sign name the app's default, or clear the default.
-- KEYS[1] the app's sign names, KEYS[2] its default sign name.
-- ARGV[1] name ('' clears the default).
-- Returns 'ok' | 'gone' (not registered).
if ARGV[1] == '' then
  redis.call('DEL', KEYS[2])
  return 'ok'
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'gone' end
redis.call('SET', KEYS[2], ARGV[1])
return 'ok'
