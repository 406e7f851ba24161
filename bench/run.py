"""`make bench`: what the gateway costs, against calling the backend directly and against a bare floor.

    python bench/run.py [--check] [--quick] [--only SECTION,...] [--table RESULTS_JSON]

What runs: the fast test backend (bench/backend.py); the gateway (wsgi:app) under gunicorn with
this repository's gunicorn.conf.py and ONE worker; the bare floor (bench/floor.py: the least a
Flask + requests view can do to relay a request or a stream) under the same settings; and this
process, the load generator (gevent, http.client). All of them share the machine's cores, and so
does anything else running on it: the header line says how many cores other processes kept busy.

What is measured, one module of bench/measure/ per section, each saying how in its docstring:
requests (requests.py), relay (relay.py), tools (tools.py), pace (capacity.py), fresh (fresh.py,
with memory.py and keepalives.py), redis (shared_limits.py), affinity (affinity.py: routing
strategies on replicas with a prefix cache), usage (usage.py: the ledger, budgets) and large
(large_answer.py). They run in that order; the table
prints their rows in the order of TABLE below. The machinery they share is in bench/harness/.

Each section is repeated; a row's figure is the median of its repeats and the spread (min to max)
is printed beside it. Rows with a target print `met` or `missed by X`; with --check the exit status
is 1 when any target is missed. Results go to bench/out/results.json (ignored by git), with every
repeat and level, and the servers' logs to bench/out/logs/ (BENCH_OUT=DIR puts both in DIR); the
README's Performance table is the record (--table FILE prints a results file's table again, with
this version's rows). The temporary folder of a run (configs, the servers' working directory) is
removed however the run ends: done, failed, Ctrl-C or SIGTERM. --quick (or BENCH_QUICK=1) runs
small sizes (one repeat, 200 streams, paced streams of 20 events) for development and smoke tests:
its verdicts are indicative only.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py`: the repository, for `bench.`

from bench.harness import rig, results as results_file  # noqa: E402
from bench.harness.paths import LOGS, shown  # noqa: E402
from bench.harness.procfs import OtherLoad  # noqa: E402
from bench.harness.servers import Servers  # noqa: E402
from bench.harness.sizes import FULL, QUICK  # noqa: E402
from bench.harness.table import print_table  # noqa: E402
from bench.harness.workdir import exit_on_stop_signals, temporary_folder  # noqa: E402
from bench.measure import affinity, capacity, fresh, large_answer, relay, requests, shared_limits, tools, usage  # noqa: E402

RUN = (requests, relay, tools, capacity, fresh, shared_limits, affinity, usage, large_answer)  # the order sections run in
TABLE = (requests, relay, capacity, fresh, shared_limits, affinity, usage, tools, large_answer)  # the order their rows are printed in
SECTIONS = tuple(section.SECTION for section in RUN)


def table(results, cfg) -> list:
    return [line for section in TABLE if section.SECTION in results for line in section.rows(results[section.SECTION], cfg)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when any target is missed")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="small sizes for development (also BENCH_QUICK=1)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the table of an earlier run's results file; measure nothing")
    args = parser.parse_args(argv)
    if args.table:
        results = results_file.read(args.table)
        rows = table(results, results["settings"])
        print_table(results, rows)
        return 1 if args.check and any(row["ok"] is False for row in rows) else 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    cfg = QUICK if args.quick else FULL

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # children inherit it
    exit_on_stop_signals()
    shutil.rmtree(LOGS, ignore_errors=True)  # the previous run's
    LOGS.mkdir(parents=True)
    models = ["plain", cfg["relay_model"], "stream-500-0", "stream-5-0", "stream-6-1000", "slow-4500", capacity.paced_model(cfg), large_answer.MODEL, large_answer.BACKGROUND]
    results = {"machine": results_file.machine(), "quick": args.quick, "settings": cfg, "sections": only}
    started = time.monotonic()
    # Leaving these `with`s, however the run ends, stops every server, then removes the folder.
    with temporary_folder() as workdir, Servers() as servers:
        bench = rig.start(cfg, models, workdir, servers)
        others = OtherLoad()
        for section in RUN:
            if section.SECTION in only:
                measured = section.run(bench)
                if measured is not None:
                    results[section.SECTION] = measured
        results["machine"]["other_processes_cores"] = round(others.cores(), 2)
    results["machine"]["seconds"] = round(time.monotonic() - started, 1)
    rows = table(results, cfg)
    results["rows"] = rows
    written = results_file.write(results)
    print_table(results, rows)
    missed = [row["figure"] for row in rows if row["ok"] is False]
    print(f"\nwritten to {shown(written)}; logs in {shown(LOGS)}")
    if missed:
        print(f"{len(missed)} target(s) missed: {'; '.join(missed)}")
    if args.check and missed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
