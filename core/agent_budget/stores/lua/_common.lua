-- Shared prelude of every agent-budget script; RedisStore prepends it to each operation.
--
-- KEYS[1] is the group's key base, "<prefix>:{<group>}:", so every key a script builds
-- shares one hash tag (one Redis Cluster slot). ARGV[1..6] are: caller's now (seconds),
-- "1" to use the server clock instead, window seconds, bucket seconds, idle ttl seconds
-- ("" for none), tombstone ttl seconds. Operation arguments start at ARGV[7].
--
-- Keys under the base:
--   s:<scope>                    HASH  u (last use), t:<metric> committed, r:<metric> held,
--                                      lo:/hi:<metric> oldest/newest bucket of a window
--   w:<#scope>:<scope><metric>   HASH  bucket start -> amount, for "day:" metrics
--   holds                        HASH  hold id -> msgpack {scope, metric, amount, ...}
--   expiry                       ZSET  hold id scored by its expiry time
--   d:<hold id>                  STRING "c:<expires>" or "r:<expires>" (committed/released)
-- Amounts are integers kept exact by HINCRBY; Lua compares them as doubles (exact < 2^53).

local BASE = KEYS[1]
local NOW
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  NOW = tonumber(ARGV[1])
end
local WINDOW = tonumber(ARGV[3])
local BUCKET = tonumber(ARGV[4])
local IDLE = tonumber(ARGV[5])
local TOMB = tonumber(ARGV[6])
local HOLDS = BASE .. 'holds'
local EXPIRY = BASE .. 'expiry'
local MARGIN = 60

local function fmt(n)
  if n == 0 then return '0' end
  return string.format('%.0f', n)
end

local function ftime(t)
  return string.format('%.17g', t)
end

local function is_day(metric)
  return string.sub(metric, 1, 4) == 'day:'
end

local function window_key(scope, metric)
  return BASE .. 'w:' .. #scope .. ':' .. scope .. metric
end

local SCOPES = {}

local function load(scope)
  local s = SCOPES[scope]
  if s == nil then
    local key = BASE .. 's:' .. scope
    local raw = redis.call('HGETALL', key)
    local f = {}
    for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
    s = { name = scope, key = key, f = f, checked = false, dirty = false }
    SCOPES[scope] = s
  end
  return s
end

local function num(s, field)
  local v = s.f[field]
  if v == nil then return 0 end
  return tonumber(v)
end

local function hset(s, field, value)
  redis.call('HSET', s.key, field, value)
  s.f[field] = value
  s.dirty = true
end

local function hdel(s, field)
  if s.f[field] ~= nil then
    redis.call('HDEL', s.key, field)
    s.f[field] = nil
  end
end

local function incr(s, field, delta)
  if delta == 0 then
    if s.f[field] == nil then hset(s, field, '0') end
    return num(s, field)
  end
  local v = redis.call('HINCRBY', s.key, field, fmt(delta))
  s.f[field] = v
  s.dirty = true
  return v
end

local function has_reserved(s)
  for k, v in pairs(s.f) do
    if string.sub(k, 1, 2) == 'r:' and tonumber(v) ~= 0 then return true end
  end
  return false
end

-- Drop a scope unused for IDLE seconds (never one that holds budget), as MemoryStore does.
local function idle_check(s)
  if s.checked then return end
  s.checked = true
  if IDLE == nil or s.f['u'] == nil then return end
  if tonumber(s.f['u']) > NOW - IDLE or has_reserved(s) then return end
  for k, _ in pairs(s.f) do
    if string.sub(k, 1, 3) == 'lo:' then
      redis.call('DEL', window_key(s.name, string.sub(k, 4)))
    end
  end
  redis.call('DEL', s.key)
  s.f = {}
end

local function touch(s)
  hset(s, 'u', ftime(NOW))
end

