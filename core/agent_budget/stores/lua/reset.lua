-- reset: ARGV[7] scope, ARGV[8] metric prefix. Zeroes the committed value of the scope's
-- counters whose metric starts with the prefix; holds stay.
local s = load(ARGV[7])
local prefix = ARGV[8]
local metrics = {}
for k, _ in pairs(s.f) do
  if string.sub(k, 1, 2) == 't:' then
    local metric = string.sub(k, 3)
    if string.sub(metric, 1, #prefix) == prefix then metrics[#metrics + 1] = metric end
  end
end
for _, metric in ipairs(metrics) do
  hset(s, 't:' .. metric, '0')
  if s.f['lo:' .. metric] ~= nil then
    redis.call('DEL', window_key(s.name, metric))
    hdel(s, 'lo:' .. metric)
    hdel(s, 'hi:' .. metric)
  end
end
return 1
