-- acquire.lua: grant one request its estimated cost now, or say how long to wait.
-- KEYS[1] state  KEYS[2] reservations  KEYS[3] waiters  KEYS[4] share  KEYS[5] ledger of the task
-- KEYS[6] set of tasks with a ledger
-- ARGV[1] cost  ARGV[2] priority (lower = more urgent)  ARGV[3] request id (reservation and waiter)
-- ARGV[4] now_ms ('' = Redis TIME)  ARGV[5] refill period ms  ARGV[6] reservation ttl ms
-- ARGV[7] guaranteed share of a waiting class (0..1)  ARGV[8] share window ms  ARGV[9] yield ms
-- ARGV[10] waiter grace ms  ARGV[11] ms the caller already slept for this request (ledger)
-- ARGV[12] task name  ARGV[13] '1' = peek: decide exactly the same way but write nothing (no
-- reservation, no waiter, no purge; TokenBucket.eta_ms)
-- ARGV[14] headroom: tokens this request must leave available for more urgent classes (0 for
--   the most urgent class)
-- Returns {'grant', available_after} | {'wait', wait_ms, reason} | {'sync'} | {'starved'}
--   reason: 'tokens' (refill needed, or the server answered 429 before its next tick),
--           'yield' (a request that goes first is due),
--           'inflight' (refill rate 0, only in-flight reservations hold the balance).
-- Rule (Keepa admits any request while its balance is > 0): grant when
--   available = balance - live reservations > 0, no due waiter goes first and the last 429's
--   refill tick (state.blocked_until) has passed, whatever the cost; a request with a headroom
--   must also leave `headroom` tokens available, unless cost + headroom exceeds the bucket's
--   ceiling (60 x rate: no size is ever impossible) or its class is owed its share, so an
--   urgent request finds tokens at once instead of waiting for the next tick.
-- Wait = time to the next tick + (ticks - 1) * period, ticks = ceil(tokens missing / rate)
--   (1 - available, or what the headroom lacks), never less than the time left until
--   blocked_until.

local cost = tonumber(ARGV[1])
local priority = tonumber(ARGV[2])
local id = ARGV[3]
local now = clock_ms(ARGV[4])
local period = tonumber(ARGV[5])
local min_share = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local yield_ms = tonumber(ARGV[9])
local peek = ARGV[13] == '1'
local headroom = tonumber(ARGV[14])

local function write(...)
  if not peek then
    redis.call(...)
  end
end

local state = read_state(KEYS[1])
if not state then
  return {'sync'}
end
if project(state, now, period) > 0 then
  write('HSET', KEYS[1], 'balance', state.balance, 'next_tick', state.next_tick)
end
local available = state.balance - live_reserved(KEYS[2], now, peek)
-- After a 429 the server admits nothing before the tick it named, whatever balance it reported.
local throttled_ms = state.blocked_until - now

-- Tokens granted per priority class, halved once per elapsed window (a sliding view of the run).
local share = {}
local total = 0
local raw = redis.call('HGETALL', KEYS[4])
for i = 1, #raw, 2 do
  share[raw[i]] = tonumber(raw[i + 1])
end
local started = share['at'] or now
share['at'] = nil
local windows = math.floor((now - started) / window)
for class, tokens in pairs(share) do
  share[class] = tokens * (0.5 ^ windows)
  total = total + share[class]
  if windows > 0 then
    write('HSET', KEYS[4], class, share[class])
  end
end
write('HSET', KEYS[4], 'at', started + windows * window)

local function owed(class)
  return total > 0 and (share['p' .. class] or 0) < min_share * total
end

-- A due waiter goes first when it is more urgent and we are not owed our share, or when it is
-- less urgent but owed its share (the guarantee that keeps the backfiller from starving).
local blocked = false
for _, waiter in ipairs(live_waiters(KEYS[3], now, peek)) do
  if waiter.id ~= id and waiter.wake <= now + yield_ms then
    if (waiter.priority < priority and not owed(priority))
        or (waiter.priority > priority and owed(waiter.priority)) then
      blocked = true
    end
  end
end

-- Tokens short of this request's headroom (0 when it has none, could never have it, or its
-- class is owed its guaranteed share).
local short = 0
if headroom > 0 and cost + headroom <= 60 * state.rate and not owed(priority) then
  short = math.max(0, cost + headroom - available)
end

if available > 0 and short == 0 and not blocked and throttled_ms <= 0 then
  write('HSET', KEYS[2], id, string.format('%d:%d:%d', cost, now + tonumber(ARGV[6]), priority))
  write('HDEL', KEYS[3], id)
  write('HINCRBYFLOAT', KEYS[4], 'p' .. priority, cost)
  local waited = tonumber(ARGV[11])
  if waited > 0 then
    write('SADD', KEYS[6], ARGV[12])
    write('HINCRBY', KEYS[5], 'waits', 1)
    write('HINCRBY', KEYS[5], 'wait_ms', waited)
  end
  return {'grant', available - cost}
end

local wait, reason
if available > 0 and blocked then
  wait, reason = yield_ms, 'yield'
elseif available > 0 and short > 0 then
  wait, reason = (state.next_tick - now) + (math.ceil(short / state.rate) - 1) * period, 'tokens'
elseif available > 0 then
  wait, reason = throttled_ms, 'tokens'
elseif state.rate <= 0 then
  if state.balance <= 0 then
    write('HDEL', KEYS[3], id)
    return {'starved'}
  end
  wait, reason = period, 'inflight'
else
  local ticks = math.ceil(math.max(1 - available, short) / state.rate)
  wait, reason = (state.next_tick - now) + (ticks - 1) * period, 'tokens'
end
if throttled_ms > wait then
  wait, reason = throttled_ms, 'tokens'
end
local wake = now + math.min(wait, period)
write('HSET', KEYS[3], id, string.format('%d:%d:%d', priority, wake, wake + tonumber(ARGV[10])))
return {'wait', wait, reason}
