-- Per-app accept rate: a token bucket in the app's slot, so one script sees the
-- app's own rate (its record) and its bucket.
-- KEYS[1] the app hash, KEYS[2] the app's bucket hash.
-- ARGV[1] now (ms), ARGV[2] messages to admit (0: only pay), ARGV[3] default
-- rate (messages per second, when the app has none of its own), ARGV[4] bucket
-- size in seconds of the rate, ARGV[5] tokens to take now, ARGV[6] seconds of
-- the rate a caller admitted with tokens to take may lease beyond them.
-- A call is admitted while the bucket holds at least min(n, size) tokens, and
-- takes what it is told, going into debt if it must: a batch larger than the
-- bucket still goes through once the bucket is full (it pays as it stores),
-- and later calls wait for the debt.
-- A lease is taken only from tokens the bucket holds (never into debt): the
-- process spends it locally, sparing a round trip per call, and every leased
-- token is gone from the shared bucket, so replicas together keep the rate.
-- Returns {1, 0, tokens leased} when admitted, {0, ms to wait, 0} when not.
local now, n, take = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local rate = tonumber(redis.call('HGET', KEYS[1], 'accept_per_second') or ARGV[3])
local size = rate * tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if not tokens then
  tokens, at = size, now
end
if now > at then
  tokens = math.min(size, tokens + (now - at) * rate / 1000)
  at = now
end
local need = math.min(n, size)
if tokens < need then
  return {0, math.ceil((need - tokens) * 1000 / rate), 0}
end
tokens = tokens - take
local lease = 0
if take > 0 then
  lease = math.floor(math.min(rate * tonumber(ARGV[6]), tokens))
  if lease > 0 then
    tokens = tokens - lease
  else
    lease = 0
  end
end
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'at', at)
-- Idle apps leave nothing behind: once refilled, a missing bucket is a full one.
redis.call('PEXPIRE', KEYS[2], math.ceil((size - tokens) * 1000 / rate) + 1000)
return {1, 0, lease}
