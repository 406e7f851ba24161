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
