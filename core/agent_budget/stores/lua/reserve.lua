-- reserve: ARGV[7] hold id, ARGV[8] ttl seconds, ARGV[9] "1" for a dry run, then four
-- values per line: scope, metric, amount, limit ("" for none).
-- Returns {admitted, refused_at (-1 if none), committed1, reserved1, ...} as strings, the
-- levels as they were before this hold; an error reply "AB_HOLD_IN_USE" for a reused id.
local id = ARGV[7]
local ttl = tonumber(ARGV[8])
local dry = ARGV[9] == '1'
local first = 10
local n = (#ARGV - first + 1) / 4

reap()

local packed_args = {}
for i = 0, n - 1 do
  local j = first + i * 4
  packed_args[#packed_args + 1] = ARGV[j]
  packed_args[#packed_args + 1] = ARGV[j + 1]
  packed_args[#packed_args + 1] = ARGV[j + 2]
end
local packed = cmsgpack.pack(packed_args)

-- A replay of this very reserve (a client retry after a lost reply) is answered, not doubled.
local existing = nil
if not dry then existing = redis.call('HGET', HOLDS, id) end
if existing and existing == packed then
  local out = { '1', '-1' }
  for i = 0, n - 1 do
    local j = first + i * 4
    local s = load(ARGV[j])
    out[#out + 1] = fmt(committed(s, ARGV[j + 1]))
    out[#out + 1] = fmt(num(s, 'r:' .. ARGV[j + 1]) - tonumber(ARGV[j + 2]))
  end
  return out
end

for i = 0, n - 1 do
  idle_check(load(ARGV[first + i * 4]))
end
for i = 0, n - 1 do
  local s = load(ARGV[first + i * 4])
  if s.f['u'] ~= ftime(NOW) then touch(s) end
end

local levels = {}
local refused = -1
for i = 0, n - 1 do
  local j = first + i * 4
  local s = load(ARGV[j])
  local c = committed(s, ARGV[j + 1])
  local r = num(s, 'r:' .. ARGV[j + 1])
  levels[#levels + 1] = fmt(c)
  levels[#levels + 1] = fmt(r)
  if refused < 0 and ARGV[j + 3] ~= '' then
    if c + r + tonumber(ARGV[j + 2]) > tonumber(ARGV[j + 3]) then refused = i end
  end
end

local out = { '1', '-1' }
if refused >= 0 then
  out = { '0', tostring(refused) }
elseif not dry then
  if existing or tombstone(id) then
    expire_written(nil)
    return redis.error_reply('AB_HOLD_IN_USE hold id ' .. id .. ' is already in use')
  end
  for i = 0, n - 1 do
    local j = first + i * 4
    incr(load(ARGV[j]), 'r:' .. ARGV[j + 1], tonumber(ARGV[j + 2]))
  end
  redis.call('HSET', HOLDS, id, packed)
  redis.call('ZADD', EXPIRY, ftime(NOW + ttl), id)
end
for _, v in ipairs(levels) do out[#out + 1] = v end
expire_written(ttl)
return out
