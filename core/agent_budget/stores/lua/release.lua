-- release: ARGV[2] hold id. Frees a live hold without spending; returns 1 if one was freed.
local id = ARGV[2]

reap()

local packed = redis.call('HGET', HOLDS, id)
if not packed then
  flush()
  return 0
end
local held = hold_lines(packed)
idle_check_lines(held)
drop_hold(id, held)
if not tombstone(id) then finish(id, 'r') end
flush()
expire_written(nil)
return 1
