"""The Lua scripts of the metrics pipeline, one per atomic operation.

Each touches only keys of one shard (one Redis Cluster hash tag), so it runs on any
Redis, Valkey or Redis Cluster. Redis runs a script atomically: what a script guarantees
below holds across every process and host sharing the store.
"""

from __future__ import annotations

from .windows import SECTIONS

# The field kinds of the sections beyond requests and payments, as Lua tables: each kind's
# type, and each head's other kinds (deleted with it from the roll).
_SECTIONS = (
    "local TYPES = {"
    + ", ".join(f"{k} = '{t}'" for fields in SECTIONS.values() for k, t in fields.items())
    + "}\nlocal GROUPS = {"
    + ", ".join(
        f"{head} = {{{', '.join(repr(k) for k in fields if k != head)}}}"
        for head, fields in SECTIONS.items()
    )
    + "}\n"
)

# How many events a raw-list element holds: a chunk says so in its header, anything else is one.
_COUNT = """
local function count_of(element)
  return tonumber(string.match(element, '^b|(%d+)\\n')) or 1
end
"""

# Push one flush batch (one chunk element) onto a shard's raw list.
# KEYS: raw list, push-dedupe key, stats hash. ARGV: raw_max, dedupe ttl, ttl, events, chunk.
# Guarantees: a retried push of the same batch id adds nothing (at-most-once per batch id);
# stats.queued counts the events in the list; past raw_max events the oldest chunks are
# trimmed and their events counted in stats.trimmed.
PUSH = (
    _COUNT
    + """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return -1 end
redis.call('LPUSH', KEYS[1], ARGV[5])
local queued = redis.call('HINCRBY', KEYS[3], 'queued', ARGV[4])
local max = tonumber(ARGV[1])
while queued > max do
  local old = redis.call('RPOP', KEYS[1])
  if not old then
    redis.call('HSET', KEYS[3], 'queued', 0)
    break
  end
  local n = count_of(old)
  queued = redis.call('HINCRBY', KEYS[3], 'queued', -n)
  redis.call('HINCRBY', KEYS[3], 'trimmed', n)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return queued
"""
)

# The raw events of a shard not aggregated yet: every claimed batch's elements, and the newest
# raw elements up to about ``budget`` events.
_PENDING = """
local function read_pending(base, leases, raw_list, budget)
  local claimed = {}
  for _, id in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    for _, element in ipairs(redis.call('LRANGE', base .. 'batch:' .. id, 0, -1)) do
      claimed[#claimed + 1] = element
    end
  end
  local raw, total, first = {}, 0, 0
  while total < budget do
    local page = redis.call('LRANGE', raw_list, first, first + 63)
    if #page == 0 then break end
    for _, element in ipairs(page) do
      raw[#raw + 1] = element
      total = total + count_of(element)
      if total >= budget then break end
    end
    first = first + 64
  end
  return claimed, raw
end
"""

# Read one shard's part of a window, atomically, without changing anything.
# KEYS: roll hash, leases zset, raw list, stats hash.
# ARGV: shard key base, window start bucket, window end bucket, the real clock's bucket,
#       how many buckets the roll may trail by, raw-event budget.
# Returns {fast, hashes, claimed batches' elements, newest raw elements, queued, trimmed
# (raw events trimmed and not yet counted in a bucket by APPLY)}: with
# fast = 1 the first hash is the roll and the others are buckets to subtract from it; with
# fast = 0 the hashes are the window's buckets, to add up.
# Guarantees: one consistent snapshot of the shard (a script runs atomically), so a batch
# being applied meanwhile is seen either in the roll or in the batches, never twice or not
# at all; it reads raw elements newest first, up to about the budget in events.
READ_SHARD = (
    _COUNT
    + _PENDING
    + """
local roll, base = KEYS[1], ARGV[1]
local start, stop, real, lag = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local rs = tonumber(redis.call('HGET', roll, '_:start') or '-1')
local fast = rs >= 0 and rs <= start and start - rs <= lag and stop >= real
local hashes = {}
if fast then
  hashes[1] = redis.call('HGETALL', roll)
  for m = rs, start - 1 do hashes[#hashes + 1] = redis.call('HGETALL', base .. 'm:' .. m) end
else
  for m = start, stop do hashes[#hashes + 1] = redis.call('HGETALL', base .. 'm:' .. m) end
end
local claimed, raw = read_pending(base, KEYS[2], KEYS[3], budget)
local queued = redis.call('HGET', KEYS[4], 'queued') or '0'
local trimmed = redis.call('HGET', KEYS[4], 'trimmed') or '0'
return {fast and 1 or 0, hashes, claimed, raw, queued, trimmed}
"""
)

