-- reconcile.lua: settle one request after its response (or its failure without a body).
-- KEYS[1] state  KEYS[2] reservations  KEYS[3] share  KEYS[4] ledger of the task
-- KEYS[5] tokens spent per minute of the task  KEYS[6] balance history  KEYS[7] set of tasks
-- ARGV[1] reservation id  ARGV[2] reserved cost  ARGV[3] priority  ARGV[4] task  ARGV[5] now_ms
-- ('' = Redis TIME)  ARGV[6] HTTP status ('' = unknown)  ARGV[7..10] envelope timestamp,
-- tokensLeft, refillIn, refillRate ('' = no envelope)  ARGV[11] tokensConsumed
-- ARGV[12] history sample interval ms  ARGV[13] history length  ARGV[14] minutes of ledger kept
-- Returns 1 when the envelope was adopted, else 0.
-- The reservation is dropped; the envelope's tokensLeft (which already includes this request's
-- charge) replaces the mirrored balance only if it is newer than the last adopted one. Other
-- in-flight reservations stay untouched, so available = balance - their sum remains right.
-- A 429 means the server admits nothing before its next refill tick, whatever balance it reports
-- (a forced 429, a phantom consumer racing us): state.blocked_until moves to that tick
-- (now + refillIn), and acquire grants nothing to anyone before it.

local now = clock_ms(ARGV[5])
local cost = tonumber(ARGV[2])
local consumed = tonumber(ARGV[11])
local env = envelope_from(ARGV, 7)

redis.call('HDEL', KEYS[2], ARGV[1])
local adopted = 0
if env and adopt(KEYS[1], KEYS[6], read_state(KEYS[1]), env, now, tonumber(ARGV[12]),
                 tonumber(ARGV[13])) then
  adopted = 1
end
if env and env.ts > 0 and ARGV[6] == '429' then
  local tick = now + math.max(env.refill_in, 1)
  if tick > tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '0') then
    redis.call('HSET', KEYS[1], 'blocked_until', tick)
  end
end

-- The share counted the estimate at grant time; correct it to what was charged.
if env then
  local class = 'p' .. ARGV[3]
  local counted = tonumber(redis.call('HGET', KEYS[3], class) or '0')
  redis.call('HSET', KEYS[3], class, math.max(0, counted + consumed - cost))
end

redis.call('SADD', KEYS[7], ARGV[4])
redis.call('HINCRBY', KEYS[4], 'requests', 1)
if ARGV[6] == '429' then
  redis.call('HINCRBY', KEYS[4], 'http_429', 1)
end
if env and consumed ~= 0 then
  local minute = math.floor(now / 60000)
  redis.call('HINCRBY', KEYS[5], string.format('%d', minute), consumed)
  local keep = tonumber(ARGV[14])
  if redis.call('HLEN', KEYS[5]) > keep then
    for _, field in ipairs(redis.call('HKEYS', KEYS[5])) do
      if tonumber(field) <= minute - keep then
        redis.call('HDEL', KEYS[5], field)
      end
    end
  end
end
return adopted
