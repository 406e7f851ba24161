"""Affinity against round robin (section `affinity`): time to first token of 20-turn chats on three
replicas that charge for the part of the prompt they have not cached.

Three bench backends (bench/backend.py, model `cached-US`: each process is one replica with its own
prefix cache, and takes US microseconds of "prefill" per character it has not seen before) behind a
gateway started for this section (one worker), with two models over the same three replicas:
`chat-affinity` (strategy affinity) and `chat-round-robin` (strategy round_robin). Chats run side
by side (6; quick: 3), 20 turns each, as Open WebUI sends them (with X-OpenWebUI-Chat-Id): a
4,000-character system prompt (a RAG or tool-heavy one), a 400-character question per turn, and the
replica's ~1,300-character answer added to the conversation before the next turn.

Time to first token: from sending a turn to its first content event. Under affinity a chat's turns
meet the replica that cached it, which prefills only the new question; under round robin a turn
meets a replica that saw the chat a few turns ago, or never. Every replica has cached the shared system prompt before the first
figure (a warm-up turn each); the strategies take turns by repeat (which goes first alternates), on
new chats each time. The figures: the mean over every turn of every chat, and the characters the replicas reported
prefilling per turn (`x_uncached`), so the row shows the mechanism beside its effect.
"""

import json
import statistics
import subprocess
import sys
import time
import uuid

import gevent

from bench.harness.client import Target, stream
from bench.harness.paths import LOGS, ROOT
from bench.harness.servers import free_port, gunicorn, wait_listening
from bench.harness.stats import ms
from bench.harness.table import row, spread, verdict_at_most

SECTION = "affinity"
REPLICAS = 3
TURNS = 20
US_PER_CHARACTER = 20  # ~80 µs per token of 4 characters: a GPU replica's prefill, roughly
SYSTEM_PROMPT = ("Answer from the company's internal documents below, citing each one you use. " * 60)[:4000]
MODELS = ("chat-affinity", "chat-round-robin")


def run(rig) -> dict:
    print(f"affinity: {rig.cfg['affinity_chats']} chats of {TURNS} turns on {REPLICAS} caching replicas, affinity and round robin ...", flush=True)
    ports = [free_port() for _ in range(REPLICAS)]
    for index, port in enumerate(ports):
        with open(LOGS / f"replica{index + 1}.log", "wb") as log:
            replica = rig.servers.add(subprocess.Popen([sys.executable, str(ROOT / "bench" / "backend.py"), str(port)], stdout=log, stderr=subprocess.STDOUT))
        wait_listening(port, replica, f"replica {index + 1}")
    config = rig.workdir / "replicas.toml"
    config.write_text(replicas_config(ports))
    port = free_port()
    gateway = rig.servers.add(gunicorn("wsgi:app", port, {"GATEWAY_CONFIG": str(config)}, rig.workdir, LOGS / "gateway-replicas.log"))
    wait_listening(port, gateway, "the gateway in front of the replicas")
    return measure_affinity(rig.cfg, Target("replicas", port, "/v1/chat/completions"))


def replicas_config(ports) -> str:
    backends = "".join(
        f'\n[backends.replica{n}]\nurl = "http://127.0.0.1:{port}/v1/chat/completions"\nstreaming = true\nmax_concurrency = 1000\n'
        for n, port in enumerate(ports, 1)
    )
    names = ", ".join(f'"replica{n}"' for n in range(1, len(ports) + 1))
    models = "".join(
        f'\n[[models]]\nid = "{model}"\nbackends = [{names}]\nstrategy = "{strategy}"\nupstream = "cached-{US_PER_CHARACTER}"\n'
        for model, strategy in zip(MODELS, ("affinity", "round_robin"))
    )
    return f"[gateway]\nheartbeat_seconds = 5\n{backends}{models}"


def question(chat: str, turn: int) -> str:
    return (f"[{chat}] Question {turn + 1}: what does the travel policy say about this case? " * 8)[:400]


