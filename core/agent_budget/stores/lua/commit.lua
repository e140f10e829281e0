-- commit: ARGV[2] hold id, ARGV[3] the lines as JSON (see decode_lines; no limits). Frees
-- the hold (if live) and adds the amounts once per hold id, even above a limit. Returns
-- "<applied 1|0> <committed1> <reserved1> ...", the levels after it, read in the same
-- atomic step.
local id = ARGV[2]
local lines = decode_lines(ARGV[3])

reap()

local packed = redis.call('HGET', HOLDS, id)
local held = nil
if packed then
  held = hold_lines(packed)
  idle_check_lines(held)
end
idle_check_lines(lines)
if held then drop_hold(id, held) end

local state = tombstone(id)
local applied = state == nil or state == 'r'
touch(lines)
if applied then
  for _, e in ipairs(lines) do
    local s = load(e[1])
    advance(s, e[2], e[5])
    add_committed(s, e[2], e[3])
  end
  finish(id, 'c')
end

local out = { applied and 1 or 0 }
for _, e in ipairs(lines) do
  local s = load(e[1])
  out[#out + 1] = current(s, e[2], e[5])
  out[#out + 1] = num(s, meta(e[2]).r)
end
flush()
expire_written(nil)
return reply(out)
