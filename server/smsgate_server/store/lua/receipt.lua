-- Apply delivery receipts to SENT messages; late or repeated receipts of a
-- message that already ended are ignored.
-- KEYS[2] receipt set. ARGV[5..] per receipt 6 fields: app, id, delivered
-- ('1' | '0'), vendor code, reason, the vendor's time of the outcome (ms, 0
-- when it names none). Returns per receipt: 1 applied, 0 ignored (the message
-- ended already, or is gone), -1 too early (the message is still SENDING: its
-- send outcome is not stored yet).
-- How long (s) a provider id still leads to its ended message.
local REPEAT_WINDOW = 600
local out = {}
for i = 5, #ARGV, 6 do
  local app, id, code = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  local m = mkey(app, id)
  -- One read for this script and enter() (history, creation time, sensitivity).
  local f = redis.call('HMGET', m, 'ut', 'pv', 'pid', 'st', 'b', 'hs', 'ct', 'sen')
  local st, batch = tonumber(f[4]), batch_of(id, f[5])
  local known = {hs = f[6], ct = f[7], sen = f[8]}
  if st == SENT then
    redis.call('ZREM', KEYS[2], app .. ':' .. id)
    -- The vendor's clock, kept between the SENT entry and now, so the
    -- history stays in order whatever the skew; without one, now, but never
    -- before the SENT entry (its settle may have read the clock after this
    -- call did, on another connection, and still run first).
    local sent_at = tonumber(f[1] or '0')
    local at = tonumber(ARGV[i + 5])
    if at == 0 then at = NOW end
    at = math.max(sent_at, math.min(at, NOW))
    -- The provider's id led receipts here; this one ends the message, so the
    -- map is kept only while the vendor may repeat it (a repeat then finds
    -- the ended message and is ignored), not for the receipt timeout.
    if f[3] and f[3] ~= '' then
      redis.call('EXPIRE', P .. 'pm:' .. (f[2] or '') .. ':' .. f[3], REPEAT_WINDOW)
    end
    if ARGV[i + 2] == '1' then
      enter(app, id, batch, st, DELIVERED, code, nil, nil, at, known)
    else
      known.set = {'ec', code, 'er', ARGV[i + 4], 'ery', 0}
      enter(app, id, batch, st, UNDELIVERED, code, code, ARGV[i + 4], at, known)
    end
    out[#out + 1] = 1
  elseif st == SENDING then
    out[#out + 1] = -1
  else
    out[#out + 1] = 0
  end
end
return out
