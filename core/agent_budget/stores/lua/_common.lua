-- Shared code of every agent-budget operation. RedisStore loads it once as a Redis Function
-- library, each operation a function (Redis 7+), or else prepends it to each operation's
-- script for EVALSHA. Either way an operation starts with begin(KEYS, ARGV).
--
-- KEYS[1] is the group's key base, "<prefix>:{<group>}:", so every key an operation builds
-- shares one hash tag (one Redis Cluster slot). ARGV[1] is the caller's now (seconds) and
-- the store's settings, "<now> <server clock 1|0> <window> <bucket> <idle ttl or empty>
-- <tombstone ttl> <session ttl or empty>" (one argument: each costs the client time to
-- send). Operation arguments start at ARGV[2]. Lines travel as one JSON argument (see
-- decode_lines), so any scope or metric name is safe, the client sends few arguments and
-- Lua parses nothing itself.
--
-- Keys under the base:
--   s:<scope>                    HASH  u (last use), t:<metric> committed, r:<metric> held,
--                                      lo:/hi:<metric> oldest/newest bucket of a window,
--                                      p:<metric> the calendar period a counter counts
--   w:<#scope>:<scope><metric>   HASH  bucket start -> amount, for windowed metrics
--   holds                        HASH  hold id -> the reserve's lines, as JSON
--   expiry                       ZSET  hold id scored by its expiry time
--   d:<hold id>                  STRING "c:<when>" or "r:<when>" (committed/released), kept
--                                      for the tombstone ttl
-- Amounts are integers of any size, kept as decimal text (see "exact integers" below):
-- never a Lua number above 2^53, never exponent form. Counter fields are written back once
-- per operation by flush().

-- Per-operation state, set by begin(). NOW is a number; NOWS the same instant as text.
local BASE, WINDOW, BUCKET, IDLE, TOMB, SESSION, NOW, NOWS, HOLDS, EXPIRY, SCOPES
-- Whether this call met an integer too big for a double (the reply is then formatted piece
-- by piece) or a scope with an idle or session ttl (else touch and expiry have no work).
local BIG, ANY_TTL
local MARGIN = 60
-- A period counter keeps its scope from idle expiry this long after its period start
-- (stores/base.py PERIOD_HORIZON); a held scope is looked at again this soon.
local PERIOD_HORIZON = 32 * 86400
local HELD_RECHECK = 60
local ROLL_BUCKETS = 96
local SESSION_MARK = '\031'

-- Built-ins used on every call, bound once by begin() (a library's top level cannot reach
-- them): an upvalue costs a third of a global lookup.
local TYPE, TONUMBER

-- Field names per metric (see meta). In a function library this outlives one call (a cache
-- of pure string work), bounded in size.
local META, META_SIZE = {}, 0

local function begin(keys, argv)
  if TYPE == nil then TYPE, TONUMBER = type, tonumber end
  BASE = keys[1]
  local now, clock, window, bucket, idle, tomb, session =
    string.match(argv[1], '^(%S+) (%S+) (%S+) (%S+) (%S*) (%S+) ?(%S*)$')
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
  SESSION = tonumber(session)
  HOLDS = BASE .. 'holds'
  EXPIRY = BASE .. 'expiry'
  SCOPES = {}
  BIG, ANY_TTL = false, false
  if META_SIZE > 4096 then
    META, META_SIZE = {}, 0
  end
end

-- -- exact integers ------------------------------------------------------------------------
-- An integer is a Lua number while its magnitude is below 1e14, else canonical decimal text
-- ('-1234567890123456789') added and compared digit by digit in 7-digit limbs. Below 1e14 a
-- double is exact, the sum of two stays below 2^53, and Lua's own number-to-text (%.14g,
-- as in tostring and %s) prints every digit without an exponent; numbers go to Redis as
-- numbers (formatted exactly, %.17g). So nothing is ever rounded or written in exponent
-- form.

local SMALL = 1e14

