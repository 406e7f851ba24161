"""The bare floor: the least a Flask view on our stack can do to pass a chat request on.

`POST /v1/chat/completions` posts the body to the backend with a pooled requests Session and returns
the answer. `POST /stream` does the same for a streamed answer: it reads the backend's raw bytes as
they arrive (urllib3's `read1`, as the gateway does) and yields each read unchanged, so each chunk
goes out as soon as it came in. No validation, no headers, no errors, no SSE parsing, no
keep-alives. Run under the same gunicorn settings as the gateway, its cost is the stack's; the
gateway's cost above it is the price of its features.
"""

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

app = Flask(__name__)
BACKEND = os.environ["BENCH_BACKEND_URL"]
session = requests.Session()
session.trust_env = False  # as the gateway: nothing re-read from the environment per call
session.mount("http://", HTTPAdapter(pool_maxsize=4000))
_JSON = {"Content-Type": "application/json"}


@app.post("/v1/chat/completions")
def chat_completions():
    upstream = session.post(BACKEND, data=request.get_data(), headers=_JSON, timeout=(5, 300))
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")


@app.post("/stream")
def stream():
    upstream = session.post(BACKEND, data=request.get_data(), headers=_JSON, timeout=(5, 300), stream=True)

    def relay():
        read = upstream.raw.read1
        finished = False
        try:
            while True:
                chunk = read(65536)
                if not chunk:
                    finished = True
                    return
                yield chunk
        finally:
            if finished:
                upstream.raw.release_conn()  # read to the end: the connection goes back to the pool
            else:
                upstream.close()  # the client left mid-stream

    return Response(relay(), status=upstream.status_code, mimetype="text/event-stream")
