-- snapshot.lua: the bucket as the dashboard sees it, projected to now (expired entries purged).
-- KEYS[1] state  KEYS[2] reservations  KEYS[3] waiters
-- ARGV[1] now_ms ('' = Redis TIME)  ARGV[2] refill period ms
-- Returns {now, reserved, {waiter priorities...}} when the state is missing, else
--         {now, reserved, {waiter priorities...}, balance, projected, rate, next_tick, synced_at,
--          blocked_until} (blocked_until 0 when no 429 blocks admission any more).

local now = clock_ms(ARGV[1])
local reserved = live_reserved(KEYS[2], now)
local priorities = {}
for _, waiter in ipairs(live_waiters(KEYS[3], now)) do
  priorities[#priorities + 1] = waiter.priority
end
local state = read_state(KEYS[1])
if not state then
  return {now, reserved, priorities}
end
local balance = state.balance
project(state, now, tonumber(ARGV[2]))
local blocked_until = state.blocked_until > now and state.blocked_until or 0
return {now, reserved, priorities, balance, state.balance, state.rate, state.next_tick,
        state.synced_at, blocked_until}