local function fmt(n)
  if n == 0 then return '0' end
  return string.format('%.0f', n)
end

-- Canonical text of an integer given as text: kept as is when canonical; leading zeros
-- dropped; a float text an older version wrote ("1.8e+17") read as the double it stands
-- for.
local function canon(v)
  if string.find(v, '^%-?[1-9]%d*$') or v == '0' then return v end
  if string.find(v, '^%-?%d+$') then
    local negative = string.sub(v, 1, 1) == '-'
    local digits = string.match(v, '^%-?0*(%d-)$')
    if digits == '' then return '0' end
    return negative and '-' .. digits or digits
  end
  local n = TONUMBER(v)
  if n == nil then error('agent-budget: not an integer: ' .. tostring(v)) end
  return fmt(n)
end

-- Text of at most 14 characters as a number, longer text kept.
local function small(t)
  if #t < 15 then return TONUMBER(t) end
  BIG = true
  return t
end

-- A stored or decoded value (number or text) in the form the arithmetic takes.
local function val(v)
  local n = TONUMBER(v)  -- a number as it is, numeric text as the double it reads as
  if n ~= nil and n > -SMALL and n < SMALL then return n end
  BIG = true
  if TYPE(v) == 'number' then return fmt(v) end
  return small(canon(v))
end

-- An integer as reply text.
local function text(v)
  if TYPE(v) == 'number' then return fmt(v) end
  return v
end

local function is_zero(v)
  return v == 0 or v == '0'
end

