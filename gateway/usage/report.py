"""What the admin pages show, from the ledger's rows (storage.py `report`): the period asked for,
the chart's series, the top users and keys with their budgets, the CSV. No Flask and no database.
"""

import csv
import dataclasses
import datetime
import io

from ..errors import InvalidRequest
from .periods import day_of, days_back, month_of, parse_day
from .storage import GROUPS, NUMBERS

MAX_DAYS = 366  # the longest period one request may ask for
CHART_DAYS = 30
CHART_MODELS = 6  # the largest models get a colour each; the rest are added up as "other models"
TOP = 10


@dataclasses.dataclass(frozen=True)
class Query:
    first: str  # YYYY-MM-DD, inclusive
    last: str
    group_by: tuple


def parse_query(args, now: float, default_group_by=tuple(GROUPS)) -> Query:
    """`from`, `to` (YYYY-MM-DD, UTC, inclusive; default: the 30 days up to today) and `group_by`
    (a comma-separated list of day, user, key, model, backend) as a Query; a 400 naming the bad
    parameter otherwise."""
    today = parse_day(day_of(now))
    last = _day(args, "to", today)
    first = _day(args, "from", last - datetime.timedelta(days=CHART_DAYS - 1))
    if first > last:
        raise InvalidRequest(f"Invalid request: 'from' ({first}) is after 'to' ({last}).", param="from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"Invalid request: a period is at most {MAX_DAYS} days; {first} to {last} is {(last - first).days + 1}.", param="from")
    group_by = default_group_by
    if args.get("group_by") is not None:
        group_by = tuple(dict.fromkeys(name.strip() for name in args["group_by"].split(",") if name.strip()))
        unknown = [name for name in group_by if name not in GROUPS]
        if unknown:
            raise InvalidRequest(f"Invalid request: 'group_by' may name {', '.join(GROUPS)}; not {unknown[0]!r}.", param="group_by")
    return Query(first.isoformat(), last.isoformat(), group_by)


def _day(args, name: str, default: datetime.date) -> datetime.date:
    text = args.get(name)
    if text is None or text == "":
        return default
    day = parse_day(text)
    if day is None:
        raise InvalidRequest(f"Invalid request: '{name}' must be a date as YYYY-MM-DD (UTC), not {text[:40]!r}.", param=name)
    return day


def totals(rows) -> dict:
    return {name: sum(row[name] for row in rows) for name in NUMBERS}


def chart_series(rows, now: float) -> tuple:
    """(days, series): the last CHART_DAYS UTC days, and [(model, [tokens per day])] for the
    largest models, then "other models" when there are more; from rows grouped by day and model."""
    days = days_back(now, CHART_DAYS)
    index = {day: n for n, day in enumerate(days)}
    per_model = {}
    for row in rows:
        if row["day"] in index and row["total_tokens"]:
            per_model.setdefault(row["model"], [0] * len(days))[index[row["day"]]] += row["total_tokens"]
    ranked = sorted(per_model.items(), key=lambda item: (-sum(item[1]), item[0]))
    series = ranked[:CHART_MODELS]
    if len(ranked) > CHART_MODELS:
        other = [sum(values[n] for _, values in ranked[CHART_MODELS:]) for n in range(len(days))]
        series.append(("other models", other))
    return days, series


def with_budgets(rows, whose: str, limit_of, used: dict, now: float) -> list:
    """The top rows (grouped by user or key) with each one's budgets: dicts with `day` and
    `month` = {"used", "limit"} (limit 0: none), today's and this month's tokens from `used`
    ((period, subject) -> tokens, storage.py `totals`). `limit_of(name)` -> (per day, per month)."""
    today, month = day_of(now), month_of(now)
    found = []
    for row in rows[:TOP]:
        name = row[whose]
        per_day, per_month = limit_of(name)
        subject = f"{whose}:{name}"
        found.append({**row, "budget": {
            "day": {"used": used.get((today, subject), 0), "limit": per_day},
            "month": {"used": used.get((month, subject), 0), "limit": per_month},
        }})
    return found


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def as_csv(rows, group_by) -> str:
    """The rows as CSV, a header first. A cell that a spreadsheet would run as a formula (a user
    name starting with `=`) is written with a leading `'`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*group_by, *NUMBERS])
    for row in rows:
        writer.writerow([_cell(row[name]) for name in group_by] + [row[name] for name in NUMBERS])
    return out.getvalue()


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
