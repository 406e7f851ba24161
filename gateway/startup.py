"""What happens once when the gateway starts, wherever it is hosted: the start-up messages about
the config (which file, which models, and the warnings an operator must see) on the gateway's
own log, and how many workers fit the CPUs this process may use.

Both the gunicorn master (gunicorn.conf.py) and `create_app` use this module, so it imports no
Flask, requests, ssl or gevent: the master must not load those before the workers' gevent
patching (see STACK-NOTES).
"""

import logging
import math
import os
import sys

from .config import Config, ids_open_webui_rewrites, limits_warnings, unverified_backends

# The pid of the gunicorn master that has logged the start-up messages. Its workers inherit it
# and stay quiet: N workers would otherwise repeat every warning N times.
ANNOUNCED_BY = "GATEWAY_ANNOUNCED_BY"

_announced = set()  # the messages this process has logged (create_app may run more than once)


# --- start-up messages ----------------------------------------------------------------------------


def summary(config: Config) -> str:
    return f"llm-gateway config: {config.source}; models: {', '.join(config.models)}"


def warnings_for(config: Config, where: str | None = None) -> list:
    """What an operator must hear about this config at every start (`where`: the bind addresses)."""
    warnings = []
    risky = ids_open_webui_rewrites(config)
    if risky:
        warnings.append(
            f"model ids {', '.join(risky)} look like OpenAI reasoning models to Open WebUI, which then renames "
            "max_tokens and changes the system role in their requests; prefer other ids (upstream keeps the backend's name)"
        )
    for name in unverified_backends(config):
        warnings.append(
            f"backend '{name}' has verify = false: its TLS certificate is NOT checked, so anyone who can "
            "intercept the connection sees every prompt and the backend's credentials"
        )
    warnings += limits_warnings(config)  # [limits] without redis_url: per worker only
    if not config.gateway.api_keys and not config.keys:  # named keys ([keys.NAME]) turn auth on too
        warnings.append(
            "inbound authentication is off: no api_keys in the config, anyone who can reach "
            f"{where or 'the gateway'} may use the models"
        )
    return warnings


def announce(config: Config, log, where: str | None = None) -> None:
    """Logs the summary and the warnings on `log` (gunicorn's logger, or ours)."""
    log.info(summary(config))
    for warning in warnings_for(config, where):
        log.warning(warning)


def announce_for_workers(config: Config, log, where: str) -> None:
    """In the gunicorn master: logs the messages and tells the workers it forks that it did."""
    announce(config, log, where)
    os.environ[ANNOUNCED_BY] = str(os.getpid())


def announce_once(config: Config) -> None:
    """Where the app is built: the same messages, once per process and config; nothing in a
    gunicorn worker whose master has logged them already."""
    # The pid must be our parent's: a marker inherited some other way must not silence us.
    if os.environ.get(ANNOUNCED_BY) == str(os.getppid()):
        return
    messages = (summary(config), *warnings_for(config))
    if messages in _announced:
        return
    _announced.add(messages)
    announce(config, _logger())


def setup_gateway_log() -> logging.Logger:
    """The gateway's own warnings and errors, in the same shape as gunicorn's error log lines, on
    stderr under any server (without a handler Python would drop info lines)."""
    log = logging.getLogger("gateway")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def _logger() -> logging.Logger:
    setup_gateway_log()
    return logging.getLogger("gateway.startup")


# --- CPUs ---------------------------------------------------------------------------------------


def cpus_available(affinity=None, cgroup_root="/sys/fs/cgroup", self_cgroup="/proc/self/cgroup") -> int:
    """The CPUs this process may use: its CPU affinity and its cgroup CPU quota (v2, or v1 on older
    Docker and RHEL hosts), the smaller, at least 1. In a container with a CPU limit,
    os.cpu_count() is the host's count."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except AttributeError:  # not Linux
            affinity = range(os.cpu_count() or 1)
    cpus = len(affinity)
    quota = cgroup_cpu_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


# Where a cgroup v1 host mounts the cpu controller's hierarchy, under the cgroup root.
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def cgroup_cpu_quota(cgroup_root="/sys/fs/cgroup", self_cgroup="/proc/self/cgroup") -> int | None:
    """Whole CPUs the cgroup quota allows (rounded up), or None without a quota. The limit may sit
    on this process's cgroup or any parent (a systemd slice, a container): the smallest counts. In
    a container the process's cgroup is the root of what it sees."""
    v2_path, v1_path = _own_cgroups(self_cgroup)
    limits = [_cpu_max(os.path.join(d, "cpu.max")) for d in _with_parents(cgroup_root, v2_path)]
    mounted = [os.path.join(cgroup_root, m) for m in _V1_CPU_MOUNTS if os.path.isdir(os.path.join(cgroup_root, m))]
    if v1_path is not None and mounted:
        limits += [_cfs_quota(d) for d in _with_parents(mounted[0], v1_path)]
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def _own_cgroups(self_cgroup: str) -> tuple:
    """This process's cgroup v2 path ("" when there is no v2 line) and its v1 cpu controller's
    path (None when there is none), as /proc/self/cgroup lists them."""
    v2, v1 = "", None
    try:
        with open(self_cgroup, encoding="utf-8") as handle:
            for line in handle:
                number, _, rest = line.partition(":")
                controllers, _, path = rest.partition(":")
                if number == "0" and controllers == "":  # the v2 line
                    v2 = path.strip()
                elif "cpu" in controllers.split(","):
                    v1 = path.strip()
    except OSError:
        pass
    return v2, v1


def _with_parents(root: str, relative: str) -> list:
    """`relative`'s directory under `root` and each parent up to `root`, innermost first."""
    parts = [p for p in relative.split("/") if p]
    if ".." in parts:  # a cgroup outside our namespace: only the root we see is ours
        parts = []
    return [os.path.join(root, *parts[:n]) for n in range(len(parts), -1, -1)]


def _cfs_quota(directory: str) -> int | None:
    """cgroup v1: cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us, in microseconds."""
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us"), encoding="utf-8") as handle:
            quota = int(handle.read().strip())
        with open(os.path.join(directory, "cpu.cfs_period_us"), encoding="utf-8") as handle:
            period = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    return _whole_cpus(quota, period)


def _cpu_max(path: str) -> int | None:
    """cpu.max holds "max 100000" (no limit) or "<quota> <period>" in microseconds."""
    try:
        with open(path, encoding="utf-8") as handle:
            fields = handle.read().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return _whole_cpus(quota, period)


def _whole_cpus(quota: int, period: int) -> int | None:
    """A CPU quota (microseconds per period) as whole CPUs, rounded up; None for no limit."""
    return math.ceil(quota / period) if quota > 0 and period > 0 else None
