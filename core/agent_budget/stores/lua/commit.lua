-- commit: ARGV[7] hold id, then three values per line: scope, metric, amount.
-- Frees the hold (if live) and adds the amounts once per hold id, even above a limit.
-- Returns {applied, committed1, reserved1, ...} as strings, the levels after it.
local id = ARGV[7]
local first = 8
local n = (#ARGV - first + 1) / 3

reap()

local packed = redis.call('HGET', HOLDS, id)
if packed then
  for _, scope in ipairs(hold_scopes(packed)) do idle_check(load(scope)) end
end
for i = 0, n - 1 do idle_check(load(ARGV[first + i * 3])) end
if packed then drop_hold(id, packed) end

local state = tombstone(id)
local applied = state == nil or state == 'r'
for i = 0, n - 1 do
  local s = load(ARGV[first + i * 3])
  if s.f['u'] ~= ftime(NOW) then touch(s) end
end
if applied then
  for i = 0, n - 1 do
    local j = first + i * 3
    add(load(ARGV[j]), ARGV[j + 1], tonumber(ARGV[j + 2]))
  end
  finish(id, 'c')
end

local out = { applied and '1' or '0' }
for i = 0, n - 1 do
  local j = first + i * 3
  local s = load(ARGV[j])
  out[#out + 1] = fmt(committed(s, ARGV[j + 1]))
  out[#out + 1] = fmt(num(s, 'r:' .. ARGV[j + 1]))
end
expire_written(nil)
return out
