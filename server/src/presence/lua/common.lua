-- Shared head of every presence script (see presence/scripts.rs for the key layout).
-- KEYS[1] entries  HASH  field (instance/connection) -> user name ('' = anonymous)
-- KEYS[2] expiries ZSET  field -> expiry, ms since the epoch by Redis's own clock
-- KEYS[3] users    HASH  user name -> live connections ('' = anonymous)
-- KEYS[4] index    ZSET  channel label -> latest expiry (the facility's channels)
-- ARGV[1] channel label, ARGV[2] events channel; further arguments per script.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function event(kind, user, count)
  local e = {type = kind, ch = ARGV[1]}
  if user == '' then
    e.user = cjson.null
    e.anonymous = count
  else
    e.user = user
  end
  redis.call('PUBLISH', ARGV[2], cjson.encode(e))
end

-- Remove one entry; a user's last connection leaving is announced (every anonymous one is,
-- with the new anonymous count).
local function gone(field)
  local user = redis.call('HGET', KEYS[1], field)
  redis.call('ZREM', KEYS[2], field)
  if not user then return 0 end
  redis.call('HDEL', KEYS[1], field)
  local n = redis.call('HINCRBY', KEYS[3], user, -1)
  if n <= 0 then redis.call('HDEL', KEYS[3], user) end
  if user == '' or n <= 0 then event('leave', user, math.max(n, 0)) end
  return 1
end
