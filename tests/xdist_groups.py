"""Which tests one pytest-xdist worker runs together (`make test` runs them with --dist loadgroup).

The tests that use a server their module starts (a module-scoped fixture: a gateway, nginx, a
Redis...) form one group, run by one worker: the server starts once and the tests keep their
order. Every other test is scheduled on its own, wherever a worker is free. A test marked
`xdist_group(name)` is in that group instead.

pytest-xdist 3.8 tells its controller a test's group by renaming the test (`nodeid@group`), which
pytest 9 no longer lets it do (the rename is lost, and every test is scheduled alone). So each
worker writes the groups it collected into a folder the controller made, and the controller's
scheduler reads them when it cuts the tests into units of work.

The units are handed out longest first, by what each test took in the last run that ran it (kept
in pytest's cache folder): xdist's own order, most tests first, left the slowest single tests
(a gateway under load, ~8 s each) to the end, where one worker ran them while the others idled.
Tests this checkout has not run yet (all of them in a fresh clone, as CI runs) take their times
from the committed seed `tests/durations.json`: every test that takes 0.2 s or more, and one
figure for the rest. `make test-durations` writes it anew from the cache.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

WORKER_INPUT_KEY = "xdist_groups_folder"
SERVER_SCOPES = ("module", "class", "package")
SECONDS_KEY = "llm-gateway/test-seconds"  # in pytest's cache: {nodeid: seconds of setup, call and teardown}
SEED = Path(__file__).with_name("durations.json")
SEED_FROM = 0.2  # the seed lists the tests that took this many seconds or more

_folder: Path | None = None
_seconds: dict[str, float] | None = None  # this run's, in the controller of a --dist loadgroup run


def start(config) -> None:
    """pytest_configure: the controller of a --dist loadgroup run makes the folder; a worker takes it."""
    global _folder, _seconds
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        _folder = Path(workerinput[WORKER_INPUT_KEY]) if WORKER_INPUT_KEY in workerinput else None
    elif config.getoption("dist", "no") == "loadgroup" and config.getoption("numprocesses", None):
        _folder = Path(tempfile.mkdtemp(prefix="pytest-xdist-groups-"))
        _seconds = {}


def tell_worker(node) -> None:
    """xdist's pytest_configure_node."""
    if _folder is not None:
        node.workerinput[WORKER_INPUT_KEY] = str(_folder)


def group_of(item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    # _fixtureinfo: where pytest keeps which fixtures (and so which scopes) a test will get
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures and any(defs[-1].scope in SERVER_SCOPES for defs in fixtures.name2fixturedefs.values()):
        return item.nodeid.split("::")[0]
    return None


def write_groups(config, items) -> None:
    """pytest_collection_modifyitems, in a worker: its groups, before it reports its collection."""
    if _folder is not None and hasattr(config, "workerinput"):
        groups = {item.nodeid: group for item in items if (group := group_of(item))}
        (_folder / f"{config.workerinput['workerid']}.json").write_text(json.dumps(groups), encoding="utf-8")


def record(report) -> None:
    """pytest_runtest_logreport, in the controller: each phase of each test, as workers report it."""
    if _seconds is not None:
        _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration


def make_scheduler(config, log):
    """xdist's pytest_xdist_make_scheduler: for --dist loadgroup, a scheduler that knows the groups."""
    if _folder is None:
        return None
    from xdist.scheduler import LoadScopeScheduling

    folder = _folder
    last_seconds, typical = _expected_seconds(config)

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scheduling by scope (a unit of work per scope), where a test's scope is its
        group, or the test itself; the units that took longest last time first."""

        groups = None
        ordered = False

        def _assign_work_unit(self, node):
            if not self.ordered and last_seconds:  # the first assignment: the queue is whole
                self.ordered = True

                def expected_seconds(unit):
                    return sum(last_seconds.get(nodeid, typical) for nodeid in unit[1])

                ordered = sorted(self.workqueue.items(), key=expected_seconds, reverse=True)
                self.workqueue.clear()
                self.workqueue.update(ordered)
            super()._assign_work_unit(node)

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first asked once every worker reported its collection
                self.groups = {}
                for path in folder.glob("*.json"):
                    self.groups.update(json.loads(path.read_text(encoding="utf-8")))
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def _expected_seconds(config) -> tuple:
    """({nodeid: seconds}, the seconds of a test in neither): this checkout's last runs over the
    committed seed (a first run of a few tests leaves the others' seed times standing)."""
    cached = config.cache.get(SECONDS_KEY, {}) if config.cache is not None else {}
    try:
        seed = json.loads(SEED.read_text(encoding="utf-8"))
        seconds, others = seed["seconds"], seed["others"]
    except (OSError, ValueError, KeyError):
        seconds, others = {}, statistics.median(cached.values()) if cached else 0.0
    return {**seconds, **cached}, others


def write_seed(cache_folder: Path) -> None:
    """`make test-durations`: the seed, from the times the last full run kept in pytest's cache."""
    path = cache_folder / "v" / SECONDS_KEY
    seconds = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not seconds:
        sys.exit(f"no test times in {path}: run make test first")
    slow = {nodeid: round(value, 1) for nodeid, value in sorted(seconds.items()) if value >= SEED_FROM}
    others = [value for value in seconds.values() if value < SEED_FROM]
    seed = {"others": round(statistics.median(others), 3) if others else 0.0, "seconds": slow}
    SEED.write_text(json.dumps(seed, indent=0) + "\n", encoding="utf-8")
    print(f"{SEED.name}: {len(slow)} tests of {SEED_FROM} s or more, {sum(slow.values()):.0f} s of {sum(seconds.values()):.0f} s")


def finish(config) -> None:
    """In the controller, at the end: this run's times kept for the next (tests it did not run keep theirs)."""
    if _seconds and config.cache is not None:
        config.cache.set(SECONDS_KEY, {**config.cache.get(SECONDS_KEY, {}), **{k: round(v, 3) for k, v in _seconds.items()}})
    if _folder is not None and os.path.isdir(_folder):
        shutil.rmtree(_folder, ignore_errors=True)


if __name__ == "__main__":
    write_seed(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".pytest_cache"))
