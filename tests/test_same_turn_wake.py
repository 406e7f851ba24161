"""concurrency.SameTurnWake: a body waiting on its stream's queue is woken in the same turn of the
event loop in which the reader, woken by the backend's bytes, put them in the queue; without it,
gevent's callback wakes the body a turn later (at a thousand streams, a second later). And every
backend request the gateway sends says which socket it went out on.

The loop's turns are counted by a prepare watcher, which libev runs once at the start of every turn.
"""

import json
import subprocess
import sys

from tests.gunicorn_server import ROOT

TURNS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import gevent, gevent.queue, gevent.socket
from gevent.hub import get_hub
from gateway.concurrency import SameTurnWake

turn = [0]
counter = get_hub().loop.prepare()
counter.start(lambda: turn.__setitem__(0, turn[0] + 1))

def handed_over(same_turn: bool) -> dict:
    backend, ours = gevent.socket.socketpair()
    queue = gevent.queue.Queue(64)
    seen = {}
    wake = SameTurnWake(queue) if same_turn else None
    if wake is not None:
        wake.watch(ours)

    def reader():
        data = ours.recv(100)  # woken by the backend's bytes, at the normal priority
        seen["put"] = turn[0]
        queue.put(data)

    def body():
        seen["waiting"] = True  # nothing switches before the get below blocks
        if wake is None:
            seen["item"] = queue.get()
        else:
            with wake.waiting():
                seen["item"] = queue.get()
        seen["woke"] = turn[0]

    greenlets = [gevent.spawn(body), gevent.spawn(reader)]
    deadline = time.monotonic() + 5
    while not (seen.get("waiting") and ours._read_event.active):  # until both wait
        assert time.monotonic() < deadline, "the body and the reader never both waited"
        gevent.sleep(0.001)
    backend.send(b"data: {}\n\n")
    gevent.joinall(greenlets, timeout=5)
    if wake is not None:
        wake.close()
    spurious = queue.qsize()
    backend.close(); ours.close()
    return {"turns_later": seen["woke"] - seen["put"], "item": seen["item"].decode(), "left": spurious}

def turns_while_unread_bytes_wait(waiting: bool) -> int:
    # Turns of the loop in 0.2 s while the watched socket holds bytes nobody reads.
    backend, ours = gevent.socket.socketpair()
    queue = gevent.queue.Queue(64)
    wake = SameTurnWake(queue)
    wake.watch(ours)
    backend.send(b"data: {}\n\n")
    before = turn[0]
    if waiting:
        with wake.waiting():
            try:
                queue.get(timeout=0.2)
            except gevent.queue.Empty:
                pass
    else:
        gevent.sleep(0.2)  # the body is busy elsewhere (writing to a slow client)
    wake.close()
    backend.close(); ours.close()
    return turn[0] - before


def watches_a_closed_socket() -> bool:
    backend, ours = gevent.socket.socketpair()
    wake = SameTurnWake(gevent.queue.Queue(64))
    wake.watch(ours)
    ours.close()  # the reader's connection closed (a failover, an error status)
    other, reused = gevent.socket.socketpair()  # the number may be another connection's now
    with wake.waiting():
        armed = wake._watcher is not None
    backend.close(); other.close(); reused.close()
    return armed


print(json.dumps({"available": SameTurnWake.available(gevent.queue.Queue(1)), "with": handed_over(True), "without": handed_over(False),
                  "busy_turns": turns_while_unread_bytes_wait(False), "waiting_turns": turns_while_unread_bytes_wait(True),
                  "closed_watched": watches_a_closed_socket()}))
"""


def test_the_body_wakes_in_the_turn_the_reader_handed_its_first_event_over():
    result = subprocess.run([sys.executable, "-c", TURNS, str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["available"] is True
    assert report["with"] == {"turns_later": 0, "item": "data: {}\n\n", "left": 0}
    assert report["without"] == {"turns_later": 1, "item": "data: {}\n\n", "left": 0}  # gevent's callback: the next turn


def test_the_watch_never_keeps_the_loop_turning_and_never_watches_a_closed_socket():
    """Bytes nobody reads would keep a watch firing at every turn: while the body is busy elsewhere
    (writing to a slow client) the watch is off, and while it waits the watch stops once the
    reader has had its turn and left them; a socket closed since it was watched is not watched
    again (its number may be another connection's)."""
    result = subprocess.run([sys.executable, "-c", TURNS, str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["busy_turns"] <= 5  # a watch left on would turn the loop thousands of times
    assert report["waiting_turns"] <= 5  # waiting, but the reader left the bytes unread: the watch stops
    assert report["closed_watched"] is False


def test_every_backend_request_says_which_socket_it_went_out_on(app_client, openai_backend, monkeypatch):
    """transport's connections call concurrency.request_sent with their socket once the request is
    out; a stream's scope passes it to its SameTurnWake (under gevent)."""
    from gateway.backends import transport

    sockets = []
    monkeypatch.setattr(transport, "request_sent", lambda sock: sockets.append(sock.fileno()))
    answer = app_client.post("/v1/chat/completions", json={"model": "gpt-stream", "stream": True,
                                                           "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200 and b"[DONE]" in answer.get_data()
    assert len(sockets) == 1 and sockets[0] > 0 and len(openai_backend.requests) == 1
