-- commit: ARGV[3] hold id, ARGV[4] the encoded lines (no limits). Frees the hold (if live)
-- and adds the amounts once per hold id, even above a limit. Returns "<applied 1|0>
-- <committed1> <reserved1> ...", the levels after it.
local id = ARGV[3]
local lines = parse_lines(ARGV[4])

reap()

local packed = redis.call('HGET', HOLDS, id)
if packed then
  for _, scope in ipairs(hold_scopes(packed)) do idle_check(load(scope)) end
end
for _, e in ipairs(lines) do idle_check(load(e[1])) end
if packed then drop_hold(id, packed) end

local state = tombstone(id)
local applied = state == nil or state == 'r'
local stamp = NOWS
for _, e in ipairs(lines) do
  local s = load(e[1])
  if IDLE ~= nil and s.f['u'] ~= stamp then hset(s, 'u', stamp) end
end
if applied then
  for _, e in ipairs(lines) do add(load(e[1]), e[2], e[3]) end
  finish(id, 'c')
end

flush()
local out = { applied and '1' or '0' }
for _, e in ipairs(lines) do
  local s = load(e[1])
  local m = meta(e[2])
  committed(s, e[2])
  out[#out + 1] = str(s, m.t)
  out[#out + 1] = str(s, m.r)
end
flush()
expire_written(nil)
return table.concat(out, ' ')
