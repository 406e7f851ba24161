"""Every request gets an id and a record; the record is closed when the server closes the
response (after a stream's last byte, or when its client left), counted in the metrics, and handed
to the app's `record_closed` listeners (the usage ledger: gateway/usage/web.py)."""
import logging
import uuid

from flask import Flask, g, request

from ..concurrency import request_begins, request_ends
from ..startup import setup_gateway_log
from . import metrics
from .record import RequestRecord, setup_access_log


def _close(record: RequestRecord, at_end: list, listeners: list) -> None:
    request_ends(at_end)
    if record.finish() and record.counted:
        metrics.observe(record)
        for listener in listeners:
            try:
                listener(record)
            except Exception:  # a listener's bug must not cost the server its response's close
                logging.getLogger("gateway").exception("a closed request's listener failed")


def init_app(app: Flask) -> None:
    setup_access_log()
    setup_gateway_log()  # the gateway's own warnings (gateway.startup may have set it up already)
    listeners = app.extensions.setdefault("record_closed", [])

    @app.before_request
    def open_record():
        g.request_id = uuid.uuid4().hex
        g.record = RequestRecord(g.request_id, request.method, request.path)
        g.at_end = request_begins()

    @app.after_request
    def close_record_when_done(response):
        response.headers["X-Request-Id"] = g.request_id
        record = g.record
        record.status = response.status_code
        if not response.is_streamed:
            record.mark_first_byte()
        # Runs when the server closes the response: after a stream's last byte, or its client left.
        at_end = g.at_end
        response.call_on_close(lambda: _close(record, at_end, listeners))
        return response
