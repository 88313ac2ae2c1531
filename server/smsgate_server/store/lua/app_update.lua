-- Set fields of an app's record, only while the app exists: a revoked app
-- must not come back as a record without a secret.
-- KEYS[1] the app's hash. ARGV: field, value pairs.
-- Returns 1 when set, 0 when there is no such app.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
