-- sync.lua: adopt a free /token envelope (or any envelope outside a reservation).
-- KEYS[1] state  KEYS[2] balance history
-- ARGV[1] now_ms ('' = Redis TIME)  ARGV[2..5] envelope timestamp, tokensLeft, refillIn, refillRate
-- ARGV[6] history sample interval ms  ARGV[7] history length
-- Returns 1 when adopted (state missing, or the envelope is newer than the last adopted), else 0.
-- In-flight reservations are kept: they are not part of the mirrored balance.

local now = clock_ms(ARGV[1])
local env = envelope_from(ARGV, 2)
if adopt(KEYS[1], KEYS[2], read_state(KEYS[1]), env, now, tonumber(ARGV[6]), tonumber(ARGV[7])) then
  return 1
end
return 0
