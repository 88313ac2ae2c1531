-- Check a presented code against the live code of one (app, phone, scope):
-- compare, count the attempt and consume, in one step, so concurrent calls with
-- the right code verify exactly once.
-- KEYS[1] the code hash (c:<scope>), or with ARGV[1] = 'id' the id index
-- (i:<nonce>) that names the scope.
-- ARGV[1] 'scope' | 'id', ARGV[2] key prefix, ARGV[3] hash of the presented code,
-- ARGV[4] now ms, ARGV[5] nonce of the id ('' = any), ARGV[6] scope the caller
-- named ('' = any).
-- Returns {result, attempts left}: 'verified' | 'incorrect' | 'gone' | 'dead'.
local prefix, presented, now, nonce, want = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local code = KEYS[1]
if ARGV[1] == 'id' then
  local scope = redis.call('GET', KEYS[1])
  if not scope or (want ~= '' and want ~= scope) then return {'gone', 0} end
  code = prefix .. 'c:' .. scope
end
local f = redis.call('HMGET', code, 'n', 'h', 'left', 'exp')
local n, stored, left, exp = f[1], f[2], tonumber(f[3]), tonumber(f[4])
if not n or (nonce ~= '' and n ~= nonce) then return {'gone', 0} end
if exp <= now then
  redis.call('DEL', code, prefix .. 'i:' .. n)
  return {'gone', 0}
end
if left <= 0 then return {'dead', 0} end
-- A plain string comparison, and it need not be constant-time: both sides are
-- HMAC-SHA256 values computed in Python with the server secret. Timing can at
-- most tell an attacker how many leading hex digits of the HMAC of their guess
-- match the stored HMAC, and without the secret they cannot choose a guess
-- whose HMAC shares more digits, so it reveals nothing about the code.
if stored == presented then
  redis.call('DEL', code, prefix .. 'i:' .. n)
  return {'verified', 0}
end
left = left - 1
redis.call('HSET', code, 'left', left)
-- A dead code stays until it expires, so later attempts hear 'dead', not 'gone'.
if left == 0 then return {'dead', 0} end
return {'incorrect', left}
