"""The rows, their verdicts, and the printed table.

Every section's `rows()` (bench/measure/) builds its rows with `row()`: the figure, the gateway's
median, the spread of the repeats (min to max), what it is compared with, the target and the
verdict (`met`, or `missed by X`). `print_table` prints them under a header naming the machine;
`aligned` lines up any table's columns (the soak's too).
"""


def spread(values, fmt) -> str:
    return f"{fmt(min(values))} to {fmt(max(values))}" if len(values) > 1 else ""


def _miss(amount, unit_fmt) -> str:
    """`unit_fmt(amount)`, unless that rounds to zero: then the amount with the digits it needs."""
    text = unit_fmt(amount)
    if any(c in "123456789" for c in text.split(" ")[0]):
        return text
    return unit_fmt(0).replace(unit_fmt(0).split(" ")[0].rstrip("x%"), f"{amount:.2g}", 1)


def verdict_at_most(value, limit, unit_fmt) -> tuple:
    return (True, "met") if value <= limit else (False, f"missed by {_miss(value - limit, unit_fmt)}")


def verdict_at_least(value, limit, unit_fmt) -> tuple:
    return (True, "met") if value >= limit else (False, f"missed by {_miss(limit - value, unit_fmt)}")


def row(figure, value, spread_text="", compared="", target="", verdict=(None, "")) -> dict:
    return {"figure": figure, "gateway": value, "spread": spread_text, "compared": compared, "target": target, "ok": verdict[0], "verdict": verdict[1]}


def aligned(cells) -> list:
    """Rows of cells (strings) as lines: each column as wide as its widest cell, two spaces apart."""
    width = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    return ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(c)).rstrip() for c in cells]


def print_table(r, rows) -> None:
    m = r["machine"]
    head = ("figure", "gateway (median)", "spread (min to max)", "compared with", "target", "verdict")
    cells = [head] + [(x["figure"], x["gateway"], x["spread"], x["compared"], x["target"], x["verdict"]) for x in rows]
    print()
    print(f"llm-gateway benchmark{' (QUICK: small sizes, verdicts indicative only)' if r['quick'] else ''}: {m['date']}, {m['cpu']}, "
          f"{m['cores']} cores, Python {m['python']}; {m['seconds']} s; other processes kept {m.get('other_processes_cores', float('nan')):.2f} cores busy on average")
    for line in aligned(cells):
        print(line)
