"""What a 36-tool Open WebUI body adds (section `tools`): its extra added p50 over a plain chat.

Concurrency 1, direct and gateway taking turns, first with a plain chat, then with the 26 KB body
Open WebUI 0.12.4 sends with 36 tools (tests/fixtures/openwebui/); the figure is the gateway's added
p50 with the big body minus its added p50 with the plain one.
"""

import json
import statistics

from bench.harness.client import PLAIN
from bench.harness.load import latencies_c1
from bench.harness.paths import ROOT
from bench.harness.stats import ms, percentile
from bench.harness.table import row, spread

SECTION = "tools"
TOOLS_FIXTURE = ROOT / "tests" / "fixtures" / "openwebui" / "06_chat_stream_native_builtin_tools_v0124_default_admin.json"


def run(rig) -> dict:
    print("36-tool Open WebUI body ...", flush=True)
    return measure_tools(rig.cfg, rig.direct, rig.gateway)


def measure_tools(cfg, direct, gateway) -> dict:
    tools = json.loads(TOOLS_FIXTURE.read_text())
    tools_body = json.dumps({**tools, "model": "plain", "stream": False}).encode()
    plain_body = json.dumps(PLAIN).encode()
    extra = []
    for _ in range(cfg["repeats"]):
        plain = latencies_c1([direct, gateway], plain_body, cfg["tools_requests"])
        big = latencies_c1([direct, gateway], tools_body, cfg["tools_requests"])
        added_plain = percentile(plain["gateway"], 50) - percentile(plain["direct"], 50)
        added_big = percentile(big["gateway"], 50) - percentile(big["direct"], 50)
        extra.append(ms(added_big - added_plain))
    return {"extra_p50_ms": extra, "bytes": len(tools_body)}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    extra = section["extra_p50_ms"]
    return [row("36-tool Open WebUI body: extra added p50", f"{med(extra):.2f} ms", spread(extra, lambda v: f"{v:.2f}"),
                f"{section['bytes']:,} bytes vs a plain chat")]
