"""Streamed answers: one `ChatStream` per streamed request (chat_stream.py), from the backend
call to the last byte, and the watch that notices a client leaving (client_watch.py)."""
