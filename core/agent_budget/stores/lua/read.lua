-- read: ARGV[2] scope, ARGV[3] optional JSON {metric: period start}. Returns {metric1,
-- committed1, reserved1, ...} for every counter of the scope that is non-zero or held
-- (a counter whose period is older than the one given reads as zero committed).
local s

reap()
s = load(ARGV[2])
idle_check(s)
local periods = nil
if ARGV[3] ~= nil and ARGV[3] ~= '' then periods = cjson.decode(ARGV[3]) end

local metrics = {}
for k, _ in pairs(s.f) do
  local p = string.sub(k, 1, 2)
  if p == 't:' or p == 'r:' then metrics[string.sub(k, 3)] = true end
end
local out = {}
for metric, _ in pairs(metrics) do
  local period = nil
  if periods ~= nil then period = periods[metric] end
  if period == cjson.null then period = nil end
  local c = current(s, metric, period)
  local r = num(s, meta(metric).r)
  if not is_zero(c) or not is_zero(r) then
    out[#out + 1] = metric
    out[#out + 1] = c
    out[#out + 1] = r
  end
end
flush()
expire_written(nil)
return out
