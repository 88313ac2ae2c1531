-- Keeps queue entries a live consumer still works on from being re-claimed:
-- resets their idle time (XCLAIM JUSTID to itself: the delivery count stays),
-- only for those it still holds; one another consumer re-claimed stays theirs.
-- KEYS[1] a shard's queue stream.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids.
-- Returns how many were kept.
local queue, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local mine = {}
for i = 3, #ARGV do
  if #redis.call('XPENDING', queue, group, ARGV[i], ARGV[i], 1, consumer) > 0 then
    mine[#mine + 1] = ARGV[i]
  end
end
if #mine > 0 then
  mine[#mine + 1] = 'JUSTID'
  redis.call('XCLAIM', queue, group, consumer, 0, unpack(mine))
  return #mine - 1
end
return 0
