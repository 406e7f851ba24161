"""UTC days and months as the ledger and the budgets name them, and when they end.

A day is `2026-12-06`, a month `2026-12`: text that sorts in time order, in SQLite and PostgreSQL
alike. No Flask and no database here.
"""

import calendar
import datetime
import time

_UTC = datetime.timezone.utc


# The UTC day last asked about: (its first second, the next day's, its text, its month's text).
# Every request asks (the ledger, the budgets), nearly always about the same day. One tuple,
# replaced whole: threads (another WSGI server) never see one day's bounds with another's text.
_last_day = (0, 0, "", "")


def _day(when: float) -> tuple:
    global _last_day
    day = _last_day
    if not day[0] <= when < day[1]:
        t = time.gmtime(when)
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        day = _last_day = (start, start + 86400, time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t))
    return day


def day_of(when: float) -> str:
    return _day(when)[2]


def month_of(when: float) -> str:
    return _day(when)[3]


def next_start(period: str, when: float) -> datetime.datetime:
    """When the UTC day (`period = "day"`) or month (`"month"`) that contains `when` ends."""
    moment = datetime.datetime.fromtimestamp(when, _UTC)
    if period == "day":
        return datetime.datetime(moment.year, moment.month, moment.day, tzinfo=_UTC) + datetime.timedelta(days=1)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return datetime.datetime(moment.year, moment.month, 1, tzinfo=_UTC) + datetime.timedelta(days=days)


def seconds_until_reset(period: str, when: float) -> int:
    """Whole seconds from `when` to the next UTC day or month start (at least 1): a Retry-After."""
    return max(1, int(next_start(period, when).timestamp() - when + 0.999))


def parse_day(text: str) -> datetime.date | None:
    """`YYYY-MM-DD` as a date, else None."""
    try:
        return datetime.date.fromisoformat(text) if isinstance(text, str) and len(text) == 10 else None
    except ValueError:
        return None


def days_back(when: float, count: int) -> list:
    """The `count` UTC days up to and including the one of `when`, oldest first."""
    today = datetime.datetime.fromtimestamp(when, _UTC).date()
    return [(today - datetime.timedelta(days=n)).isoformat() for n in range(count - 1, -1, -1)]
