-- Join or refresh: ARGV[3] field, ARGV[4] user, ARGV[5] TTL in ms. A new entry counts its
-- user; the user's first connection is announced (every anonymous one is).
local ttl = tonumber(ARGV[5])
local expiry = now + ttl
local fresh = redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], expiry, ARGV[3])
redis.call('ZADD', KEYS[4], 'GT', expiry, ARGV[1])
if fresh == 1 then
  local n = redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  if ARGV[4] == '' or n == 1 then event('join', ARGV[4], n) end
end
-- Keys of a channel whose every worker died vanish on their own.
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
return fresh
