"""Start-up wherever the app is built: the config's warnings from create_app (once per process, and
not again in a gunicorn worker whose master logged them), and the default number of workers from
the CPUs the process may use. What the gunicorn master may import stays free of Flask, requests,
ssl and gevent.

The same behaviour under real servers is in test_hosting.py.
"""

import functools
import json
import logging
import os
import runpy
import subprocess
import sys

import pytest
from flask import Flask

from app import GatewayFlask, create_app
from gateway import startup
from gateway.config import parse_config
from tests.configs import backend, gateway_toml, model
from tests.test_layout import ROOT, loaded_by

# --- walls: the gunicorn master imports these --------------------------------------------------------

MASTER_MUST_NOT_LOAD = ("flask", "werkzeug", "requests", "ssl", "gevent", "jwt", "prometheus_client")


@pytest.mark.parametrize("module", ["gateway.startup", "gateway.hosting"])
def test_modules_the_master_may_import_load_no_flask_requests_ssl_or_gevent(module):
    assert loaded_by(module, MASTER_MUST_NOT_LOAD) == []


def test_gunicorn_conf_itself_loads_no_flask_requests_ssl_or_gevent():
    probe = (
        "import runpy, sys; runpy.run_path('gunicorn.conf.py'); "
        f"print(' '.join(n for n in {list(MASTER_MUST_NOT_LOAD)!r} if n in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


# --- workers: the CPUs this process may use ------------------------------------------------------------


def cgroup_tree(tmp_path, self_cgroup="0::/\n", limits=None):
    """A fake /sys/fs/cgroup and /proc/self/cgroup: `limits` maps a cgroup path to its cpu.max."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for path, cpu_max in (limits or {}).items():
        directory = root / path.strip("/") if path.strip("/") else root
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup)
    return {"cgroup_root": str(root), "self_cgroup": str(proc)}


@pytest.mark.parametrize("affinity, cpu_max, expected", [
    ({0, 1, 2, 3}, None, 4),                 # no cgroup limit at all
    ({0, 1, 2, 3}, "max 100000", 4),         # cgroup without a quota
    ({0, 1, 2, 3}, "150000 100000", 2),      # 1.5 CPUs: two workers
    ({0, 1, 2, 3}, "50000 100000", 1),       # half a CPU: still one
    ({0, 1, 2, 3}, "800000 100000", 4),      # quota above the CPUs we may run on
    ({5}, "400000 100000", 1),               # pinned to one CPU
    (set(), None, 1),                        # never zero
    ({0, 1}, "garbage", 2),                  # a file we cannot read is no limit
    ({0, 1}, "0 100000", 2),
])
def test_cpus_available_is_affinity_and_cgroup_quota_the_smaller(tmp_path, affinity, cpu_max, expected):
    paths = cgroup_tree(tmp_path, limits={"/": cpu_max} if cpu_max else {})
    assert startup.cpus_available(affinity=affinity, **paths) == expected


def test_the_quota_may_sit_on_the_process_cgroup_or_a_parent_and_the_smallest_counts(tmp_path):
    own = cgroup_tree(tmp_path / "a", "0::/system.slice/gw.service\n", {"/system.slice/gw.service": "200000 100000"})
    assert startup.cpus_available(affinity=range(8), **own) == 2
    parent = cgroup_tree(tmp_path / "b", "0::/system.slice/gw.service\n", {
        "/system.slice": "100000 100000", "/system.slice/gw.service": "300000 100000"})
    assert startup.cpus_available(affinity=range(8), **parent) == 1
    # a v1 line whose hierarchy is not mounted here is passed over; the 0:: line counts
    v1 = cgroup_tree(tmp_path / "c", "4:cpu:/x\n0::/\n", {"/": "300000 100000", "/x": "100000 100000"})
    assert startup.cpus_available(affinity=range(8), **v1) == 3


def v1_cgroup_tree(tmp_path, self_cgroup, mount, quotas):
    """A fake cgroup v1 host: `quotas` maps a path under the cpu controller's mount to
    (cfs_quota_us, cfs_period_us)."""
    root = tmp_path / "cgroup"
    for path, (quota, period) in quotas.items():
        directory = root / mount / path.strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    (root / mount).mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "self-cgroup"
    proc.write_text(self_cgroup)
    return {"cgroup_root": str(root), "self_cgroup": str(proc)}


def test_a_cgroup_v1_quota_counts_too(tmp_path):
    """Older Docker and RHEL hosts: cpu.cfs_quota_us over cpu.cfs_period_us, on the cpu controller's
    own hierarchy, on the process's cgroup or a parent; -1 is no limit."""
    docker = "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    container = v1_cgroup_tree(tmp_path / "a", docker, "cpu,cpuacct", {"/docker/abc": (150000, 100000)})
    assert startup.cpus_available(affinity=range(8), **container) == 2
    # Inside the container its own cgroup is the root it sees (the host's path does not exist there).
    inside = v1_cgroup_tree(tmp_path / "b", docker, "cpu,cpuacct", {"/": (300000, 100000)})
    assert startup.cpus_available(affinity=range(8), **inside) == 3
    unlimited = v1_cgroup_tree(tmp_path / "c", "3:cpu:/user.slice\n", "cpu", {"/user.slice": (-1, 100000), "/": (-1, 100000)})
    assert startup.cpus_available(affinity=range(8), **unlimited) == 8
    parent = v1_cgroup_tree(tmp_path / "d", "3:cpuacct,cpu:/a/b\n", "cpuacct,cpu", {"/a": (100000, 100000), "/a/b": (400000, 100000)})
    assert startup.cpus_available(affinity=range(8), **parent) == 1


def test_missing_cgroup_files_fall_back_to_the_affinity(tmp_path):
    assert startup.cpus_available(affinity={0, 1, 2}, cgroup_root=str(tmp_path / "none"), self_cgroup=str(tmp_path / "none")) == 3


def test_gunicorn_conf_defaults_workers_to_cpus_available_and_honours_gateway_workers(monkeypatch):
    monkeypatch.delenv("GATEWAY_WORKERS", raising=False)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"] == startup.cpus_available()
    monkeypatch.setenv("GATEWAY_WORKERS", "7")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"] == 7


# --- start-up messages where the app is built ----------------------------------------------------------


def risky_config(model_id: str, **gateway):
    """No api_keys, an id Open WebUI rewrites, a backend with verify = false: three warnings."""
    return parse_config(gateway_toml(
        gateway=gateway or None,
        backends={"demo": backend("demo://echo"), "insecure": backend("https://127.0.0.1:9/v1", verify=False)},
        models=[model(model_id, "demo")],
    ), f"config-{model_id}.toml", {})


@pytest.fixture
def startup_log(monkeypatch):
    """What gateway.startup logs (level, message), whatever handlers earlier app builds set up."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("gateway.startup")
    monkeypatch.setattr(log, "handlers", [handler])
    monkeypatch.setattr(log, "propagate", False)  # "gateway" would print it to stderr too
    monkeypatch.setattr(log, "level", logging.INFO)
    monkeypatch.delenv(startup.ANNOUNCED_BY, raising=False)
    return lambda: [(r.levelname, r.getMessage()) for r in records]


def test_create_app_logs_the_config_and_its_warnings_once_per_process(startup_log):
    config = risky_config("o3-mini")
    create_app(config)
    messages = startup_log()
    assert messages[0] == ("INFO", "llm-gateway config: config-o3-mini.toml; models: o3-mini")
    warnings = [text for level, text in messages if level == "WARNING"]
    assert len(warnings) == 3
    assert "o3-mini look like OpenAI reasoning models" in warnings[0]
    assert "backend 'insecure' has verify = false" in warnings[1]
    assert "inbound authentication is off" in warnings[2]
    create_app(config)  # built again in the same process (a test, a second app): not said again
    assert startup_log() == messages


def test_a_config_without_anything_to_warn_about_logs_only_its_summary(startup_log):
    config = parse_config(gateway_toml(gateway={"api_keys": ["k-1234567"]}, backends={"demo": backend("demo://echo")},
                                       models=[model("quiet-model", "demo")]), "quiet.toml", {})
    create_app(config)
    assert startup_log() == [("INFO", "llm-gateway config: quiet.toml; models: quiet-model")]


def test_a_worker_whose_gunicorn_master_announced_stays_quiet(startup_log, monkeypatch):
    # gunicorn.conf.py's master sets the marker to its pid; its workers are its children.
    monkeypatch.setenv(startup.ANNOUNCED_BY, str(os.getppid()))
    create_app(risky_config("o1-worker"))
    assert startup_log() == []


def test_a_marker_from_another_process_does_not_silence_the_warnings(startup_log, monkeypatch):
    monkeypatch.setenv(startup.ANNOUNCED_BY, str(os.getppid() + 1))
    create_app(risky_config("o1-elsewhere"))
    assert any("o1-elsewhere look like OpenAI reasoning models" in text for _, text in startup_log())


def test_the_masters_bind_address_is_named_in_the_auth_warning():
    assert "anyone who can reach unix:/run/gw.sock may use" in startup.warnings_for(risky_config("m"), "unix:/run/gw.sock")[-1]


# --- a gevent worker's boot: the installed packages read once --------------------------------------------

PATCH_AND_REPORT = """
import json, sys
from importlib import metadata
sys.path.insert(0, sys.argv[1])
scans = []
scan = metadata.entry_points
metadata.entry_points = lambda *args, **kwargs: scans.append(1) or scan(*args, **kwargs)
if sys.argv[2] == "once":
    from gateway.gevent_plugins import look_up_plugins_once
    look_up_plugins_once()
from gevent import monkey
monkey.patch_all()
import gevent_probe_plugin
print(json.dumps({"scans": len(scans), "plugin_saw": gevent_probe_plugin.SEEN}))
"""


def test_a_booting_gevent_worker_reads_the_installed_packages_once_and_calls_the_same_plugins(tmp_path):
    """A package that registers a gevent plugin (an entry point) still hears of every step of the
    patching, in the same order, while the installed packages are read once instead of 25 times."""
    (tmp_path / "gevent_probe_plugin.py").write_text("SEEN = []\ndef seen(event):\n    SEEN.append(type(event).__name__)\n")
    info = tmp_path / "gevent_probe_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gevent-probe-plugin\nVersion: 1.0\n")
    groups = ("gevent.plugins.monkey.will_patch_all", "gevent.plugins.monkey.will_patch_module",
              "gevent.plugins.monkey.did_patch_all")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\nprobe = gevent_probe_plugin:seen\n\n" for group in groups))

    def patched(how):
        result = subprocess.run([sys.executable, "-c", PATCH_AND_REPORT, str(tmp_path), how], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    gevents_own, once = patched("as gevent does"), patched("once")
    assert gevents_own["scans"] >= 20 and once["scans"] == 1
    assert "GeventWillPatchAllEvent" in once["plugin_saw"] and "GeventDidPatchAllEvent" in once["plugin_saw"]
    assert once["plugin_saw"] == gevents_own["plugin_saw"]


def test_the_gevent_release_installed_is_one_the_plugin_lookup_was_checked_against():
    """gevent_plugins copies gevent's function: an upgrade must be checked again (else it keeps gevent's own)."""
    import gevent

    from gateway.gevent_plugins import GEVENT_RELEASES

    assert gevent.__version__ in GEVENT_RELEASES


POST_FORK = """
import runpy, sys
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.sync import SyncWorker
conf = runpy.run_path("gunicorn.conf.py")
worker_class = {"gevent": GeventWorker, "sync": SyncWorker}[sys.argv[1]]
conf["post_fork"](None, object.__new__(worker_class))
from gevent import events
print(getattr(events.notify_and_call_entry_points, "looks_up_once", False))
"""


@pytest.mark.parametrize("worker_class, once", [("gevent", "True"), ("sync", "False")])
def test_gunicorn_conf_has_a_new_gevent_worker_and_only_it_read_the_installed_packages_once(worker_class, once):
    result = subprocess.run([sys.executable, "-c", POST_FORK, worker_class], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == once


def test_the_app_tells_flask_plain_functions_and_methods_are_no_coroutines_and_leaves_the_rest_to_flask(monkeypatch):
    """GatewayFlask.ensure_sync answers from a function's code flags (Flask asks for every hook
    of every request); anything else is asked Flask's way, which is what it was before."""
    asked = []
    monkeypatch.setattr(Flask, "ensure_sync", lambda self, func: asked.append(func) or "flask's answer")
    app = GatewayFlask("probe")

    def plain():
        pass

    async def coroutine():
        pass

    class Handler:
        def method(self):
            pass

        def __call__(self):
            pass

    method = Handler().method
    assert app.ensure_sync(plain) is plain and app.ensure_sync(method) == method and asked == []
    for other in (coroutine, functools.partial(plain), Handler()):
        assert app.ensure_sync(other) == "flask's answer"
    assert len(asked) == 3
