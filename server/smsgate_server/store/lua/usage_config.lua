-- Replace one shard's usage config (store/usage.py: prices, currencies and the
-- retention lib.lua counts usage with) in one step, so a script never prices
-- a message from half a table. KEYS[1] the config hash; ARGV field, value
-- pairs. Returns the number of fields written.
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
