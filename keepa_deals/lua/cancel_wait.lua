-- cancel_wait.lua: a request stops waiting without a grant (deadline, error, interrupt).
-- KEYS[1] waiters  KEYS[2] ledger of the task  KEYS[3] set of tasks with a ledger
-- ARGV[1] request id  ARGV[2] ms the caller slept for this request  ARGV[3] task name
-- Returns 1 when a waiter entry was removed, else 0.

local removed = redis.call('HDEL', KEYS[1], ARGV[1])
local waited = tonumber(ARGV[2])
if waited > 0 then
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'waits', 1)
  redis.call('HINCRBY', KEYS[2], 'wait_ms', waited)
end
return removed
