-- The facility's channel labels that may still have entries (KEYS[4] only).
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
return redis.call('ZRANGE', KEYS[4], 0, -1)
