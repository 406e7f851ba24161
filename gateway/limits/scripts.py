"""The Lua scripts Redis runs for the shared limits, and the names of the keys they use.

Each check is one script, so it is atomic and one round trip: Redis runs a script to the end
before any other command. Times come from Redis's own clock (`TIME`), in milliseconds, so the
instances' clocks never need to agree. Every key expires by itself shortly after its last use.

Keys (a user appears only as a hash: never an inbound key, an email or an id in clear):
- `llm-gateway:leases:<backend>`: a backend's global slots in use, a sorted set of lease ids
  scored by when each lease expires;
- `llm-gateway:user:{<hash>}:requests`: the user's admitted requests, scored by when;
- `llm-gateway:user:{<hash>}:tokens`: `<request id>:<total_tokens>` per answer, scored by when it
  ended, and `...:token_sum`, their running total (so a check does not add them all up);
- `llm-gateway:key:{<hash>}:requests`: a named key's admitted requests, scored by when;
- `llm-gateway:budget:{<hash>}:<day or month>`: the tokens a key or a user used in that UTC period
  (gateway/usage/budgets.py), seeded from the usage ledger when missing (a Redis restarted empty).
"""

import hashlib

PREFIX = "llm-gateway:"


def lease_key(backend: str) -> str:
    return f"{PREFIX}leases:{backend}"


def user_keys(user_hash: str) -> tuple:
    """(requests, tokens, token_sum) of one user; the braces keep them in one cluster slot."""
    base = f"{PREFIX}user:{{{user_hash}}}:"
    return base + "requests", base + "tokens", base + "token_sum"


def key_requests_key(key_name: str) -> str:
    """A named key's window of admitted requests (requests_per_minute)."""
    digest = hashlib.sha256(f"key\0{key_name}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}key:{{{digest}}}:requests"


_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# The tokens counted in the window, after dropping entries older than it. The running sum is
# rebuilt from the entries if it is missing, and cleared when no entry is left.
_WINDOW_TOKENS = """
local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end
local function window_tokens(entries, sum, since)
  local expired = redis.call('ZRANGEBYSCORE', entries, '-inf', since)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', entries, '-inf', since)
  end
  if redis.call('ZCARD', entries) == 0 then
    redis.call('DEL', sum)
    return 0
  end
  local stored = redis.call('GET', sum)
  local total = 0
  if stored then
    total = tonumber(stored)
    for _, member in ipairs(expired) do total = total - tokens_of(member) end
  else
    for _, member in ipairs(redis.call('ZRANGE', entries, 0, -1)) do total = total + tokens_of(member) end
  end
  if #expired > 0 or not stored then
    -- the sum lives exactly as long as the entries it adds up
    local ttl = redis.call('PTTL', entries)
    if ttl > 0 then redis.call('SET', sum, total, 'PX', ttl) else redis.call('SET', sum, total) end
  end
  return total
end
"""

# KEYS: the user's requests, tokens, token_sum; the key's requests; n budget counters[; a backend's
# leases]. ARGV: user request limit, user token limit (0: off), request id, window ms, key request
# limit (0: off), n, then per budget its limit, its seed (the ledger's count, used when the counter
# is missing) and its expiry in seconds[, then lease limit, lease id, lease ms].
# Returns {1, 0, '', leased, 0} and counts the request (and, with a lease key, takes a lease on the
# backend the request goes to first when one is free: leased = 1; so a request needs one round
# trip), or {0, ms until the window frees, 'requests'|'tokens'|'key_requests'|'budget', 0, which
# budget (1-based)}. Nothing is counted unless every check passes.
ADMIT = _NOW + _WINDOW_TOKENS + """
local window = tonumber(ARGV[4])
local since = now - window
local request_limit = tonumber(ARGV[1])
local token_limit = tonumber(ARGV[2])
local key_limit = tonumber(ARGV[5])
local budgets = tonumber(ARGV[6])
for b = 1, budgets do
  local counter = KEYS[4 + b]
  local at = 6 + (b - 1) * 3
  local used = redis.call('GET', counter)
  if not used then
    used = ARGV[at + 2]
    redis.call('SET', counter, used, 'EX', tonumber(ARGV[at + 3]), 'NX')
  end
  if tonumber(used) >= tonumber(ARGV[at + 1]) then
    return {0, 0, 'budget', 0, b}
  end
end
if key_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', since)
  local count = redis.call('ZCARD', KEYS[4])
  if count >= key_limit then
    local oldest = redis.call('ZRANGE', KEYS[4], count - key_limit, count - key_limit, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now, 'key_requests', 0, 0}
  end
end
if request_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= request_limit then
    -- the user is under the limit again once the (count - limit + 1)-th oldest leaves the window
    local oldest = redis.call('ZRANGE', KEYS[1], count - request_limit, count - request_limit, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now, 'requests', 0, 0}
  end
end
if token_limit > 0 then
  local total = window_tokens(KEYS[2], KEYS[3], since)
  if total >= token_limit then
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      total = total - tokens_of(entries[i])
      if total < token_limit then
        return {0, tonumber(entries[i + 1]) + window - now, 'tokens', 0, 0}
      end
    end
    return {0, window, 'tokens', 0, 0}
  end
end
if request_limit > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if key_limit > 0 then
  redis.call('ZADD', KEYS[4], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[4], window + 1000)
end
local leased = 0
local lease_key = KEYS[5 + budgets]
if lease_key then
  local at = 7 + budgets * 3
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
  if redis.call('ZCARD', lease_key) < tonumber(ARGV[at]) then
    local lease = tonumber(ARGV[at + 2])
    redis.call('ZADD', lease_key, now + lease, ARGV[at + 1])
    redis.call('PEXPIRE', lease_key, 2 * lease)
    leased = 1
  end
end
return {1, 0, '', leased, 0}
"""

# KEYS: tokens, token_sum. ARGV: "<request id>:<tokens>", tokens, window ms.
COUNT_TOKENS = _NOW + _WINDOW_TOKENS + """
local window = tonumber(ARGV[3])
local total = window_tokens(KEYS[1], KEYS[2], now - window) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window + 1000)
redis.call('SET', KEYS[2], total, 'PX', window + 1000)
return total
"""

# KEYS: budget counters. ARGV: tokens, then each counter's expiry in seconds. Adds the tokens of
# one answer to each (a counter that is missing starts from them).
COUNT_BUDGETS = """
local tokens = tonumber(ARGV[1])
for k = 1, #KEYS do
  redis.call('INCRBY', KEYS[k], tokens)
  redis.call('EXPIRE', KEYS[k], tonumber(ARGV[k + 1]))
end
return #KEYS
"""

# KEYS: a backend's leases. ARGV: limit, lease id, lease ms. Returns 1 (taken) or 0 (all in use).
TAKE_LEASE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * lease)
return 1
"""

# KEYS: backends' leases. ARGV: lease ms, then per key: how many ids, the ids. Extends each
# lease (and puts it back after a Redis restart: a running request holds its slot for real).
RENEW_LEASES = _NOW + """
local lease = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  for j = 1, n do
    redis.call('ZADD', KEYS[k], now + lease, ARGV[i])
    i = i + 1
  end
  redis.call('PEXPIRE', KEYS[k], 2 * lease)
end
return #KEYS
"""

# KEYS: backends' leases. Returns the number of unexpired leases of each.
COUNT_LEASES = _NOW + """
local counts = {}
for k = 1, #KEYS do
  counts[k] = redis.call('ZCOUNT', KEYS[k], '(' .. now, '+inf')
end
return counts
"""