def one_chat(target, model: str, chat: str) -> tuple:
    """The chat's turns, one after the other on one connection: (seconds to the first token of
    each turn, characters the replica prefilled for each turn)."""
    conn = target.connection()
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    firsts, uncached = [], []
    try:
        for turn in range(TURNS):
            messages.append({"role": "user", "content": question(chat, turn)})
            body = json.dumps({"model": model, "messages": messages, "stream": True}).encode()
            parts, first = [], []

            def on_item(kind, payload, at):
                if kind != "data" or payload == b"[DONE]":
                    return
                chunk = json.loads(payload)
                content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                if content:
                    if not first:
                        first.append(at)
                        uncached.append(chunk.get("x_uncached", 0))
                    parts.append(content)

            started = time.monotonic()
            stream(conn, target, body, on_item, headers={"X-OpenWebUI-Chat-Id": chat})
            if not first:
                raise RuntimeError(f"{model}: turn {turn + 1} of {chat} had no content")
            firsts.append(first[0] - started)
            messages.append({"role": "assistant", "content": "".join(parts)})
    finally:
        conn.close()
    return firsts, uncached


def warm_up(target) -> None:
    """Every replica caches the shared system prompt first (round robin's first turns reach each
    replica once), so neither strategy pays for it in the figures."""
    conn = target.connection()
    try:
        for n in range(REPLICAS):
            body = json.dumps({"model": "chat-round-robin", "stream": True, "messages": [
                {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"warm-up {n}"}]}).encode()
            stream(conn, target, body, lambda *item: None)
    finally:
        conn.close()


def measure_affinity(cfg, target) -> dict:
    warm_up(target)
    runs = []
    for repeat in range(cfg["repeats"]):
        run = {}
        for model in MODELS if repeat % 2 == 0 else reversed(MODELS):
            chats = [gevent.spawn(one_chat, target, model, f"{model}-{uuid.uuid4().hex[:12]}") for _ in range(cfg["affinity_chats"])]
            gevent.joinall(chats, raise_error=True)
            firsts = [seconds for chat in chats for seconds in chat.value[0]]
            uncached = [count for chat in chats for count in chat.value[1]]
            last_turns = [chat.value[0][-1] for chat in chats]
            run[model] = {"mean_ttft_ms": ms(statistics.mean(firsts)), "last_turn_ttft_ms": ms(statistics.mean(last_turns)),
                          "mean_uncached_chars": statistics.mean(uncached)}
        runs.append(run)
        a, r = run["chat-affinity"], run["chat-round-robin"]
        print(f"  repeat {repeat + 1}: mean time to first token affinity {a['mean_ttft_ms']:.0f} ms, round robin {r['mean_ttft_ms']:.0f} ms; "
              f"prefilled per turn {a['mean_uncached_chars']:,.0f} against {r['mean_uncached_chars']:,.0f} characters", flush=True)
    return {"runs": runs, "chats": cfg["affinity_chats"], "turns": TURNS, "us_per_character": US_PER_CHARACTER}


def rows(section: dict, cfg: dict) -> list:
    med = statistics.median
    runs = section["runs"]
    affinity = [x["chat-affinity"]["mean_ttft_ms"] for x in runs]
    round_robin = [x["chat-round-robin"]["mean_ttft_ms"] for x in runs]
    ratio = [a / r for a, r in zip(affinity, round_robin)]
    x = lambda v: f"{v:.2f}x"  # noqa: E731
    prefilled = lambda model: med(run[model]["mean_uncached_chars"] for run in runs)  # noqa: E731
    last = lambda model: med(run[model]["last_turn_ttft_ms"] for run in runs)  # noqa: E731
    return [row(
        f"{section['turns']}-turn chats on {REPLICAS} replicas that charge for uncached prompt: time to first token, affinity",
        f"{med(affinity):.0f} ms = {x(med(ratio))} round robin", spread(ratio, x),
        f"round_robin {med(round_robin):.0f} ms (turn {section['turns']}: {last('chat-affinity'):.0f} against {last('chat-round-robin'):.0f} ms); "
        f"prefilled per turn {prefilled('chat-affinity'):,.0f} against {prefilled('chat-round-robin'):,.0f} characters",
        "<= 0.5x round robin", verdict_at_most(med(ratio), 0.5, x),
    )]
