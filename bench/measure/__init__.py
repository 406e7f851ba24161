"""The measurements of `make bench`, one module per section, each saying in its docstring what it
measures and how.

Every module has SECTION (its name for --only), `run(rig)` (measures, prints a line per repeat, and
returns what goes into the results file under SECTION, or None when it cannot run here) and
`rows(section, cfg)` (its rows of the table, from those results). The order they run and the order
their rows are printed are bench/run.py's.

    requests.py        section requests: non-streaming latency at concurrency 1 and 64, requests/s, CPU
    relay.py           section relay: added delay per relayed event, against a direct twin; CPU per event
    tools.py           section tools: what a 36-tool Open WebUI body adds
    capacity.py        section pace: how many streams one worker holds at a model's pace
    fresh.py           section fresh: a fresh worker's first streamed request, then memory.py and keepalives.py
    memory.py          resident memory per open stream, 1,000 open
    keepalives.py      keep-alive lateness with 1,000 streams waiting
    shared_limits.py   section redis: what Redis-shared limits add
    large_answer.py    section large: what one huge embeddings answer costs the worker's other streams
    usage.py           section usage: what the usage ledger and a budget check add (without and with Redis)
"""
