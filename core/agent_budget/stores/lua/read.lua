-- read: ARGV[2] scope. Returns {metric1, committed1, reserved1, ...} for every counter of
-- the scope that is non-zero or held.
local s

reap()
s = load(ARGV[2])
idle_check(s)

local metrics = {}
for k, _ in pairs(s.f) do
  local p = string.sub(k, 1, 2)
  if p == 't:' or p == 'r:' then metrics[string.sub(k, 3)] = true end
end
local out = {}
for metric, _ in pairs(metrics) do
  local m = meta(metric)
  local c = committed(s, metric)
  local r = num(s, m.r)
  if c ~= 0 or r ~= 0 then
    out[#out + 1] = metric
    out[#out + 1] = str(s, m.t)
    out[#out + 1] = str(s, m.r)
  end
end
flush()
expire_written(nil)
return out
