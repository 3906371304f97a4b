-- Drop expired entries (announcing their leaves), then return the users hash as a flat list
-- (user, count, user, count, ...). At most 1000 expired entries per call keep it short.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, field in ipairs(dead) do gone(field) end
return redis.call('HGETALL', KEYS[3])
