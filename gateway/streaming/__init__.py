"""Streamed answers: one `ChatStream` per streamed request (chat_stream.py), from the backend
call to the last byte; the watch that notices a client leaving (client_watch.py); and the
worker's set of open streams with its one watchdog (open_streams.py)."""
