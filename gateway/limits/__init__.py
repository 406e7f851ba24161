"""Limits that hold across workers and instances: `global_max_concurrency` and [limits], in Redis.

- `admission.py`  `Limits`, one per worker: the per-user check at a request's start, its tokens at
                  the end, the global slots, the status; `user_key` (whom a user limit counts)
- `leases.py`     global slots as expiring leases, renewed together while requests run
- `store.py`      the Redis client: bounded waits, reachable or not, reconnecting, one line each way
- `scripts.py`    the Lua scripts (one atomic round trip per check) and the key names
- `local.py`      the same per-user rules held by one worker (no Redis, or Redis away with "open")
- `web.py`        the Flask side: built per worker, the chat view's one line, the status fields
"""
