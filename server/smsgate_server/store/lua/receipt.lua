-- Apply delivery receipts to SENT messages; late or repeated receipts of a
-- message that already ended are ignored.
-- KEYS[2] receipt set. ARGV[5..] per receipt 5 fields: app, id, delivered
-- ('1' | '0'), error code, error reason. Returns per receipt: 1 applied,
-- 0 ignored (the message ended already, or is gone), -1 too early (the
-- message is still SENDING: its send outcome is not stored yet).
local out = {}
for i = 5, #ARGV, 5 do
  local app, id = ARGV[i], ARGV[i + 1]
  local st, batch = state(app, id)
  if st == SENT then
    redis.call('ZREM', KEYS[2], app .. ':' .. id)
    if ARGV[i + 2] == '1' then
      enter(app, id, batch, st, DELIVERED, '')
    else
      redis.call('HSET', mkey(app, id), 'ec', ARGV[i + 3], 'er', ARGV[i + 4], 'ery', 0)
      enter(app, id, batch, st, UNDELIVERED, ARGV[i + 3], ARGV[i + 3], ARGV[i + 4])
    end
    out[#out + 1] = 1
  elseif st == SENDING then
    out[#out + 1] = -1
  else
    out[#out + 1] = 0
  end
end
return out
