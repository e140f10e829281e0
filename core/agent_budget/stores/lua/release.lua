-- release: ARGV[3] hold id. Frees a live hold without spending; returns 1 if one was freed.
local id = ARGV[3]

reap()

local packed = redis.call('HGET', HOLDS, id)
if not packed then
  flush()
  return 0
end
for _, scope in ipairs(hold_scopes(packed)) do idle_check(load(scope)) end
drop_hold(id, packed)
if not tombstone(id) then finish(id, 'r') end
flush()
expire_written(nil)
return 1
