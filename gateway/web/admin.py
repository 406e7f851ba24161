"""The admin blueprint: /admin/usage (a page), /admin/usage.json and /admin/usage.csv, the usage
ledger for whoever holds one of `[gateway] admin_keys`.

- No admin_keys configured: the blueprint is not registered, so /admin/* is a 404 like any
  unknown path.
- The key comes as `Authorization: Bearer <key>`, or as HTTP Basic auth with any user name and
  the key as password (what a browser sends after its login prompt). None, or a wrong one: 401
  with `WWW-Authenticate: Basic`, so a browser asks. An inbound API key (api_keys, [keys.NAME]):
  403, it is known but not an admin's. Compared in constant time (web/access.py).
- Every number comes from the ledger (gateway/usage/): keys by NAME, users as the ledger names
  them, never a key or another secret.
"""

import base64
import binascii
import datetime
import time

from flask import Blueprint, Flask, Response, current_app, render_template, request

from ..errors import Forbidden, Unauthorized, UsageUnavailable
from ..usage import report
from ..usage.storage import GROUPS, NUMBERS, StorageDown
from ..usage.web import ledger
from .access import matching, presented_key
from .charts import USAGE_COLOURS, short_number, usage_axis, usage_chart
from .responses import json_response

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.add_app_template_global(usage_chart)
bp.add_app_template_global(USAGE_COLOURS, "colours")
bp.add_app_template_global(usage_axis)
bp.add_app_template_global(short_number)
CHALLENGE = {"WWW-Authenticate": 'Basic realm="llm-gateway admin", charset="UTF-8"'}


def init_app(app: Flask, config) -> None:
    if not config.gateway.admin_keys:
        return  # /admin/* stays a 404
    app.extensions["admin_keys"] = tuple(key.encode("utf-8") for key in config.gateway.admin_keys)
    app.extensions["admin_config"] = config
    app.register_blueprint(bp)


def _presented(authorization: str | None) -> bytes | None:
    """The key of a Bearer header, or the password of a Basic one."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return presented_key(authorization)


@bp.before_request
def require_admin_key():
    presented = _presented(request.headers.get("Authorization"))
    if presented is None:
        raise Unauthorized("The admin pages need an admin key: as 'Authorization: Bearer <key>', or as the password of HTTP Basic auth.", headers=CHALLENGE)
    if matching(presented, current_app.extensions["admin_keys"]) is not None:
        return None
    try:  # an inbound API key is known, but not an admin's
        current_app.extensions["api_keys"].check("Bearer " + presented.decode("utf-8", errors="replace"))
    except Unauthorized:
        raise Unauthorized("This is not an admin key of this gateway ([gateway] admin_keys).", headers=CHALLENGE) from None
    if not current_app.extensions["api_keys"].configured:
        raise Unauthorized("This is not an admin key of this gateway ([gateway] admin_keys).", headers=CHALLENGE)
    raise Forbidden("This API key may use the models, not the admin pages: those need one of [gateway] admin_keys.")


def _rows(query: report.Query) -> list:
    """The ledger's rows for the query, with what this worker noted written first."""
    book = ledger()
    try:
        book.flush()
        return book.storage.report(query.first, query.last, query.group_by)
    except StorageDown:
        raise UsageUnavailable(f"The usage ledger's database ({book.storage.where}) cannot be read right now; retry shortly.") from None


@bp.get("/usage.json")
def usage_json():
    query = report.parse_query(request.args, time.time())
    rows = _rows(query)
    return json_response({"from": query.first, "to": query.last, "group_by": list(query.group_by), "totals": report.totals(rows), "rows": rows})


@bp.get("/usage.csv")
def usage_csv():
    query = report.parse_query(request.args, time.time())
    text = report.as_csv(_rows(query), query.group_by)
    name = f"usage-{query.first}-to-{query.last}.csv"
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/usage")
def usage_page():
    now = time.time()
    query = report.parse_query(request.args, now, default_group_by=())
    config = current_app.extensions["admin_config"]
    book = ledger()
    chart_query = report.Query(report.days_back(now, report.CHART_DAYS)[0], report.day_of(now), ("day", "model"))
    rows = {name: _rows(report.Query(query.first, query.last, (name,))) for name in ("user", "key", "model")}
    chart_rows = _rows(chart_query)
    try:
        used = book.storage.totals((report.day_of(now), report.month_of(now)))
    except StorageDown:
        raise UsageUnavailable(f"The usage ledger's database ({book.storage.where}) cannot be read right now; retry shortly.") from None

    def user_limits(name):
        settings = config.limits.for_user((name,))
        return settings["tokens_per_day"], settings["tokens_per_month"]

    def key_limits(name):
        key = config.keys.get(name)
        return (key.tokens_per_day, key.tokens_per_month) if key else (0, 0)

    days, series = report.chart_series(chart_rows, now)
    page = {
        "query": query,
        "totals": report.totals(rows["model"]),
        "user_rows": report.with_budgets(rows["user"], "user", user_limits, used, now),
        "key_rows": report.with_budgets([row for row in rows["key"] if row["key"]], "key", key_limits, used, now),
        "anonymous": next((row for row in rows["key"] if not row["key"]), None),
        "models": rows["model"][: report.TOP],
        "days": days,
        "series": series,
        "top_day": max((sum(values[n] for _, values in series) for n in range(len(days))), default=0),
        "storage": book.storage.where,
        "presets": _presets(now),
        "groups": list(GROUPS),
        "numbers": NUMBERS,
    }
    return render_template("admin_usage.html", page=page)


def _presets(now: float) -> list:
    """The period picker's shortcuts: (label, from, to)."""
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    month_start = today.replace(day=1)
    last_month_end = month_start - datetime.timedelta(days=1)
    return [
        ("today", today, today),
        ("last 7 days", today - datetime.timedelta(days=6), today),
        ("last 30 days", today - datetime.timedelta(days=29), today),
        ("this month", month_start, today),
        ("last month", last_month_end.replace(day=1), last_month_end),
    ]
