"""The bare floor: the least a Flask view on our stack can do to pass a chat request on.

It posts the body to the backend with a pooled requests Session and returns the answer: no
validation, no headers, no errors, no streaming. Run under the same gunicorn settings as the
gateway, its cost is the stack's; the gateway's cost above it is the price of its features.
"""

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

app = Flask(__name__)
BACKEND = os.environ["BENCH_BACKEND_URL"]
session = requests.Session()
session.trust_env = False  # as the gateway: nothing re-read from the environment per call
session.mount("http://", HTTPAdapter(pool_maxsize=2000))


@app.post("/v1/chat/completions")
def chat_completions():
    upstream = session.post(BACKEND, data=request.get_data(), headers={"Content-Type": "application/json"}, timeout=(5, 300))
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")
