"""The WSGI entry point gunicorn loads in each worker (after gevent has patched the standard library)."""

import sys

from app import create_app
from gateway.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # What only a worker can check (a certificate file OpenSSL rejects): one clean message, and
    # exit status 3, which makes gunicorn stop instead of restarting the worker forever.
    print(f"Error: llm-gateway cannot start: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