local function mag_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function mag_add(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local x = carry
    if i > 0 then x = x + TONUMBER(string.sub(a, math.max(1, i - 6), i)) end
    if j > 0 then x = x + TONUMBER(string.sub(b, math.max(1, j - 6), j)) end
    if x >= 1e7 then carry = 1; x = x - 1e7 else carry = 0 end
    out[#out + 1] = x
    i, j = i - 7, j - 7
  end
  local parts = { string.format('%d', out[#out]) }
  for k = #out - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', out[k]) end
  return table.concat(parts)
end

-- a - b for magnitudes with a >= b.
local function mag_sub(a, b)
  local out, borrow = {}, 0
  local i, j = #a, #b
  while i > 0 do
    local x = TONUMBER(string.sub(a, math.max(1, i - 6), i)) - borrow
    if j > 0 then x = x - TONUMBER(string.sub(b, math.max(1, j - 6), j)) end
    if x < 0 then borrow = 1; x = x + 1e7 else borrow = 0 end
    out[#out + 1] = x
    i, j = i - 7, j - 7
  end
  local k = #out
  while k > 1 and out[k] == 0 do k = k - 1 end
  local parts = { string.format('%d', out[k]) }
  for q = k - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', out[q]) end
  return table.concat(parts)
end

local function split(a)
  if string.sub(a, 1, 1) == '-' then return true, string.sub(a, 2) end
  return false, a
end

local function big_add(a, b)
  local na, ma = split(a)
  local nb, mb = split(b)
  if na == nb then
    local m = mag_add(ma, mb)
    return na and '-' .. m or m
  end
  local c = mag_cmp(ma, mb)
  if c == 0 then return '0' end
  if c > 0 then
    local m = mag_sub(ma, mb)
    return na and '-' .. m or m
  end
  local m = mag_sub(mb, ma)
  return nb and '-' .. m or m
end

-- a + b, exact.
local function add(a, b)
  if TYPE(a) == 'number' and TYPE(b) == 'number' then
    local n = a + b
    if n > -SMALL and n < SMALL then return n end
    BIG = true
    return fmt(n)
  end
  return small(big_add(text(a), text(b)))
end

local function neg(a)
  if TYPE(a) == 'number' then return -a end
  if a == '0' then return 0 end
  if string.sub(a, 1, 1) == '-' then return string.sub(a, 2) end
  return '-' .. a
end

-- -1, 0 or 1 as a < b, a == b, a > b.
local function cmp(a, b)
  if TYPE(a) == 'number' then
    if TYPE(b) == 'number' then
      if a == b then return 0 end
      return a < b and -1 or 1
    end
    return string.byte(b, 1) == 45 and 1 or -1  -- b is text: beyond a, on its sign's side
  elseif TYPE(b) == 'number' then
    return string.byte(a, 1) == 45 and -1 or 1
  end
  local na, ma = split(text(a))
  local nb, mb = split(text(b))
  if na ~= nb then return na and -1 or 1 end
  local c = mag_cmp(ma, mb)
  return na and -c or c
end

-- Integers (and flags) as one space-separated reply, formatted by one C call: %d while all
-- are numbers, else %s (which prints numbers below 1e14 and big text exactly).
local function reply(values)
  return string.format(string.rep(BIG and '%s ' or '%d ', #values), unpack(values))
end

-- -- counters --------------------------------------------------------------------------------

-- Field names of a metric (t: committed, r: held, lo:/hi: window, p: period) and, for a
-- window, its length: "day:" metrics use the store's window (read per call, since stores
-- with other settings share the library), "roll:<seconds>:" metrics their own.
local function meta(metric)
  local m = META[metric]
  if m == nil then
    META_SIZE = META_SIZE + 1
    m = {
      t = 't:' .. metric,
      r = 'r:' .. metric,
      lo = 'lo:' .. metric,
      hi = 'hi:' .. metric,
      p = 'p:' .. metric,
      day = string.sub(metric, 1, 4) == 'day:',
    }
    local seconds = string.match(metric, '^roll:([1-9]%d*):')
    if seconds then
      m.win = TONUMBER(seconds)
      m.bucket = math.max(1, math.floor(m.win / ROLL_BUCKETS))
    end
    m.windowed = m.day or m.win ~= nil
    META[metric] = m
  end
  return m
end

-- (window, bucket) of a windowed metric.
local function span(m)
  if m.day then return WINDOW, BUCKET end
  return m.win, m.bucket
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
    local ttl = IDLE
    if string.find(scope, SESSION_MARK, 1, true) then ttl = SESSION end
    if ttl ~= nil then ANY_TTL = true end
    s = { name = scope, key = key, f = f, w = {}, checked = false, dirty = false, ttl = ttl }
    SCOPES[scope] = s
  end
  return s
end

-- A counter field as an integer (0 when absent).
local function num(s, field)
  local v = s.f[field]
  if v == nil then return 0 end
  return val(v)
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
  local v = add(num(s, field), delta)
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
    if string.sub(k, 1, 2) == 'r:' and TONUMBER(v) ~= 0 then return true end
  end
  return false
end

-- Committed value of a counter, after dropping window buckets that left the window.
local function committed(s, metric)
  local m = meta(metric)
  if not m.windowed then return num(s, m.t) end
  local lo = s.f[m.lo]
  if lo == nil then return num(s, m.t) end
  lo = TONUMBER(lo)
  local window, bucket = span(m)
  local horizon = NOW - window - bucket
  if lo > horizon then return num(s, m.t) end
  local wkey = window_key(s.name, metric)
  if TONUMBER(s.f[m.hi]) <= horizon then
    redis.call('DEL', wkey)
    hdel(s, m.lo)
    hdel(s, m.hi)
    hset(s, m.t, 0)
    return 0
  end
  -- Buckets sit on multiples of the bucket length: walk them from the oldest.
  local removed = 0
  local b = lo
  while b <= horizon do
    local v = redis.call('HGET', wkey, b)
    if v then
      removed = add(removed, val(v))
      redis.call('HDEL', wkey, b)
    end
    b = b + bucket
  end
  hset(s, m.lo, b)
  return incr(s, m.t, neg(removed))
end

-- True when a line with this period starts a newer period than the counter's.
local function newer(s, m, period)
  if period == nil then return false end
  local stored = s.f[m.p]
  return stored == nil or period > TONUMBER(stored)
end

-- The committed value in the period a line with this period (or nil) counts in.
local function current(s, metric, period)
  if period ~= nil and newer(s, meta(metric), period) then return 0 end
  return committed(s, metric)
end

-- Move a counter to the newer period a line brings: its committed value restarts.
local function advance(s, metric, period)
  if period == nil then return end
  local m = meta(metric)
  if newer(s, m, period) then
    hset(s, m.t, 0)
    hset(s, m.p, period)
  end
end

-- Add a committed amount; a window's lands in the bucket of NOW (or the newest one, if the
-- clock stepped back).
local function add_committed(s, metric, amount)
  local m = meta(metric)
  if m.windowed then
    committed(s, metric)
    local _, bucket = span(m)
    local start = math.floor(NOW / bucket) * bucket
    local hi = s.f[m.hi]
    if hi ~= nil then
      hi = TONUMBER(hi)
      if hi > start then start = hi end
    end
    local wkey = window_key(s.name, metric)
    -- HINCRBY while the sum fits in 64 bits (one call); else exact arithmetic on the text.
    local done = TYPE(amount) == 'number' and redis.pcall('HINCRBY', wkey, start, amount)
    if not done or TYPE(done) == 'table' then
      local old = redis.call('HGET', wkey, start)
      redis.call('HSET', wkey, start, text(old and add(val(old), amount) or amount))
    end
    if s.f[m.lo] == nil then hset(s, m.lo, start) end
    if hi == nil or hi < start then hset(s, m.hi, start) end
  end
  incr(s, m.t, amount)
end

-- -- idle expiry -----------------------------------------------------------------------------

-- Until when something in the scope still counts (nil: nothing): a live hold (looked at
-- again soon), a window with usage inside it, a non-zero period counter within the
-- period horizon. Idle expiry never drops such a scope, so no setting can void a cap.
local function busy_until(s)
  local until_ = nil
  local function later(t)
    if until_ == nil or t > until_ then until_ = t end
  end
  if has_reserved(s) then later(NOW + math.min(s.ttl or HELD_RECHECK, HELD_RECHECK)) end
  local windows, periods = {}, {}
  for k, _ in pairs(s.f) do
    if string.sub(k, 1, 3) == 'hi:' then
      windows[#windows + 1] = string.sub(k, 4)
    elseif string.sub(k, 1, 2) == 'p:' then
      periods[#periods + 1] = string.sub(k, 3)
    end
  end
  for _, metric in ipairs(windows) do
    local m = meta(metric)
    if m.windowed then
      committed(s, metric)  -- may drop buckets (fields change: not while iterating s.f)
      local hi = s.f[m.hi]
      if hi ~= nil then
        local window, bucket = span(m)
        later(TONUMBER(hi) + window + bucket)
      end
    end
  end
  for _, metric in ipairs(periods) do
    local total = s.f['t:' .. metric]
    local ends = TONUMBER(s.f['p:' .. metric]) + PERIOD_HORIZON
    if total ~= nil and TONUMBER(total) ~= 0 and ends > NOW then
      later(ends)
    end
  end
  return until_
end

-- Drop a scope unused for its idle (or session) ttl in which nothing still counts, as
-- MemoryStore does.
local function idle_check(s)
  if s.checked then return end
  s.checked = true
  local ttl = s.ttl
  if ttl == nil or s.f['u'] == nil then return end
  if TONUMBER(s.f['u']) > NOW - ttl then return end
  if busy_until(s) ~= nil then return end
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

-- Mark every scope the lines name that can expire as used now.
local function touch(lines)
  if not ANY_TTL then return end
  for _, e in ipairs(lines) do
    local s = load(e[1])
    if s.ttl ~= nil and s.f['u'] ~= NOWS then hset(s, 'u', NOWS) end
  end
end

-- -- lines and holds -------------------------------------------------------------------------

-- Lines travel as JSON, [[scope, metric, amount(, limit or null(, period))], ...],
-- decoded in C by cjson; amounts and limits of 1e14 or more travel as decimal strings, so
-- cjson's doubles never round them. The client starts the JSON with a space when some
-- line holds such a string or a null (the rest pass through as decoded). A reserve's
-- JSON is stored as its hold, unchanged.
local function decode_lines(json)
  local lines = cjson.decode(json)
  if string.byte(json, 1) ~= 32 then return lines end
  for _, e in ipairs(lines) do
    e[3] = val(e[3])
    local limit = e[4]
    if limit == cjson.null then e[4] = nil elseif limit ~= nil then e[4] = val(limit) end
    if e[5] == cjson.null then e[5] = nil end
  end
  return lines
end

-- Holds written by agent-budget 0.2 are text, "<#scope>:<scope><#metric>:<metric><amount>;"
-- per line; they are still read, so an upgrade does not strand live holds.
local function parse_legacy(blob)
  local out = {}
  local pos = 1
  local len = #blob
  while pos <= len do
    local colon = string.find(blob, ':', pos, true)
    local stop = colon + TONUMBER(string.sub(blob, pos, colon - 1))
    local scope = string.sub(blob, colon + 1, stop)
    colon = string.find(blob, ':', stop + 1, true)
    local mstop = colon + TONUMBER(string.sub(blob, stop + 1, colon - 1))
    local metric = string.sub(blob, colon + 1, mstop)
    local semi = string.find(blob, ';', mstop + 1, true)
    local amount = string.match(string.sub(blob, mstop + 1, semi - 1), '^([^,]+)')
    out[#out + 1] = { scope, metric, val(amount) }
    pos = semi + 1
  end
  return out
end

-- The {scope, metric, amount, ...} lines of a stored hold.
local function hold_lines(packed)
  local first = string.byte(packed, 1)
  if first >= 48 and first <= 57 then return parse_legacy(packed) end
  return decode_lines(packed)
end

local function drop_hold(id, held)
  for _, e in ipairs(held) do
    local s = load(e[1])
    local field = meta(e[2]).r
    if s.f[field] ~= nil then incr(s, field, neg(e[3])) end
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
  if TONUMBER(string.sub(v, 3)) + TOMB <= NOW then return nil end
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

-- Give every key written of a scope that can expire a real TTL too, so abandoned scopes
-- leave Redis (call after flush): its idle (or session) ttl, or longer while something in
-- it still counts. A key that holds budget never gets a TTL shorter than the one it has.
-- With an idle ttl the holds keys get one too, always outliving the counters they refer
-- to (without one, ordinary scopes never expire, so neither do the holds keys).
local function expire_written(hold_ttl)
  if not ANY_TTL then return end  -- no scope of this call expires (nor, then, do the holds)
  local hold_ms = nil
  if hold_ttl ~= nil then hold_ms = math.ceil((hold_ttl + MARGIN) * 1000) end
  local longest = nil
  for _, s in pairs(SCOPES) do
    if s.dirty and s.ttl ~= nil then
      local ms = math.ceil((s.ttl + MARGIN) * 1000)
      local keep = has_reserved(s)
      if hold_ms ~= nil and keep and hold_ms > ms then ms = hold_ms end
      local busy = busy_until(s)
      if busy ~= nil then
        local b = math.ceil((busy - NOW + MARGIN) * 1000)
        if b > ms then ms = b end
      end
      extend(s.key, ms, keep)
      for k, _ in pairs(s.f) do
        if string.sub(k, 1, 3) == 'lo:' then
          extend(window_key(s.name, string.sub(k, 4)), ms, keep)
        end
      end
      if longest == nil or ms > longest then longest = ms end
    end
  end
  if IDLE == nil then return end
  if longest ~= nil or hold_ms ~= nil then
    local ms = math.ceil((IDLE + MARGIN) * 1000)
    if longest ~= nil and longest > ms then ms = longest end
    if hold_ms ~= nil and hold_ms > ms then ms = hold_ms end
    extend(HOLDS, ms, true)
    extend(EXPIRY, ms, true)
  end
end
