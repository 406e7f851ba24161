"""What the code offers operators is in the manual: every metric `/metrics` exposes, with each of
its labels, in docs/operations.md's table (and nothing there that is not exposed); every
environment variable the gateway reads, in docs/configuration.md (or named below as internal).
An audit found both out of date once (a label and a variable added without a line)."""

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from gateway.telemetry import metrics

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PRODUCT = [*sorted((ROOT / "gateway").rglob("*.py")), ROOT / "gunicorn.conf.py", ROOT / "app.py", ROOT / "wsgi.py"]

# Read by the gateway, set by nobody but itself or its tests: not for operators.
INTERNAL_VARIABLES = {
    "GATEWAY_ANNOUNCED_BY": "the master tells its workers it has printed the start-up lines",
    "GATEWAY_CHECK_ONLY": "`make check` builds the app without starting its background work",
    "GATEWAY_CONFIG_SNAPSHOT": "the master hands its workers the config text it checked",
    "GATEWAY_RUN_DIR": "the master's run folder (metrics files, health verdicts), for its workers",
    "GATEWAY_STARTED_AT": "the master's start, for the status page's uptime",
    "GATEWAY_DISCOVERY_INTERVAL": "tests shorten model discovery's 300 s",
    "GATEWAY_LEASE_SECONDS": "tests shorten the 30 s Redis lease",
    "GATEWAY_USAGE_LEDGER": "`make bench` turns the ledger off to measure what it costs (performance.md)",
}


def exposed_metrics() -> dict:
    """Name as /metrics shows it -> its label names."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            suffix = "_total" if value._type == "counter" else ""
            found[value._name + suffix] = set(value._labelnames)
    return found


def documented_metrics() -> dict:
    """Each name in the first column of operations.md's metric table -> the text of its row's labels cell."""
    table = OPERATIONS.read_text(encoding="utf-8").split("| metric | labels |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        names, labels = line.strip("|").split("|", 1)
        for name in re.findall(r"`(llm_gateway_\w+)`", names):
            rows[name] = labels
    return rows


def test_every_exposed_metric_is_in_the_table_with_each_of_its_labels():
    documented = documented_metrics()
    assert set(documented) == set(exposed_metrics()), "docs/operations.md's metric table and gateway/telemetry/metrics.py differ"
    for name, labels in exposed_metrics().items():
        missing = [label for label in sorted(labels) if f"`{label}`" not in documented[name]]
        assert not missing, f"{name}: the table does not name its labels {missing}"


def test_every_environment_variable_the_gateway_reads_is_in_the_configuration_doc():
    read = set()
    for path in PRODUCT:
        read.update(re.findall(r"\bGATEWAY_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    manual = CONFIGURATION.read_text(encoding="utf-8")
    undocumented = sorted(name for name in read - set(INTERNAL_VARIABLES) if f"`{name}`" not in manual)
    assert not undocumented, f"docs/configuration.md's environment variables do not list {undocumented}"
    assert not set(INTERNAL_VARIABLES) - read, "an internal variable listed here is read by nothing any more"
