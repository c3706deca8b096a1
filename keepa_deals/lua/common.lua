-- common.lua: helpers shared by every token-bucket script; tokens.py prepends this file to each
-- operation script, so it declares functions only and reads no KEYS/ARGV of its own.
--
-- Data model (all under kd:bucket:<name>:):
--   state        hash  balance      server-mirrored balance, projected to whole refill ticks
--                      rate         tokens per tick (Keepa refillRate); ceiling = 60 * rate
--                      next_tick    Redis-clock ms of the next refill tick
--                      server_ts    server timestamp of the last adopted envelope
--                      server_left  tokensLeft of that envelope (tie-break on equal timestamps)
--                      synced_at    Redis-clock ms of the last adoption
--                      history_at   Redis-clock ms of the last balance-history sample
--                      blocked_until Redis-clock ms before which nothing is granted: the refill
--                                   tick named by the last 429's refillIn (ignored once past)
--   reservations hash  id -> "cost:expiry_ms:priority"   in-flight requests, kept apart from balance
--   waiters      hash  id -> "priority:wake_ms:expiry_ms" requests sleeping for tokens
--   share        hash  at -> window start ms, p<priority> -> tokens granted (halved every window)
-- A missing state means "sync from /token": nothing here ever invents a balance.

local function clock_ms(injected)
  if injected ~= nil and injected ~= '' then
    return tonumber(injected)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function read_state(key)
  local v = redis.call('HMGET', key, 'balance', 'rate', 'next_tick', 'server_ts', 'server_left',
                       'synced_at', 'history_at', 'blocked_until')
  if not v[1] or not v[2] or not v[3] then
    return nil
  end
  return {balance = tonumber(v[1]), rate = tonumber(v[2]), next_tick = tonumber(v[3]),
          server_ts = tonumber(v[4] or 0), server_left = tonumber(v[5] or 0),
          synced_at = tonumber(v[6] or 0), history_at = tonumber(v[7] or 0),
          blocked_until = tonumber(v[8] or 0)}
end

-- Apply every whole refill tick due by `now`, like Keepa: tokens = min(tokens + rate, 60 * rate)
-- per tick (a deficit is paid down the same way). Returns the number of ticks applied.
local function project(state, now, period)
  if now < state.next_tick then
    return 0
  end
  local ticks = math.floor((now - state.next_tick) / period) + 1
  state.balance = math.min(state.balance + ticks * state.rate, 60 * state.rate)
  state.next_tick = state.next_tick + ticks * period
  return ticks
end

-- Sum of the live reservations; expired ones (dead holders) are deleted on the way unless
-- `read_only`.
local function live_reserved(key, now, read_only)
  local entries = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #entries, 2 do
    local cost, expiry = string.match(entries[i + 1], '^(-?%d+):(%d+)')
    if tonumber(expiry) <= now then
      if not read_only then
        redis.call('HDEL', key, entries[i])
      end
    else
      total = total + tonumber(cost)
    end
  end
  return total
end

-- The live waiters as a list of {id, priority, wake}; expired ones are deleted on the way unless
-- `read_only`.
local function live_waiters(key, now, read_only)
  local entries = redis.call('HGETALL', key)
  local waiters = {}
  for i = 1, #entries, 2 do
    local priority, wake, expiry = string.match(entries[i + 1], '^(-?%d+):(%d+):(%d+)')
    if tonumber(expiry) <= now then
      if not read_only then
        redis.call('HDEL', key, entries[i])
      end
    else
      waiters[#waiters + 1] = {id = entries[i], priority = tonumber(priority), wake = tonumber(wake)}
    end
  end
  return waiters
end

-- Adopt the server's envelope when it is newer than the last adopted one (on an equal timestamp
-- the lower balance wins: it was charged later). Other in-flight reservations are untouched.
-- env = {ts, left, refill_in, rate}. Returns true when adopted.
local function adopt(key, history_key, state, env, now, history_every, history_len)
  if env.ts <= 0 then
    return false
  end
  if state and (env.ts < state.server_ts
                or (env.ts == state.server_ts and env.left >= state.server_left)) then
    return false
  end
  redis.call('HSET', key, 'balance', env.left, 'rate', env.rate,
             'next_tick', now + math.max(env.refill_in, 1), 'server_ts', env.ts,
             'server_left', env.left, 'synced_at', now)
  if not state or now - state.history_at >= history_every then
    redis.call('HSET', key, 'history_at', now)
    redis.call('LPUSH', history_key, string.format('%d:%d', now, env.left))
    redis.call('LTRIM', history_key, 0, history_len - 1)
  end
  return true
end

local function envelope_from(args, first)
  if args[first] == nil or args[first] == '' then
    return nil
  end
  return {ts = tonumber(args[first]), left = tonumber(args[first + 1]),
          refill_in = tonumber(args[first + 2]), rate = tonumber(args[first + 3])}
end
