"""The usage ledger in the Flask app: built per worker, fed by every closed request record, read
by the budgets (without Redis) and the admin pages (web/admin.py).

- `init_app` builds this worker's `Ledger` on its storage (SQLite in data_dir, or database_url's
  PostgreSQL), starts its flusher, has every closed request record noted (telemetry/request_log.py
  calls `record_closed` listeners after the access-log line), and hands the limits the ledger's
  budget counts (`Limits.local_budgets`).
- `ledger()`: this worker's ledger (the admin view reads through its storage).
- gunicorn.conf.py's `worker_exit` calls `close_app(app)`: the last flush.

`GATEWAY_USAGE_LEDGER=off` builds no ledger: for `make bench`, which measures what the ledger adds
(bench/measure/usage.py). Nothing is counted then, budgets without Redis have nothing to read, and
the admin pages answer 503.
"""

import logging
import os

from flask import Flask, current_app

from ..errors import UsageUnavailable
from ..telemetry import metrics
from .budgets import LedgerBudgets
from .ledger import Ledger
from .storage import Storage


def init_app(app: Flask, config) -> Ledger | None:
    if os.environ.get("GATEWAY_USAGE_LEDGER") == "off":
        logging.getLogger("gateway.usage").warning("GATEWAY_USAGE_LEDGER=off: no usage is counted by this worker (a measurement setting)")
        return None
    storage = Storage(config.gateway, config.secrets)
    ledger = Ledger(storage, budgets_on=config.budgets_on, on_dropped=metrics.usage_row_dropped)
    app.extensions["ledger"] = ledger
    app.extensions.setdefault("record_closed", []).append(ledger.note)
    app.extensions["limits"].local_budgets = LedgerBudgets(ledger)
    if not os.environ.get("GATEWAY_CHECK_ONLY"):  # `gunicorn --check-config` only loads the app: no flusher, no database
        ledger.start()
    return ledger


def ledger() -> Ledger:
    found = current_app.extensions.get("ledger")
    if found is None:
        raise UsageUnavailable("The usage ledger is off in this worker (GATEWAY_USAGE_LEDGER=off).")
    return found


def close_app(app) -> None:
    """Writes what this worker noted and has not written yet (at its exit)."""
    found = getattr(app, "extensions", {}).get("ledger")
    if found is not None:
        found.close()
