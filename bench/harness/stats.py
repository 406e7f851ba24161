"""Percentiles and units, as every figure of the benchmark uses them."""


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[index]


def ms(seconds):
    return seconds * 1000
