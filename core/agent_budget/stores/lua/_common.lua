-- Shared code of every agent-budget operation. RedisStore loads it once as a Redis Function
-- library, each operation a function (Redis 7+), or else prepends it to each operation's
-- script for EVALSHA. Either way an operation starts with begin(KEYS, ARGV).
--
-- KEYS[1] is the group's key base, "<prefix>:{<group>}:", so every key an operation builds
-- shares one hash tag (one Redis Cluster slot). ARGV[1] is the caller's now (seconds) and
-- the store's settings, "<now> <server clock 1|0> <window> <bucket> <idle ttl or empty>
-- <tombstone ttl>" (one argument: each costs the client time to send). Operation arguments
-- start at ARGV[2]. Lines travel as one JSON argument (see decode_lines), so any scope or
-- metric name is safe, the client sends few arguments and Lua parses nothing itself.
--
-- Keys under the base:
--   s:<scope>                    HASH  u (last use), t:<metric> committed, r:<metric> held,
--                                      lo:/hi:<metric> oldest/newest bucket of a window
--   w:<#scope>:<scope><metric>   HASH  bucket start -> amount, for "day:" metrics
--   holds                        HASH  hold id -> the reserve's lines, as JSON
--   expiry                       ZSET  hold id scored by its expiry time
--   d:<hold id>                  STRING "c:<when>" or "r:<when>" (committed/released), kept
--                                      for the tombstone ttl
-- Amounts are integers; Lua holds them as doubles, exact below 2^53 (about $9e6 in nano-USD
-- per counter). Counter fields are written back once per operation by flush().

-- Per-operation state, set by begin(). NOW is a number; NOWS the same instant as text.
local BASE, WINDOW, BUCKET, IDLE, TOMB, NOW, NOWS, HOLDS, EXPIRY, SCOPES
local MARGIN = 60

-- Field names per metric (see meta). In a function library this outlives one call (a cache
-- of pure string work), bounded in size.
local META, META_SIZE = {}, 0

