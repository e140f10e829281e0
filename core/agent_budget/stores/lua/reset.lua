-- reset: ARGV[2] scope, ARGV[3] metric prefix. Zeroes the committed value of the scope's
-- counters whose metric starts with the prefix; holds and periods stay.
local s = load(ARGV[2])
local prefix = ARGV[3]
local metrics = {}
for k, _ in pairs(s.f) do
  if string.sub(k, 1, 2) == 't:' then
    local metric = string.sub(k, 3)
    if string.sub(metric, 1, #prefix) == prefix then metrics[#metrics + 1] = metric end
  end
end
for _, metric in ipairs(metrics) do
  local m = meta(metric)
  hset(s, m.t, 0)
  if s.f[m.lo] ~= nil then
    redis.call('DEL', window_key(s.name, metric))
    hdel(s, m.lo)
    hdel(s, m.hi)
  end
end
flush()
return 1
