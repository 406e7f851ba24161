"""The status page's small charts, drawn on the server as inline SVG: nothing to load from
anywhere, nothing to run in the browser, and the page still reads as text without them.

Each chart is one minute per column over the last hour (oldest on the left), scaled to its own
largest value, with a title that says the same in words for people and screen readers.
"""

from markupsafe import Markup, escape

_WIDTH, _HEIGHT = 120, 32  # viewBox units; the SVG stretches to its box's width


def _scale(values) -> float:
    top = max((v for v in values if v), default=0)
    return (_HEIGHT - 2) / top if top else 0.0


def calls_chart(requests: list, errors: list) -> Markup:
    """Calls per minute as grey bars, the failed part of each in red."""
    scale = _scale(requests)
    step = _WIDTH / max(1, len(requests))
    bars = []
    for index, (total, failed) in enumerate(zip(requests, errors)):
        if not total:
            continue
        x = index * step
        height = max(1.0, total * scale)
        bars.append(f'<rect class="calls" x="{x:.2f}" y="{_HEIGHT - height:.2f}" width="{step * 0.8:.2f}" height="{height:.2f}"/>')
        if failed:
            bad = max(1.0, failed * scale)
            bars.append(f'<rect class="failed" x="{x:.2f}" y="{_HEIGHT - bad:.2f}" width="{step * 0.8:.2f}" height="{bad:.2f}"/>')
    words = f"last hour: {sum(requests)} calls, {sum(errors)} failed; busiest minute {max(requests, default=0)}"
    return _svg("calls", words, "".join(bars))


def latency_chart(p95: list) -> Markup:
    """First-byte p95 per minute as a line; minutes without traffic leave a gap."""
    scale = _scale(p95)
    step = _WIDTH / max(1, len(p95))
    lines, points = [], []
    for index, value in enumerate([*p95, None]):
        if value is None:
            if len(points) == 1:  # a lone minute: a dot, so it is seen
                x, y = points[0]
                lines.append(f'<circle class="latency" cx="{x}" cy="{y}" r="1"/>')
            elif points:
                lines.append(f'<polyline class="latency" points="{" ".join(f"{x},{y}" for x, y in points)}"/>')
            points = []
            continue
        points.append((f"{index * step + step * 0.4:.2f}", f"{_HEIGHT - 1 - value * scale:.2f}"))
    known = [v for v in p95 if v is not None]
    words = f"last hour: first byte p95 per minute, highest {max(known) * 1000:,.0f} ms" if known else "last hour: no traffic"
    return _svg("latency", words, "".join(lines))


def _svg(kind: str, words: str, shapes: str) -> Markup:
    return Markup(
        f'<svg class="chart {kind}" viewBox="0 0 {_WIDTH} {_HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(words)}"><title>{escape(words)}</title>{shapes}</svg>'
    )


# --- the admin's usage page (web/admin.py) --------------------------------------------------------

USAGE_COLOURS = ("#1f4fa3", "#2e9d6a", "#d9822b", "#8e44ad", "#c0392b", "#16a2b8", "#9aa5b8")  # the last: "other models"
_USAGE_WIDTH, _USAGE_HEIGHT = 300, 100  # viewBox units; stretched to the box (its labels are HTML: text would stretch)


def short_number(number: int) -> str:
    """12,400 as 12.4k, 3,000,000 as 3M: an axis label."""
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if number >= size:
            return f"{number / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(number)


def usage_chart(days: list, series: list) -> Markup:
    """Tokens per day as bars stacked by model (`series`: [(model, [tokens per day])], colours in
    USAGE_COLOURS order), the oldest day on the left, scaled to the busiest day; each bar's
    title names its day, model and tokens."""
    per_day = [sum(values[n] for _, values in series) for n in range(len(days))]
    top = max(per_day, default=0)
    scale = (_USAGE_HEIGHT - 2) / top if top else 0.0
    step = _USAGE_WIDTH / max(1, len(days))
    shapes = []
    for n, day in enumerate(days):
        x, y = n * step + step * 0.1, float(_USAGE_HEIGHT)
        for index, (model, values) in enumerate(series):
            if values[n]:
                height = max(0.5, values[n] * scale)
                y -= height
                colour = USAGE_COLOURS[min(index, len(USAGE_COLOURS) - 1)]
                shapes.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{step * 0.8:.2f}" height="{height:.2f}" fill="{colour}">'
                              f'<title>{escape(day)} · {escape(model)}: {values[n]:,} tokens</title></rect>')
    busiest = days[per_day.index(top)] if top else None
    words = (f"tokens per day, {days[0]} to {days[-1]}: {sum(per_day):,} in all, the most on {busiest} ({top:,})"
             if top else f"tokens per day, {days[0]} to {days[-1]}: none yet") if days else "no days"
    return Markup(
        f'<svg class="usage-chart" viewBox="0 0 {_USAGE_WIDTH} {_USAGE_HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(words)}"><title>{escape(words)}</title>{"".join(shapes)}</svg>'
    )


def usage_axis(days: list) -> list:
    """The chart's day labels, one a week ending on the last day: (left edge in %, "MM-DD", last?)."""
    step = 100 / max(1, len(days))
    return [(round(n * step + step / 2, 2), day[5:], n == len(days) - 1) for n, day in enumerate(days) if (len(days) - 1 - n) % 7 == 0]
