"""What happened, for operators: one record per request, metrics, and the worker's state.

- `record.py`     one `RequestRecord` per request, written as one JSON access-log line
- `metrics.py`    prometheus_client metrics shared by all workers; the status page's numbers
- `lifecycle.py`  whether this worker is shutting down
- `request_log.py` `init_app`: every request gets its id and record, closed with the response

This `__init__` imports nothing, so the gunicorn hooks can load `lifecycle` alone.
"""
