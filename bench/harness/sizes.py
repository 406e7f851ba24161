"""How big each section runs: FULL for `make bench`, QUICK for --quick (development, smoke tests).

One dict per run, saved in the results file as `settings`, so --table reads an earlier run's sizes.
"""

FULL = {
    "repeats": 3,  # requests, tools, fresh
    "c1_requests": 300,
    "c64_rounds": 3,
    "c64_seconds": 1.0,
    "relay_repeats": 5,
    "relay_streams": 10,
    "relay_model": "stream-300-10",  # 300 events, 100 per second: 3,000 events per repeat for a steadier p99
    "cpu_streams": 40,
    "tools_requests": 200,
    "capacity_streams": 1000,
    "pace_repeats": 3,
    "pace_events": 100,
    "pace_start": 1000,
    "pace_max": 2000,
    "pace_target": 1000,
    "pace_compare": 1500,
    "pace_client": "uvloop",  # streams opened by bench/harness/paced_client.py, a process of its own
    "affinity_chats": 6,  # 20-turn chats side by side, per strategy and repeat
}
QUICK = {
    **FULL,
    "repeats": 1,
    "c1_requests": 50,
    "c64_rounds": 1,
    "relay_repeats": 1,
    "cpu_streams": 10,
    "tools_requests": 40,
    "capacity_streams": 200,
    "pace_repeats": 1,
    "pace_events": 20,
    "pace_start": 100,
    "pace_max": 200,
    "pace_target": 100,
    "pace_compare": 150,
    "affinity_chats": 3,
}