# Read one shard's minute buckets of a window that changed since the caller read them, and its
# raw events not aggregated yet, atomically. KEYS: leases zset, raw list.
# ARGV: shard key base, window start bucket, window end bucket, raw-event budget, then the
#       version the caller holds of each bucket from start to end ('' = none).
# Returns {versions, hashes, claimed batches' elements, newest raw elements}: a bucket's hash
# is false when its version (``_:v``, bumped by APPLY) is the one the caller holds.
READ_MINUTES = (
    _COUNT
    + _PENDING
    + """
local base, start, stop = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local versions, hashes = {}, {}
for m = start, stop do
  local key = base .. 'm:' .. m
  local version = redis.call('HGET', key, '_:v') or ''
  versions[#versions + 1] = version
  if version == '' or version ~= ARGV[5 + m - start] then
    hashes[#hashes + 1] = redis.call('HGETALL', key)
  else
    hashes[#hashes + 1] = false
  end
end
local claimed, raw = read_pending(base, KEYS[1], KEYS[2], tonumber(ARGV[4]))
return {versions, hashes, claimed, raw}
"""
)

# Claim the oldest raw elements, up to about n events, into a batch list leased until a deadline.
# KEYS: raw list, leases zset, batch list, stats hash, batch-counts hash.
# ARGV: n, lease deadline (ms), batch id, batch ttl.
# Guarantees: each raw element moves to exactly one batch; a retried call with the same batch
# id returns the batch it already claimed instead of claiming another.
CLAIM = (
    _COUNT
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return redis.call('LRANGE', KEYS[3], 0, -1)
end
local want, total, items = tonumber(ARGV[1]), 0, {}
while total < want do
  local element = redis.call('RPOP', KEYS[1])
  if not element then break end
  items[#items + 1] = element
  total = total + count_of(element)
end
if #items == 0 then return {} end
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[5], ARGV[3], total)
redis.call('EXPIRE', KEYS[5], ARGV[4])
if redis.call('HINCRBY', KEYS[4], 'queued', -total) < 0 then
  redis.call('HSET', KEYS[4], 'queued', 0)
end
return items
"""
)

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
# KEYS: batch list, leases zset, roll hash, stats hash, batch-counts hash, totals hash.
# ARGV: shard key base, batch id ('' = only move the window), window start bucket, now
#       bucket, window buckets, bucket ttl, #api records, #payment records, #counter records,
#       #roll records, totals ttl, then records: api (bucket, endpoint, count, errors, sum_s,
#       at_or_below, bins), payment (bucket, reason, count, amount), counter (bucket, name, n), roll
#       (endpoint, count, errors, sum_s, at_or_below, bins: the api records of buckets from
#       the window start on, summed per endpoint, so the roll's bins are merged once each),
#       then #section records and section records (bucket, field, type, value) of the other
#       kinds (windows.SECTIONS), added to their bucket and to the roll, then #endpoint totals
#       and totals records (endpoint, count, errors: the api records summed per endpoint).
# Invariant: roll = sum of the buckets from roll._:start on; totals (c:, e:, pc: fields) count
# every request, error and payment failure ever applied (the /metrics counters), so they move
# with the buckets in this one step and never go down.
# Every bucket written is marked in the shard's dirty hash (minute -> writes) for the archive.
# Guarantees: all of a batch or none of it is counted, and the batch list is deleted in the
# same step, so a batch is applied at most once even when a retried call or a second
# aggregator applies it again (the second call finds no batch and returns 0).
APPLY = (
    _SECTIONS
    + """
local base, roll = ARGV[1], KEYS[3]
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
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

-- A histogram field's new value. One that does not exist yet takes the added bins as they are
-- (every writer sends them summed, with counts > 0; a reader adds up repeated bins anyway).
local function plus_bins(old, add, sign)
  if not old and sign > 0 then return add end
  return merge_bins(old, add, sign)
end

local function add_bins(key, field, add, sign)
  local merged = plus_bins(redis.call('HGET', key, field), add, sign)
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
    local t = TYPES[kind]
    if kind == 'h' or t == 'h' then
      add_bins(roll, f, v, sign)
    elseif kind == 's' or kind == 'pa' or t == 'f' then
      if sign < 0 then v = '-' .. v end
      redis.call('HINCRBYFLOAT', roll, f, v)
    elseif t == 't' then
      if sign > 0 then redis.call('HSET', roll, f, v) end
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
    elseif GROUPS[kind] then
      local group = {f}
      for _, k in ipairs(GROUPS[kind]) do group[#group + 1] = k .. ':' .. name end
      redis.call('HDEL', roll, unpack(group))
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

-- Normally the roll starts at the window start and the summed roll records apply; after the
-- clock stepped back it starts later, and each api record goes to the roll on its own.
local summed = (rs == start)
local touched = {}
local function add(b, f, v, kind, to_roll)
  local bkey = base .. 'm:' .. b
  touched[bkey] = b
  local targets = {bkey}
  if to_roll and b >= rs then targets[2] = roll end
  for _, k in ipairs(targets) do
    if kind == 'i' then
      redis.call('HINCRBY', k, f, v)
    elseif kind == 'f' then
      redis.call('HINCRBYFLOAT', k, f, v)
    elseif kind == 't' then
      redis.call('HSET', k, f, v)
    else
      add_bins(k, f, v, 1)
    end
  end
end

local totals = KEYS[6]
local i = 12
local each = not summed
for _ = 1, tonumber(ARGV[7]) do
  local b, name = tonumber(ARGV[i]), ARGV[i + 1]
  if each then
    add(b, 'c:' .. name, ARGV[i + 2], 'i', true)
    if ARGV[i + 3] ~= '0' then add(b, 'e:' .. name, ARGV[i + 3], 'i', true) end
    add(b, 's:' .. name, ARGV[i + 4], 'f', true)
    if ARGV[i + 5] ~= '0' then add(b, 'l:' .. name, ARGV[i + 5], 'i', true) end
    add(b, 'h:' .. name, ARGV[i + 6], 'h', true)
  else
    -- One read and one write of the bucket per record: its five fields, summed here.
    local bkey = base .. 'm:' .. b
    touched[bkey] = b
    local fc, fe, fs, fl, fh = 'c:' .. name, 'e:' .. name, 's:' .. name, 'l:' .. name,
      'h:' .. name
    local old = redis.call('HMGET', bkey, fc, fe, fs, fl, fh)
    local out = {fc, (tonumber(old[1]) or 0) + tonumber(ARGV[i + 2]),
      fs, string.format('%.17g', (tonumber(old[3]) or 0) + tonumber(ARGV[i + 4]))}
    local e = (tonumber(old[2]) or 0) + tonumber(ARGV[i + 3])
    if e > 0 then out[#out + 1] = fe; out[#out + 1] = e end
    local l = (tonumber(old[4]) or 0) + tonumber(ARGV[i + 5])
    if l > 0 then out[#out + 1] = fl; out[#out + 1] = l end
    local bins = plus_bins(old[5], ARGV[i + 6], 1)
    if bins ~= '' then out[#out + 1] = fh; out[#out + 1] = bins end
    redis.call('HSET', bkey, unpack(out))
  end
  i = i + 7
end
for _ = 1, tonumber(ARGV[8]) do
  local b, name = tonumber(ARGV[i]), ARGV[i + 1]
  add(b, 'pc:' .. name, ARGV[i + 2], 'i', true)
  add(b, 'pa:' .. name, ARGV[i + 3], 'f', true)
  redis.call('HINCRBY', totals, 'pc:' .. name, ARGV[i + 2])
  i = i + 4
end
for _ = 1, tonumber(ARGV[9]) do
  add(tonumber(ARGV[i]), 'x:' .. ARGV[i + 1], ARGV[i + 2], 'i', true)
  i = i + 3
end
for _ = 1, tonumber(ARGV[10]) do
  if summed then
    local name = ARGV[i]
    redis.call('HINCRBY', roll, 'c:' .. name, ARGV[i + 1])
    if ARGV[i + 2] ~= '0' then redis.call('HINCRBY', roll, 'e:' .. name, ARGV[i + 2]) end
    redis.call('HINCRBYFLOAT', roll, 's:' .. name, ARGV[i + 3])
    if ARGV[i + 4] ~= '0' then redis.call('HINCRBY', roll, 'l:' .. name, ARGV[i + 4]) end
    add_bins(roll, 'h:' .. name, ARGV[i + 5], 1)
  end
  i = i + 6
end
for _ = 1, tonumber(ARGV[i] or '0') do
  add(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 4], ARGV[i + 3], true)
  i = i + 4
end
for _ = 1, tonumber(ARGV[i + 1] or '0') do
  redis.call('HINCRBY', totals, 'c:' .. ARGV[i + 2], ARGV[i + 3])
  if ARGV[i + 4] ~= '0' then redis.call('HINCRBY', totals, 'e:' .. ARGV[i + 2], ARGV[i + 4]) end
  i = i + 3
end
local trimmed = redis.call('HGET', KEYS[4], 'trimmed')
if trimmed and tonumber(trimmed) > 0 then
  redis.call('HINCRBY', KEYS[4], 'trimmed', -tonumber(trimmed))
  add(nowb, 'x:trimmed', trimmed, 'i', true)
end
-- Each written bucket is marked dirty for the archive (history), which clears the mark only
-- if no write came after its read. The marks outlive the buckets (as long as raw lists,
-- keys.RAW_TTL_S), so a bucket that expired unarchived is reported as a gap.
local dirty = base .. 'dirty'
for k, b in pairs(touched) do
  redis.call('HINCRBY', k, '_:v', 1)  -- the bucket's version: READ_MINUTES skips unchanged ones
  redis.call('EXPIRE', k, ttl)
  redis.call('HINCRBY', dirty, b, 1)
end
if next(touched) then redis.call('EXPIRE', dirty, 604800) end
redis.call('EXPIRE', roll, ttl)
if redis.call('EXISTS', totals) == 1 then redis.call('EXPIRE', totals, ARGV[11]) end
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
end
return 1
"""
)

# Read minute buckets for the archive, with their dirty marks, in one atomic step.
# KEYS: dirty hash. ARGV: shard key base, minutes...
# Returns per minute {mark, bucket fields (HGETALL)}; a mark without a bucket is a bucket that
# expired before it was archived. Guarantees: each mark is exactly the writes seen in its
# bucket's fields, so clearing it only if unchanged (UNMARK) never drops a later write.
SNAPSHOT = """
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i]) or '0'
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'm:' .. ARGV[i])
end
return out
"""

# Clear archived dirty marks. KEYS: dirty hash. ARGV: (minute, mark read with the bucket)...
# Guarantees: a mark that changed since the read (a late write) stays, so it is archived again.
UNMARK = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""

# Write history rows if none changed since they were read (optimistic, like WATCH, but one
# script so it runs on Redis Cluster: every key carries one {h<n>} hash tag).
# KEYS: hashes written. ARGV: count, then per field: key index, field, '1' if it existed when
# read (else '0'), the value read, the new value, expire-at (unix s).
# Guarantees: either every field still holds what the caller read and all are written, or
# nothing is written (returns 0) and the caller reads and merges again.
HISTORY_CAS = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local cur = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  if ARGV[i + 2] == '0' then
    if cur then return 0 end
  elseif cur ~= ARGV[i + 3] then
    return 0
  end
  i = i + 6
end
i = 2
for _ = 1, n do
  local key = KEYS[tonumber(ARGV[i])]
  redis.call('HSET', key, ARGV[i + 1], ARGV[i + 4])
  redis.call('EXPIREAT', key, ARGV[i + 5])
  i = i + 6
end
return 1
"""