local function begin(keys, argv)
  BASE = keys[1]
  local now, clock, window, bucket, idle, tomb =
    string.match(argv[1], '^(%S+) (%S+) (%S+) (%S+) (%S*) (%S+)$')
  if clock == '1' then
    local t = redis.call('TIME')
    NOWS = t[1] .. '.' .. string.rep('0', 6 - #t[2]) .. t[2]
  else
    NOWS = now
  end
  NOW = tonumber(NOWS)
  WINDOW = tonumber(window)
  BUCKET = tonumber(bucket)
  IDLE = tonumber(idle)
  TOMB = tonumber(tomb)
  HOLDS = BASE .. 'holds'
  EXPIRY = BASE .. 'expiry'
  SCOPES = {}
  if META_SIZE > 4096 then
    META, META_SIZE = {}, 0
  end
end

local function fmt(n)
  if n == 0 then return '0' end
  return string.format('%.0f', n)
end

-- Numbers (or numeric strings) as one space-separated reply, formatted by one C call. Lua's
-- own number-to-text (tostring, table.concat) switches to exponent form above 1e14.
-- redis.call formats number arguments itself (%.17g: exact integers below 1e17), so
-- amounts, scores and field values go to Redis as numbers, never through Lua strings.
local function reply(values)
  return string.format(string.rep('%d ', #values), unpack(values))
end

-- Field names of a metric: t: committed, r: held, lo:/hi: window.
local function meta(metric)
  local m = META[metric]
  if m == nil then
    META_SIZE = META_SIZE + 1
    m = {
      t = 't:' .. metric,
      r = 'r:' .. metric,
      lo = 'lo:' .. metric,
      hi = 'hi:' .. metric,
      day = string.sub(metric, 1, 4) == 'day:',
    }
    META[metric] = m
  end
  return m
end

local function window_key(scope, metric)
  return BASE .. 'w:' .. #scope .. ':' .. scope .. metric
end

local function load(scope)
  local s = SCOPES[scope]
  if s == nil then
    local key = BASE .. 's:' .. scope
    local raw = redis.call('HGETALL', key)
    local f = {}
    for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
    s = { name = scope, key = key, f = f, w = {}, checked = false, dirty = false }
    SCOPES[scope] = s
  end
  return s
end

local function num(s, field)
  local v = s.f[field]
  if v == nil then return 0 end
  return tonumber(v)
end

-- A field as reply text: the stored string itself when unchanged (no number formatting).
local function str(s, field)
  local v = s.f[field]
  if v == nil then return '0' end
  if type(v) == 'number' then return fmt(v) end
  return v
end

-- Field writes are buffered per scope and sent in one HSET (and one HDEL) by flush().
local function hset(s, field, value)
  s.f[field] = value
  s.w[field] = true
  s.dirty = true
end

local function hdel(s, field)
  if s.f[field] ~= nil then
    s.f[field] = nil
    s.w[field] = true
    s.dirty = true
  end
end

local function incr(s, field, delta)
  local v = num(s, field) + delta
  hset(s, field, v)
  return v
end

local function flush()
  for _, s in pairs(SCOPES) do
    local sets, dels = {}, {}
    for field, _ in pairs(s.w) do
      local v = s.f[field]
      if v == nil then
        dels[#dels + 1] = field
      else
        sets[#sets + 1] = field
        sets[#sets + 1] = v
      end
    end
    if #dels > 0 then redis.call('HDEL', s.key, unpack(dels)) end
    if #sets > 0 then redis.call('HSET', s.key, unpack(sets)) end
    s.w = {}
  end
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
  s.w = {}
end

-- idle_check for every scope the lines name.
local function idle_check_lines(lines)
  for _, e in ipairs(lines) do idle_check(load(e[1])) end
end

-- With an idle ttl, mark every scope the lines name as used now.
local function touch(lines)
  if IDLE == nil then return end
  for _, e in ipairs(lines) do
    local s = load(e[1])
    if s.f['u'] ~= NOWS then hset(s, 'u', NOWS) end
  end
end

-- Committed value of a counter, after dropping window buckets that left the window.
local function committed(s, metric)
  local m = meta(metric)
  if not m.day then return num(s, m.t) end
  local lo = s.f[m.lo]
  if lo == nil then return num(s, m.t) end
  lo = tonumber(lo)
  local horizon = NOW - WINDOW - BUCKET
  if lo > horizon then return num(s, m.t) end
  local wkey = window_key(s.name, metric)
  if tonumber(s.f[m.hi]) <= horizon then
    redis.call('DEL', wkey)
    hdel(s, m.lo)
    hdel(s, m.hi)
    hset(s, m.t, 0)
    return 0
  end
  local removed = 0
  local b = lo
  while b <= horizon do
    local field = b
    local v = redis.call('HGET', wkey, field)
    if v then
      removed = removed + tonumber(v)
      redis.call('HDEL', wkey, field)
    end
    b = b + BUCKET
  end
  hset(s, m.lo, b)
  return incr(s, m.t, -removed)
end

-- Add a committed amount; a "day:" amount lands in the bucket of NOW (or the newest one,
-- if the clock stepped back).
local function add(s, metric, amount)
  local m = meta(metric)
  if m.day then
    committed(s, metric)
    local start = math.floor(NOW / BUCKET) * BUCKET
    local hi = s.f[m.hi]
    if hi ~= nil then
      hi = tonumber(hi)
      if hi > start then start = hi end
    end
    redis.call('HINCRBY', window_key(s.name, metric), start, amount)
    if s.f[m.lo] == nil then hset(s, m.lo, start) end
    if hi == nil or hi < start then hset(s, m.hi, start) end
  end
  incr(s, m.t, amount)
end

-- Lines travel as JSON, [[scope, metric, amount(, limit)], ...], decoded in C by cjson
-- (integers stay exact below 2^53). A reserve's JSON is stored as its hold, unchanged.
local function decode_lines(json)
  return cjson.decode(json)
end

-- Holds written by agent-budget 0.2 are text, "<#scope>:<scope><#metric>:<metric><amount>;"
-- per line; they are still read, so an upgrade does not strand live holds.
local function parse_legacy(blob)
  local out = {}
  local pos = 1
  local len = #blob
  while pos <= len do
    local colon = string.find(blob, ':', pos, true)
    local stop = colon + tonumber(string.sub(blob, pos, colon - 1))
    local scope = string.sub(blob, colon + 1, stop)
    colon = string.find(blob, ':', stop + 1, true)
    local mstop = colon + tonumber(string.sub(blob, stop + 1, colon - 1))
    local metric = string.sub(blob, colon + 1, mstop)
    local semi = string.find(blob, ';', mstop + 1, true)
    local amount = string.match(string.sub(blob, mstop + 1, semi - 1), '^([^,]+)')
    out[#out + 1] = { scope, metric, tonumber(amount) }
    pos = semi + 1
  end
  return out
end

-- The {scope, metric, amount, ...} lines of a stored hold.
local function hold_lines(packed)
  local first = string.byte(packed, 1)
  if first >= 48 and first <= 57 then return parse_legacy(packed) end
  return cjson.decode(packed)
end

local function drop_hold(id, held)
  for _, e in ipairs(held) do
    local s = load(e[1])
    local field = meta(e[2]).r
    if s.f[field] ~= nil then incr(s, field, -e[3]) end
  end
  redis.call('HDEL', HOLDS, id)
  redis.call('ZREM', EXPIRY, id)
end

-- Free every hold whose expiry has passed (lazy reaping: no background process).
local function reap()
  local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', NOWS)
  for _, id in ipairs(ids) do
    local packed = redis.call('HGET', HOLDS, id)
    if packed then
      drop_hold(id, hold_lines(packed))
    else
      redis.call('ZREM', EXPIRY, id)
    end
  end
end

-- "c" or "r" for a hold id finished (committed or released) within the tombstone ttl.
local function tombstone(id)
  local v = redis.call('GET', BASE .. 'd:' .. id)
  if not v then return nil end
  if tonumber(string.sub(v, 3)) + TOMB <= NOW then return nil end
  return string.sub(v, 1, 1)
end

local function finish(id, state)
  local ms = math.ceil(TOMB * 1000)
  if ms < 1 then ms = 1 end
  redis.call('SET', BASE .. 'd:' .. id, state .. ':' .. NOWS, 'PX', ms)
end

local function extend(key, ms, keep_longer)
  if keep_longer then
    local pttl = redis.call('PTTL', key)
    if pttl == -2 or pttl >= ms then return end
  end
  redis.call('PEXPIRE', key, ms)
end

-- With an idle ttl, give every key written a real TTL too, so abandoned scopes leave Redis
-- (call after flush).
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
