"""The Lua scripts Redis runs for the shared limits, and the names of the keys they use.

Each check is one script, so it is atomic and one round trip: Redis runs a script to the end
before any other command. Times come from Redis's own clock (`TIME`), in milliseconds, so the
instances' clocks never need to agree. Every key expires by itself shortly after its last use.

Keys (a user appears only as a hash: never an inbound key, an email or an id in clear):
- `llm-gateway:leases:<backend>`: a backend's global slots in use, a sorted set of lease ids
  scored by when each lease expires;
- `llm-gateway:user:{<hash>}:requests`: the user's admitted requests, scored by when;
- `llm-gateway:user:{<hash>}:tokens`: `<request id>:<total_tokens>` per answer, scored by when it
  ended, and `...:token_sum`, their running total (so a check does not add them all up).
"""

PREFIX = "llm-gateway:"


def lease_key(backend: str) -> str:
    return f"{PREFIX}leases:{backend}"


def user_keys(user_hash: str) -> tuple:
    """(requests, tokens, token_sum) of one user; the braces keep them in one cluster slot."""
    base = f"{PREFIX}user:{{{user_hash}}}:"
    return base + "requests", base + "tokens", base + "token_sum"


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

# KEYS: requests, tokens, token_sum[, a backend's leases]. ARGV: request limit, token limit (0: off),
# request id, window ms[, lease limit, lease id, lease ms]. Returns {1, 0, '', leased} and counts
# the request (and, with a fourth key, takes a lease on the backend the request goes to first
# when one is free: leased = 1; so a request needs one round trip), or {0, ms until the window
# frees, 'requests'|'tokens', 0}.
ADMIT = _NOW + _WINDOW_TOKENS + """
local window = tonumber(ARGV[4])
local since = now - window
local request_limit = tonumber(ARGV[1])
local token_limit = tonumber(ARGV[2])
if request_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= request_limit then
    -- the user is under the limit again once the (count - limit + 1)-th oldest leaves the window
    local oldest = redis.call('ZRANGE', KEYS[1], count - request_limit, count - request_limit, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + window - now, 'requests', 0}
  end
end
if token_limit > 0 then
  local total = window_tokens(KEYS[2], KEYS[3], since)
  if total >= token_limit then
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      total = total - tokens_of(entries[i])
      if total < token_limit then
        return {0, tonumber(entries[i + 1]) + window - now, 'tokens', 0}
      end
    end
    return {0, window, 'tokens', 0}
  end
end
if request_limit > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
local leased = 0
if KEYS[4] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) < tonumber(ARGV[5]) then
    local lease = tonumber(ARGV[7])
    redis.call('ZADD', KEYS[4], now + lease, ARGV[6])
    redis.call('PEXPIRE', KEYS[4], 2 * lease)
    leased = 1
  end
end
return {1, 0, '', leased}
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
