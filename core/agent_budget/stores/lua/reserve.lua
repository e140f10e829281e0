-- reserve: ARGV[2] hold id, ARGV[3] "<ttl seconds> <1 for a dry run, else 0>", ARGV[4] the
-- lines as JSON (see decode_lines). Returns "<admitted> <refused_at or -1> <committed1>
-- <reserved1> ...", the levels as they were before this hold; an error reply
-- "AB_HOLD_IN_USE ..." for an id held with other lines or finished within the tombstone
-- ttl (nothing written).
local id = ARGV[2]
local ttl_text, dry_flag = string.match(ARGV[3], '^(%S+) (%S+)$')
local ttl = tonumber(ttl_text)
local dry = dry_flag == '1'
local blob = ARGV[4]
local lines = decode_lines(blob)

reap()

if not dry then
  local existing = redis.call('HGET', HOLDS, id)
  if existing or tombstone(id) then
    -- A repeat of this very reserve (a client retry after a lost reply) is answered with
    -- the levels before its hold, never held twice; anything else is an id in use.
    local same = existing == blob
    if existing and not same then
      local held = hold_lines(existing)
      same = #held == #lines
      for i, e in ipairs(lines) do
        local h = held[i]
        if not same or h[1] ~= e[1] or h[2] ~= e[2] or h[3] ~= e[3] then
          same = false
          break
        end
      end
    end
    if not same then
      flush()
      expire_written(nil)
      return redis.error_reply('AB_HOLD_IN_USE hold id ' .. id .. ' is already in use')
    end
    local own = {}
    for _, e in ipairs(lines) do
      local k = e[1] .. '\0' .. e[2]
      own[k] = add(own[k] or 0, e[3])
    end
    local out = { 1, -1 }
    for _, e in ipairs(lines) do
      local s = load(e[1])
      out[#out + 1] = current(s, e[2], e[5])
      out[#out + 1] = add(num(s, meta(e[2]).r), neg(own[e[1] .. '\0' .. e[2]]))
    end
    flush()
    expire_written(nil)
    return reply(out)
  end
end

idle_check_lines(lines)
touch(lines)

local out = { 1, -1 }
local refused = -1
for i, e in ipairs(lines) do
  local s = load(e[1])
  local c = current(s, e[2], e[5])
  local r = num(s, meta(e[2]).r)
  out[#out + 1] = c
  out[#out + 1] = r
  if refused < 0 and e[4] ~= nil and cmp(add(add(c, r), e[3]), e[4]) > 0 then
    refused = i - 1
  end
end

if refused >= 0 then
  out[1] = 0
  out[2] = refused
elseif not dry then
  for _, e in ipairs(lines) do
    local s = load(e[1])
    advance(s, e[2], e[5])
    incr(s, meta(e[2]).r, e[3])
  end
  redis.call('HSET', HOLDS, id, blob)
  redis.call('ZADD', EXPIRY, NOW + ttl, id)
end
flush()
expire_written(ttl)
return reply(out)