-- Committed value of a counter, after dropping window buckets that left the window.
local function committed(s, metric)
  local tf = 't:' .. metric
  if not is_day(metric) then return num(s, tf) end
  local lo = s.f['lo:' .. metric]
  if lo == nil then return num(s, tf) end
  lo = tonumber(lo)
  local horizon = NOW - WINDOW - BUCKET
  if lo > horizon then return num(s, tf) end
  local wkey = window_key(s.name, metric)
  if tonumber(s.f['hi:' .. metric]) <= horizon then
    redis.call('DEL', wkey)
    hdel(s, 'lo:' .. metric)
    hdel(s, 'hi:' .. metric)
    hset(s, tf, '0')
    return 0
  end
  local removed = 0
  local b = lo
  while b <= horizon do
    local field = fmt(b)
    local v = redis.call('HGET', wkey, field)
    if v then
      removed = removed + tonumber(v)
      redis.call('HDEL', wkey, field)
    end
    b = b + BUCKET
  end
  hset(s, 'lo:' .. metric, fmt(b))
  return incr(s, tf, -removed)
end

-- Add a committed amount; a "day:" amount lands in the bucket of NOW (or the newest one,
-- if the clock stepped back).
local function add(s, metric, amount)
  if is_day(metric) then
    committed(s, metric)
    local start = math.floor(NOW / BUCKET) * BUCKET
    local hi = s.f['hi:' .. metric]
    if hi ~= nil and tonumber(hi) > start then start = tonumber(hi) end
    redis.call('HINCRBY', window_key(s.name, metric), fmt(start), fmt(amount))
    if s.f['lo:' .. metric] == nil then hset(s, 'lo:' .. metric, fmt(start)) end
    if hi == nil or tonumber(hi) < start then hset(s, 'hi:' .. metric, fmt(start)) end
  end
  incr(s, 't:' .. metric, amount)
end

local function drop_hold(id, packed)
  local e = cmsgpack.unpack(packed)
  for i = 1, #e, 3 do
    local s = load(e[i])
    local field = 'r:' .. e[i + 1]
    if s.f[field] ~= nil then incr(s, field, -tonumber(e[i + 2])) end
  end
  redis.call('HDEL', HOLDS, id)
  redis.call('ZREM', EXPIRY, id)
end

-- Free every hold whose expiry has passed (lazy reaping: no background process).
local function reap()
  local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', ftime(NOW))
  for _, id in ipairs(ids) do
    local packed = redis.call('HGET', HOLDS, id)
    if packed then
      drop_hold(id, packed)
    else
      redis.call('ZREM', EXPIRY, id)
    end
  end
end

local function hold_scopes(packed)
  local e = cmsgpack.unpack(packed)
  local out = {}
  for i = 1, #e, 3 do out[#out + 1] = e[i] end
  return out
end

-- "c" or "r" for a hold id finished (committed or released) within the tombstone ttl.
local function tombstone(id)
  local v = redis.call('GET', BASE .. 'd:' .. id)
  if not v then return nil end
  if tonumber(string.sub(v, 3)) <= NOW then return nil end
  return string.sub(v, 1, 1)
end

local function finish(id, state)
  local ms = math.ceil(TOMB * 1000)
  if ms < 1 then ms = 1 end
  redis.call('SET', BASE .. 'd:' .. id, state .. ':' .. ftime(NOW + TOMB), 'PX', fmt(ms))
end

local function extend(key, ms, keep_longer)
  if keep_longer then
    local pttl = redis.call('PTTL', key)
    if pttl == -2 or pttl >= ms then return end
  end
  redis.call('PEXPIRE', key, fmt(ms))
end

-- With an idle ttl, give every key written a real TTL too, so abandoned scopes leave Redis.
-- A key that holds budget never gets a TTL shorter than the one it has; the holds keys
-- always outlive the counters they refer to.
local function expire_written(hold_ttl)
  if IDLE == nil then return end
  local base_ms = math.ceil((IDLE + MARGIN) * 1000)
  local any = false
  for _, s in pairs(SCOPES) do
    if s.dirty then
      any = true
      local ms = base_ms
      local keep = has_reserved(s)
      if hold_ttl ~= nil and keep then
        local h = math.ceil((hold_ttl + MARGIN) * 1000)
        if h > ms then ms = h end
      end
      extend(s.key, ms, keep)
      for k, _ in pairs(s.f) do
        if string.sub(k, 1, 3) == 'lo:' then
          extend(window_key(s.name, string.sub(k, 4)), ms, keep)
        end
      end
    end
  end
  if any or hold_ttl ~= nil then
    local ms = base_ms
    if hold_ttl ~= nil then
      local h = math.ceil((hold_ttl + MARGIN) * 1000)
      if h > ms then ms = h end
    end
    extend(HOLDS, ms, true)
    extend(EXPIRY, ms, true)
  end
end
