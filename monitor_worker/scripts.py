"""The Lua scripts of the metrics pipeline, one per atomic operation.

Each touches only keys of one shard (one Redis Cluster hash tag), so it runs on any
Redis, Valkey or Redis Cluster. Redis runs a script atomically: what a script guarantees
below holds across every process and host sharing the store.
"""

from __future__ import annotations

# Push one flush batch onto a shard's raw list.
# KEYS: raw list, push-dedupe key, stats hash. ARGV: raw_max, dedupe ttl, entries...
# Guarantees: a retried push of the same batch id adds nothing (at-most-once per batch id);
# the list never exceeds raw_max (the oldest are trimmed and counted in stats.trimmed).
PUSH = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return -1 end
local len = 0
for i = 3, #ARGV, 1000 do
  len = redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local max = tonumber(ARGV[1])
if len > max then
  redis.call('LTRIM', KEYS[1], 0, max - 1)
  redis.call('HINCRBY', KEYS[3], 'trimmed', len - max)
end
return len
"""

# Claim up to n of the oldest raw events into a batch list leased until a deadline.
# KEYS: raw list, leases zset, batch list. ARGV: n, lease deadline (ms), batch id, batch ttl.
# Guarantees: each raw event moves to exactly one batch; a retried call with the same batch
# id returns the batch it already claimed instead of claiming another.
CLAIM = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return redis.call('LRANGE', KEYS[3], 0, -1)
end
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], -n, -1)
if #items == 0 then return {} end
redis.call('LTRIM', KEYS[1], 0, -#items - 1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return items
"""

# Take over one batch whose lease ran out (its aggregator died or stalled).
# KEYS: leases zset. ARGV: now (ms), new deadline (ms).
# Guarantees: an expired batch is handed to one caller at a time; applying stays idempotent.
RECLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
return ids[1]
"""

# Admit names under a cardinality cap. KEYS: admitted set. ARGV: cap, ttl, names...
# Returns 1/0 per name. Guarantees: the set never holds more than cap names.
ADMIT = """
local cap = tonumber(ARGV[1])
local out = {}
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = 1
  elseif redis.call('SCARD', KEYS[1]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return out
"""

# Apply one folded batch to the minute buckets and the rolling window, then delete it.
# KEYS: batch list, leases zset, roll hash, stats hash.
# ARGV: shard key base, batch id ('' = only move the window), window start bucket, now
#       bucket, window buckets, bucket ttl, #api records, #payment records, #counter records,
#       then records: api (bucket, endpoint, count, errors, sum_s, at_or_below, bins),
#       payment (bucket, reason, count, amount), counter (bucket, name, n).
# Invariant: roll = sum of the buckets from roll._:start on.
# Guarantees: all of a batch or none of it is counted, and the batch list is deleted in the
# same step, so a batch is applied at most once even when a retried call or a second
# aggregator applies it again (the second call finds no batch and returns 0).
APPLY = """
local base, roll = ARGV[1], KEYS[3]
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 0
end
local start, nowb, wb, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

local function merge_bins(old, add, sign)
  local t = {}
  if old then
    for i, n in string.gmatch(old, '(-?%d+):(%d+)') do t[i] = (t[i] or 0) + tonumber(n) end
  end
  for i, n in string.gmatch(add, '(-?%d+):(%d+)') do t[i] = (t[i] or 0) + sign * tonumber(n) end
  local out = {}
  for i, n in pairs(t) do
    if n > 0 then out[#out + 1] = i .. ':' .. string.format('%d', n) end
  end
  return table.concat(out, ',')
end

local function add_bins(key, field, add, sign)
  local merged = merge_bins(redis.call('HGET', key, field), add, sign)
  if merged == '' then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, merged)
  end
end

local function add_hash(src, sign)
  local dead = {}
  for j = 1, #src, 2 do
    local f, v = src[j], src[j + 1]
    local kind = string.match(f, '^([^:]*):')
    if kind == 'h' then
      add_bins(roll, f, v, sign)
    elseif kind == 's' or kind == 'pa' then
      if sign < 0 then v = '-' .. v end
      redis.call('HINCRBYFLOAT', roll, f, v)
    elseif kind and kind ~= '_' then
      if redis.call('HINCRBY', roll, f, sign * tonumber(v)) <= 0 then dead[#dead + 1] = f end
    end
  end
  for _, f in ipairs(dead) do
    local kind, name = string.match(f, '^([^:]*):(.*)$')
    if kind == 'c' then
      redis.call('HDEL', roll, f, 'e:' .. name, 's:' .. name, 'l:' .. name, 'h:' .. name)
    elseif kind == 'pc' then
      redis.call('HDEL', roll, f, 'pa:' .. name)
    elseif kind == 'x' then
      redis.call('HDEL', roll, f)
    end
  end
end

local rs = tonumber(redis.call('HGET', roll, '_:start') or '-1')
if rs < 0 or start - rs > wb then
  redis.call('DEL', roll)
  for m = start, nowb + 1 do add_hash(redis.call('HGETALL', base .. 'm:' .. m), 1) end
  redis.call('HSET', roll, '_:start', start)
  rs = start
elseif start > rs then
  for m = rs, start - 1 do add_hash(redis.call('HGETALL', base .. 'm:' .. m), -1) end
  redis.call('HSET', roll, '_:start', start)
  rs = start
end

local touched = {}
local function add(b, f, v, kind)
  local bkey = base .. 'm:' .. b
  touched[bkey] = true
  local targets = {bkey}
  if b >= rs then targets[2] = roll end
  for _, k in ipairs(targets) do
    if kind == 'i' then
      redis.call('HINCRBY', k, f, v)
    elseif kind == 'f' then
      redis.call('HINCRBYFLOAT', k, f, v)
    else
      add_bins(k, f, v, 1)
    end
  end
end

local i = 10
for _ = 1, tonumber(ARGV[7]) do
  local b, name = tonumber(ARGV[i]), ARGV[i + 1]
  add(b, 'c:' .. name, ARGV[i + 2], 'i')
  if ARGV[i + 3] ~= '0' then add(b, 'e:' .. name, ARGV[i + 3], 'i') end
  add(b, 's:' .. name, ARGV[i + 4], 'f')
  if ARGV[i + 5] ~= '0' then add(b, 'l:' .. name, ARGV[i + 5], 'i') end
  add(b, 'h:' .. name, ARGV[i + 6], 'h')
  i = i + 7
end
for _ = 1, tonumber(ARGV[8]) do
  local b, name = tonumber(ARGV[i]), ARGV[i + 1]
  add(b, 'pc:' .. name, ARGV[i + 2], 'i')
  add(b, 'pa:' .. name, ARGV[i + 3], 'f')
  i = i + 4
end
for _ = 1, tonumber(ARGV[9]) do
  add(tonumber(ARGV[i]), 'x:' .. ARGV[i + 1], ARGV[i + 2], 'i')
  i = i + 3
end
local trimmed = redis.call('HGET', KEYS[4], 'trimmed')
if trimmed and tonumber(trimmed) > 0 then
  redis.call('HINCRBY', KEYS[4], 'trimmed', -tonumber(trimmed))
  add(nowb, 'x:trimmed', trimmed, 'i')
end
for k in pairs(touched) do redis.call('EXPIRE', k, ttl) end
redis.call('EXPIRE', roll, ttl)
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
"""
