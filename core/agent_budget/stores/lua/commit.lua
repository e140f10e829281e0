-- commit: ARGV[2] hold id, ARGV[3] the lines as JSON (see decode_lines; no limits). Frees
-- the hold (if live) and adds the amounts once per hold id, even above a limit. Returns
-- "<applied 1|0> <committed1> <reserved1> ...", the levels after it, read in the same
-- atomic step. With a ledger, ARGV[4] is how to keep it (see ledger_append) and ARGV[5]
-- the usage record.
local id = ARGV[2]
local lines = decode_lines(ARGV[3])

-- Append the record to the group's ledger stream, capped by length and age. ARGV[4] is
-- "<max entries> <max age ms or empty> <1: ids from the server's clock | 0: from NOW>".
-- Ids follow the time, so readers find a period by id; a caller's clock that stepped back
-- takes the next id. With an idle ttl the stream expires like every other key.
local function ledger_append(spec, record)
  local maxlen, age, server = string.match(spec, '^(%d+) (%d*) ([01])$')
  local key = BASE .. 'ledger'
  local approx = tonumber(maxlen) >= 1000 and '~' or '='
  local ms = math.floor(NOW * 1000)
  local added = false
  if server == '0' then
    local reply = redis.pcall('XADD', key, 'MAXLEN', approx, maxlen,
      string.format('%d-*', ms), 'r', record)
    added = type(reply) ~= 'table' or reply.err == nil
  end
  if not added then redis.call('XADD', key, 'MAXLEN', approx, maxlen, '*', 'r', record) end
  if age ~= '' then
    redis.call('XTRIM', key, 'MINID', approx, string.format('%d', ms - tonumber(age)))
  end
  if IDLE ~= nil then
    local keep = math.max(tonumber(age) or 0, math.ceil((IDLE + MARGIN) * 1000))
    redis.call('PEXPIRE', key, keep + MARGIN * 1000)
  end
end

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
  if ARGV[5] then ledger_append(ARGV[4], ARGV[5]) end
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
