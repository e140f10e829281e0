#!lua name=agent_budget_bench_floor
-- The lean floor of a Redis budget operation, for benchmarks/bench_stores.py: the commands
-- any idempotent reserve/commit with expiring holds must run, and nothing else. No
-- windows (a day counter is a plain counter plus one bucket), no idle expiry, no integers
-- past 2^53, no retried reserves answered, no ledger, one scope. It is what the real
-- functions would cost if all their features were free.
--
-- KEYS[1] the key base; ARGV[1] now (seconds), ARGV[2] the hold id, ARGV[3] the lines as
-- JSON: [[scope, metric, amount(, limit)], ...] (the same JSON the store sends; a limit
-- of 1e14 or more comes as a string and is compared as a double here).

redis.register_function('floor_reserve', function(KEYS, ARGV)
  local b = KEYS[1]
  local id = ARGV[2]
  local now = tonumber(ARGV[1])
  local lines = cjson.decode(ARGV[3])
  redis.call('ZRANGEBYSCORE', b .. 'expiry', '-inf', now)
  if redis.call('HGET', b .. 'holds', id) or redis.call('GET', b .. 'd:' .. id) then
    return redis.error_reply('hold id in use')
  end
  local key = b .. 's:' .. lines[1][1]
  local fields = {}
  for _, e in ipairs(lines) do
    fields[#fields + 1] = 't:' .. e[2]
    fields[#fields + 1] = 'r:' .. e[2]
  end
  local v = redis.call('HMGET', key, unpack(fields))
  local out = { 1, -1 }
  for i, e in ipairs(lines) do
    local c, r = tonumber(v[2 * i - 1]) or 0, tonumber(v[2 * i]) or 0
    out[#out + 1] = c
    out[#out + 1] = r
    local cap = tonumber(e[4])
    if cap and c + r + e[3] > cap then
      out[1], out[2] = 0, i - 1
      return string.format(string.rep('%d ', #out), unpack(out))
    end
  end
  local sets = {}
  for i, e in ipairs(lines) do
    sets[#sets + 1] = fields[2 * i]
    sets[#sets + 1] = out[2 * i + 2] + e[3]
  end
  redis.call('HSET', key, unpack(sets))
  redis.call('HSET', b .. 'holds', id, ARGV[3])
  redis.call('ZADD', b .. 'expiry', now + 600, id)
  return string.format(string.rep('%d ', #out), unpack(out))
end)

redis.register_function('floor_commit', function(KEYS, ARGV)
  local b = KEYS[1]
  local id = ARGV[2]
  local now = tonumber(ARGV[1])
  local lines = cjson.decode(ARGV[3])
  redis.call('ZRANGEBYSCORE', b .. 'expiry', '-inf', now)
  local key = b .. 's:' .. lines[1][1]
  local packed = redis.call('HGET', b .. 'holds', id)
  if packed then
    for _, e in ipairs(cjson.decode(packed)) do
      redis.call('HINCRBY', key, 'r:' .. e[2], -e[3])
    end
    redis.call('HDEL', b .. 'holds', id)
    redis.call('ZREM', b .. 'expiry', id)
  end
  if redis.call('GET', b .. 'd:' .. id) then return '0' end
  local out = { 1 }
  for _, e in ipairs(lines) do
    out[#out + 1] = redis.call('HINCRBY', key, 't:' .. e[2], e[3])
    if string.sub(e[2], 1, 4) == 'day:' then
      redis.call('HINCRBY', b .. 'w:' .. e[2], math.floor(now / 900) * 900, e[3])
    end
  end
  redis.call('SET', b .. 'd:' .. id, 'c:' .. ARGV[1], 'PX', 3600000)
  return string.format(string.rep('%d ', #out), unpack(out))
end)
