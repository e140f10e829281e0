-- reserve: ARGV[2] hold id, ARGV[3] "<ttl seconds> <1 for a dry run, else 0>", ARGV[4] the
-- lines as JSON, [scope, metric, amount, limit] each (no limit: three). Returns "<admitted>
-- <refused_at or -1> <committed1> <reserved1> ...", the levels as they were before this
-- hold; an error reply "AB_HOLD_IN_USE ..." for a reused id.
local id = ARGV[2]
local ttl_text, dry_flag = string.match(ARGV[3], '^(%S+) (%S+)$')
local ttl = tonumber(ttl_text)
local dry = dry_flag == '1'
local blob = ARGV[4]
local lines = decode_lines(blob)

reap()

-- A replay of this very reserve (a client retry after a lost reply) is answered, not doubled.
local existing = nil
if not dry then existing = redis.call('HGET', HOLDS, id) end
if existing and existing == blob then
  local out = { '1', '-1' }
  for _, e in ipairs(lines) do
    local s = load(e[1])
    out[#out + 1] = committed(s, e[2])
    out[#out + 1] = num(s, meta(e[2]).r) - e[3]
  end
  flush()
  return reply(out)
end

idle_check_lines(lines)
touch(lines)

local out = { '1', '-1' }
local refused = -1
for i, e in ipairs(lines) do
  local s = load(e[1])
  local m = meta(e[2])
  local c = committed(s, e[2])
  local r = num(s, m.r)
  out[#out + 1] = s.f[m.t] or 0
  out[#out + 1] = s.f[m.r] or 0
  if refused < 0 and e[4] ~= nil and c + r + e[3] > e[4] then refused = i - 1 end
end

if refused >= 0 then
  out[1] = '0'
  out[2] = tostring(refused)
elseif not dry then
  if existing or tombstone(id) then
    flush()
    expire_written(nil)
    return redis.error_reply('AB_HOLD_IN_USE hold id ' .. id .. ' is already in use')
  end
  for _, e in ipairs(lines) do incr(load(e[1]), meta(e[2]).r, e[3]) end
  redis.call('HSET', HOLDS, id, blob)
  redis.call('ZADD', EXPIRY, NOW + ttl, id)
end
flush()
expire_written(ttl)
return reply(out)
