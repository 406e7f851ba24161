"""The Responses API format (`POST /v1/responses`), bridged to chat backends.

- `request_schema.py` the request: validation, errors naming the field, unknown and ignored fields
- `to_chat.py`        a Responses request → the chat request the chat path sends, and its ToolMap
- `from_chat.py`      a chat answer → the Response object, and its items
- `events.py`         the streaming translator: chunks in, Responses events out (a stream framing)
- `store.py`          stored responses (previous_response_id, item_reference, GET, DELETE)

No Flask here: the view is gateway/web/responses_api.py.
"""
