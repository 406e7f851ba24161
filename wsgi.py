"""The WSGI entry point gunicorn loads in each worker (after gevent has patched the standard library)."""

from app import create_app

app = create_app()
