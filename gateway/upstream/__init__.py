"""What we send a backend for one client request: one entry point, `call.build_call`.

- `call.py`          the body and headers of one backend call (`UpstreamCall`), built in one place
- `embeddings.py`    the same for an Embeddings request (`EmbeddingsCall`)
- `conversation.py`  the conversation fitted to the backend: system prompt, tools, content parts
- `identity.py`      who is asking: Open WebUI's forwarded user headers, or its verified JWT
- `headers.py`       header templates (`{uuid}`, `{user.email|anonymous}`) and header-safe values
- `parameters.py`    a model's `defaults` and `overrides`: checked by the config, applied by `call.py`

This `__init__` imports nothing: the gunicorn master loads `headers` and `parameters` through the
config check and must not load the rest (PyJWT, the schemas).
"""
